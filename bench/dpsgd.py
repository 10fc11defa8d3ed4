"""DP-SGD step benchmark: Hermetic's fast engine vs a non-private step vs Opacus 1.6.

For each registered model ("mlp", "tanh_cnn") and batch size (64, 256, 1024), and for two
workloads written in the declarative model format ("tabular": an MLP on 32 numeric
features, 2 classes, batch 1024; "transformer": token ids, vocabulary 8,000, sequence 64
with padding, 2 pre-LN encoder blocks of width 128 and 4 heads, mean pooling, 2 classes,
batch 64), one fresh
subprocess (CPU only, torch.set_num_threads(2)) builds every contender on its own copy
of the model and times one training step of each on the same fixed batch:

* ``nonprivate``: forward, mean cross-entropy, backward, SGD step;
* ``hermetic``: `DpSgd(engine="fast").step` — per-sample clipping, CSPRNG Gaussian
  noise for every parameter (floating-point-attack guarded), SGD step;
* ``opacus_hooks`` / ``opacus_functorch`` / ``opacus_ghost``: Opacus' PrivacyEngine
  with grad_sample_mode "hooks", "functorch" and "ghost" (flat clipping), as a user
  would set it up (noise from torch's generator, not secure_mode);
* ``engine``: ``hermetic`` without the noise (the ghost clipping engine
  `enclave.training.clipping.ghost.GhostClipping`, the division by the expected batch
  size and the SGD step), and ``noise``: the CSPRNG noise draw alone
  (one step's StepNoise draw for every parameter) — shown to explain where ``hermetic``'s time goes.

Repetitions are interleaved (every rep runs each contender once for a block of steps,
in rotating order) and the per-step median over reps is reported. Peak memory: one more
subprocess per (model, batch, contender) runs a few steps and reports VmHWM, so peaks
never mix; the ratio of Hermetic's peak to the non-private step's peak is reported (and,
alongside, the ratio of the growth above the post-setup RSS, which strips the shared
cost of the Python and torch runtime).

Every worker first fixes glibc's malloc thresholds (`enclave.native.heap`), as the
enclave's trainer does before training, so every contender runs on that allocator.

Opacus is a benchmark-only dependency: nothing under enclave/ or parent/ imports it.
Output: a table, goal checks, then one JSON line per (model, batch).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

MODELS = ("mlp", "tanh_cnn", "tabular", "transformer")
BATCHES = (64, 256, 1024)
#: The declarative workloads run at the one batch size their goal is set for.
WORKLOAD_BATCHES = {"tabular": (1024,), "transformer": (64,)}
TABULAR_FEATURES = 32
VOCAB, SEQUENCE = 8000, 64
#: The declarative workloads (enclave.training.modelfmt), with their per-example input shape.
WORKLOADS: dict[str, tuple[dict[str, object], tuple[int, ...]]] = {
    "tabular": ({"format": 1, "layers": [
        {"type": "linear", "out": 256}, {"type": "relu"},
        {"type": "linear", "out": 256}, {"type": "relu"},
        {"type": "linear"},
    ]}, (TABULAR_FEATURES,)),
    "transformer": ({"format": 1, "output": "logits", "graph": [
        {"name": "mask", "type": "padding_mask", "inputs": ["input"]},
        {"name": "emb", "type": "embedding", "vocab": VOCAB, "dim": 128, "padding_idx": 0, "inputs": ["input"]},
        {"name": "enc1", "type": "transformer_encoder", "dim": 128, "heads": 4, "ff_dim": 512,
         "inputs": ["emb", "mask"]},
        {"name": "enc2", "type": "transformer_encoder", "dim": 128, "heads": 4, "ff_dim": 512,
         "inputs": ["enc1", "mask"]},
        {"name": "pool", "type": "mean_pool", "inputs": ["enc2", "mask"]},
        {"name": "logits", "type": "linear", "inputs": ["pool"]},
    ]}, (SEQUENCE,)),
}
WORKLOAD_CLASSES = 2
CONTENDERS = ("nonprivate", "hermetic", "engine", "noise", "opacus_hooks", "opacus_functorch", "opacus_ghost")
OPACUS = ("opacus_hooks", "opacus_functorch", "opacus_ghost")
REPS = int(os.environ.get("HERMETIC_BENCH_DPSGD_REPS", "7"))
#: Target wall time of one timed block (steps are repeated until a block lasts this long).
BLOCK_SECONDS = 0.1
#: torch intra-op threads in every worker (the goals are set for 2); --threads overrides it.
DEFAULT_THREADS = 2
MAX_GRAD_NORM = 1.0
NOISE_MULTIPLIER = 1.0
#: Goals by model: (batch, max DP / non-private, min speed-up over Opacus' fastest or None).
GOALS: dict[str, tuple[int, float, float | None]] = {
    "mlp": (256, 1.5, 3.0), "tanh_cnn": (256, 1.3, 1.3), "tabular": (1024, 1.5, None), "transformer": (64, 1.3, 1.5),
}
GOAL_PEAK_RSS = 1.5


# -- contenders (built inside the worker subprocess) ----------------------------------------


def _threads() -> int:
    return int(os.environ.get("HERMETIC_BENCH_THREADS", DEFAULT_THREADS))


def _setup_torch() -> None:
    import torch

    from enclave.native.heap import retain_freed_memory

    retain_freed_memory()  # as the enclave's trainer does (see the module docstring)
    torch.set_num_threads(_threads())
    torch.set_num_interop_threads(1)
    torch.manual_seed(0)


def _batch(model: str, batch: int):  # type: ignore[no-untyped-def]
    import torch

    from enclave.training.models import get_spec

    g = torch.Generator().manual_seed(batch)
    if model == "tabular":
        features = torch.randn(batch, TABULAR_FEATURES, generator=g)
        return features, torch.randint(0, WORKLOAD_CLASSES, (batch,), generator=g)
    if model == "transformer":
        ids = torch.randint(1, VOCAB, (batch, SEQUENCE), generator=g)
        # Right padding of varying length, as a tokenised text batch has.
        lengths = torch.randint(SEQUENCE // 4, SEQUENCE + 1, (batch, 1), generator=g)
        ids = ids.masked_fill(torch.arange(SEQUENCE) >= lengths, 0)
        return ids, torch.randint(0, WORKLOAD_CLASSES, (batch,), generator=g)
    spec = get_spec(model)
    return torch.randn(batch, *spec.input_shape, generator=g), torch.randint(0, spec.num_classes, (batch,), generator=g)


def _fresh_model(model: str):  # type: ignore[no-untyped-def]
    import torch

    from enclave.hazmat.csprng import Csprng
    from enclave.training.models import build_model, reseed_dropout

    if model in WORKLOADS:
        from enclave.training.modelfmt.build import build_model as build_declared
        from enclave.training.modelfmt.spec import parse_model

        declared, shape = WORKLOADS[model]
        return build_declared(parse_model(declared), input_shape=shape, num_outputs=WORKLOAD_CLASSES,
                              generator=torch.Generator().manual_seed(0))
    net = build_model(model, rng=Csprng(bytes(range(32))))
    # Contenders other than DpSgd (which reseeds before every step) need a generator
    # for the model's CsprngDropout layers once; it refuses to run without one.
    reseed_dropout(net, Csprng(bytes(range(1, 33))))
    return net


def _contender(name: str, model: str, batch: int) -> Callable[[], None]:
    """A closure running one training step of `name` on a fixed batch."""
    import torch
    import torch.nn.functional as F

    x, y = _batch(model, batch)
    net = _fresh_model(model)
    lr = 0.01
    if name == "nonprivate":
        opt = torch.optim.SGD(net.parameters(), lr=lr)

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(net(x), y).backward()  # type: ignore[no-untyped-call]  # torch leaves backward untyped
            opt.step()

        return step
    if name == "engine":
        from enclave.training.clipping.ghost import GhostClipping

        clip = GhostClipping(net, max_grad_norm=MAX_GRAD_NORM)
        opt = torch.optim.SGD(net.parameters(), lr=lr)
        named = [(k, p) for k, p in net.named_parameters()]

        def engine_step() -> None:
            sums = clip.clipped_sum(x, y).sums
            for k, p in named:
                p.grad = sums[k].div_(float(batch))
            opt.step()

        return engine_step
    if name in ("hermetic", "noise"):
        from enclave.hazmat.csprng import Csprng
        from enclave.training.dpsgd import DpSgd

        rng = Csprng(os.urandom(32))
        if name == "noise":
            from enclave.training.noise import StepNoise

            # DpSgd's own draw (one step's noise for every parameter), in line.
            specs = [(p.shape, p.dtype) for p in net.parameters()]
            noise = StepNoise(rng, specs, NOISE_MULTIPLIER * MAX_GRAD_NORM, ahead=False)

            def draw() -> None:
                noise.take()

            return draw
        dp = DpSgd(
            net,
            torch.optim.SGD(net.parameters(), lr=lr),
            max_grad_norm=MAX_GRAD_NORM,
            noise_multiplier=NOISE_MULTIPLIER,
            expected_batch_size=float(batch),
            rng=rng,
            engine="fast",
        )

        def dp_step() -> None:
            dp.step(x, y)

        return dp_step
    if name in OPACUS:
        return _opacus_step(name.removeprefix("opacus_"), net, x, y, batch, lr)
    raise ValueError(f"unknown contender {name}")


def _opacus_step(mode: str, net, x, y, batch: int, lr: float) -> Callable[[], None]:  # type: ignore[no-untyped-def]
    import warnings

    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    warnings.filterwarnings("ignore")
    from opacus import PrivacyEngine

    # The loader only tells Opacus the expected batch size (dataset / batches); steps
    # use the fixed batch directly so every contender sees the same data.
    loader = DataLoader(TensorDataset(x.repeat(4, *([1] * (x.dim() - 1))), y.repeat(4)), batch_size=batch)
    engine = PrivacyEngine(accountant="rdp")
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    common = dict(
        module=net, optimizer=opt, data_loader=loader, noise_multiplier=NOISE_MULTIPLIER,
        max_grad_norm=MAX_GRAD_NORM, poisson_sampling=False, grad_sample_mode=mode,
    )
    if mode == "ghost":
        model, optimizer, criterion, _ = engine.make_private(criterion=nn.CrossEntropyLoss(), **common)
    else:
        model, optimizer, _ = engine.make_private(**common)
        criterion = nn.CrossEntropyLoss()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        criterion(model(x), y).backward()
        optimizer.step()

    return step


# -- workers ------------------------------------------------------------------------------


def _vm_kib(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _worker_time(model: str, batch: int, reps: int, contenders: list[str]) -> dict[str, object]:
    _setup_torch()
    steps = {name: _contender(name, model, batch) for name in contenders}
    blocks: dict[str, int] = {}
    for name, step in steps.items():
        for _ in range(2):  # warm-up: allocator, first-call paths, the engine's one-time check
            step()
        began = time.perf_counter()
        step()
        one = time.perf_counter() - began
        blocks[name] = max(1, min(50, round(BLOCK_SECONDS / max(one, 1e-6))))
    samples: dict[str, list[float]] = {name: [] for name in steps}
    order = list(steps)
    for rep in range(reps):
        shift = rep % len(order)
        for name in order[shift:] + order[:shift]:
            step, k = steps[name], blocks[name]
            began = time.perf_counter()
            for _ in range(k):
                step()
            samples[name].append((time.perf_counter() - began) / k * 1e3)
    return {name: statistics.median(values) for name, values in samples.items()}


def _worker_memory(model: str, batch: int, contender: str) -> dict[str, object]:
    _setup_torch()
    step = _contender(contender, model, batch)
    setup = _vm_kib("VmRSS")
    for _ in range(4):
        step()
    return {"setup_kib": setup, "peak_kib": _vm_kib("VmHWM")}


def _spawn(args: list[str]) -> dict[str, object]:
    threads = str(_threads())
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS=threads, HERMETIC_BENCH_THREADS=threads)
    done = subprocess.run(
        [sys.executable, "-m", "bench.dpsgd", *args], capture_output=True, text=True, env=env, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"bench worker {args} failed:\n{done.stderr[-4000:]}")
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# -- the report ---------------------------------------------------------------------------


def measure(model: str, batch: int, reps: int) -> dict[str, object]:
    times = _spawn(["--worker", "time", "--model", model, "--batch", str(batch), "--reps", str(reps)])
    mem = {
        name: _spawn(["--worker", "memory", "--model", model, "--batch", str(batch), "--contender", name])
        for name in ("nonprivate", "hermetic")
    }
    best_mode = min(OPACUS, key=lambda name: float(times[name]))  # type: ignore[arg-type]
    nonprivate, hermetic, best = (float(times[k]) for k in ("nonprivate", "hermetic", best_mode))  # type: ignore[arg-type]
    np_peak, dp_peak = (int(mem[k]["peak_kib"]) for k in ("nonprivate", "hermetic"))  # type: ignore[call-overload]
    np_growth = np_peak - int(mem["nonprivate"]["setup_kib"])  # type: ignore[call-overload]
    dp_growth = dp_peak - int(mem["hermetic"]["setup_kib"])  # type: ignore[call-overload]
    return {
        "model": model,
        "batch": batch,
        "nonprivate_ms": round(nonprivate, 3),
        "hermetic_ms": round(hermetic, 3),
        "opacus_best_ms": round(best, 3),
        "opacus_best_mode": best_mode.removeprefix("opacus_"),
        "ratio_vs_nonprivate": round(hermetic / nonprivate, 3),
        "speedup_vs_opacus": round(best / hermetic, 3),
        "peak_rss_ratio_vs_nonprivate": round(dp_peak / np_peak, 3),
        "opacus_ms": {k.removeprefix("opacus_"): round(float(times[k]), 3) for k in OPACUS},  # type: ignore[arg-type]
        "noise_ms": round(float(times["noise"]), 3),  # type: ignore[arg-type]
        "engine_ms": round(float(times["engine"]), 3),  # type: ignore[arg-type]
        "engine_ratio_vs_nonprivate": round(float(times["engine"]) / nonprivate, 3),  # type: ignore[arg-type]
        "nonprivate_peak_mib": round(np_peak / 1024, 1),
        "hermetic_peak_mib": round(dp_peak / 1024, 1),
        "peak_growth_ratio_vs_nonprivate": round(dp_growth / max(np_growth, 1), 3),
    }


def _table(rows: list[dict[str, object]], loads: tuple[float, float]) -> str:
    head = (
        f"{'model':<9}{'batch':>6}{'nonpriv':>9}{'hermetic':>10}{'engine':>8}{'noise':>8}{'ratio':>7}"
        f"{'hooks':>9}{'functorch':>10}{'ghost':>8}{'speedup':>9}{'peakMiB np/dp':>15}{'rss':>6}"
    )
    lines = [
        f"DP-SGD step, ms (median of interleaved reps; CPU, {_threads()} threads; 1-min load average "
        f"{loads[0]:.1f} at start, {loads[1]:.1f} at end). hermetic = engine + noise;",
        "ratio = hermetic / nonpriv; speedup = fastest Opacus mode / hermetic; rss = peak RSS hermetic / nonpriv",
        head,
        "-" * len(head),
    ]
    for r in rows:
        o = r["opacus_ms"]
        assert isinstance(o, dict)
        lines.append(
            f"{r['model']:<9}{r['batch']:>6}{r['nonprivate_ms']:>9.2f}{r['hermetic_ms']:>10.2f}{r['engine_ms']:>8.2f}"
            f"{r['noise_ms']:>8.2f}"
            f"{r['ratio_vs_nonprivate']:>7.2f}{o['hooks']:>9.2f}{o['functorch']:>10.2f}{o['ghost']:>8.2f}"
            f"{r['speedup_vs_opacus']:>8.2f}x{r['nonprivate_peak_mib']:>8.0f}/{r['hermetic_peak_mib']:<6.0f}"
            f"{r['peak_rss_ratio_vs_nonprivate']:>6.2f}"
        )
    return "\n".join(lines)


def _goals(rows: list[dict[str, object]]) -> list[str]:
    out = []
    for r in rows:
        model = str(r["model"])
        if model in GOALS and r["batch"] == GOALS[model][0]:
            batch, max_ratio, min_speedup = GOALS[model]
            ratio, speedup = float(r["ratio_vs_nonprivate"]), float(r["speedup_vs_opacus"])  # type: ignore[arg-type]
            line = (f"goal {model}@{batch}: DP/non-private {ratio:.2f} (<= {max_ratio}: "
                    f"{'met' if ratio <= max_ratio else 'MISSED'}), speed-up over Opacus {speedup:.2f}x")
            if min_speedup is not None:
                line += f" (>= {min_speedup}: {'met' if speedup >= min_speedup else 'MISSED'})"
            out.append(line)
    for r in rows:
        rss = float(r["peak_rss_ratio_vs_nonprivate"])  # type: ignore[arg-type]
        if rss > GOAL_PEAK_RSS:
            out.append(f"goal peak memory {r['model']}@{r['batch']}: {rss:.2f}x (<= {GOAL_PEAK_RSS}: MISSED)")
    if not any("peak memory" in line for line in out):
        out.append(f"goal peak memory: every case <= {GOAL_PEAK_RSS}x the non-private peak: met")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.dpsgd")
    parser.add_argument("--worker", choices=("time", "memory"), help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--contender", help=argparse.SUPPRESS)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--batches", nargs="+", type=int, default=None,
                        help=f"batch sizes (default {BATCHES}; the declarative workloads: their own)")
    parser.add_argument("--reps", type=int, default=REPS)
    parser.add_argument("--threads", type=int, help=f"torch threads per worker (default {DEFAULT_THREADS})")
    args = parser.parse_args(argv)
    if args.threads is not None:
        os.environ["HERMETIC_BENCH_THREADS"] = str(args.threads)
    if args.worker == "time":
        print(json.dumps(_worker_time(args.model, args.batch, args.reps, list(CONTENDERS))))
        return 0
    if args.worker == "memory":
        print(json.dumps(_worker_memory(args.model, args.batch, args.contender)))
        return 0
    began = time.monotonic()
    load_start = os.getloadavg()[0]
    rows = []
    for model in args.models:
        for batch in args.batches or WORKLOAD_BATCHES.get(model, BATCHES):
            rows.append(measure(model, batch, args.reps))
            print(f"  measured {model} at batch {batch} ({time.monotonic() - began:.0f}s)", file=sys.stderr, flush=True)
    print(_table(rows, (load_start, os.getloadavg()[0])))
    for line in _goals(rows):
        print(line)
    for row in rows:
        print(json.dumps(row, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
