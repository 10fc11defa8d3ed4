"""Sealing benchmark: sealed-v1 seal/open throughput vs raw AES-256-GCM, and peak memory.

Throughput: the same process seals and opens SIZE MiB of random data with the
sealed-v1 stream code and with bare `AESGCM.encrypt/decrypt` over the same
chunk size, interleaving repetitions and reporting medians. The input reaches
the seal writer in the write sizes pyarrow's IPC writer produces for
Fashion-MNIST-shaped batches (so re-chunking is part of what is measured), and
again in small unaligned writes that force every byte through the buffer.

Open is measured from a source that hands out the stored frames without
copying (as the raw loop decrypts stored ciphertexts), and again from a
BytesIO, whose read() adds one memcpy per chunk, to show what a copying
source costs.

Memory: for each of two sizes a fresh subprocess seals to a file and another
opens it; the peak RSS of each subprocess (VmHWM, falling back to
ru_maxrss) shows peak memory does not grow with
the dataset size. A subprocess that only imports gives the baseline.

Output: a table, then one JSON line per case.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from enclave.hazmat.chunk_aead import chunk_aad, chunk_nonce
from enclave.sealed.format import DEFAULT_CHUNK_SIZE, SealedHeader, build_encryption_context
from enclave.sealed.stream import iter_plaintext, read_header, seal_stream

MIB = 1024 * 1024
# The sealed header carries the records' schema; its bytes are opaque to this benchmark.
_SCHEMA = b"bench-schema"
THROUGHPUT_MIB = int(os.environ.get("HERMETIC_BENCH_SEAL_MIB", "256"))
MEMORY_SIZES_MIB = (64, 512)
REPS = 7
# Arrow IPC hands the writer buffers of arbitrary sizes; a prime-ish piece
# size keeps chunk boundaries from ever lining up with input boundaries.
PIECE = 256 * 1024 + 13
GOAL_RATIO = 0.70


class _NullSink:
    def __init__(self) -> None:
        self.n = 0

    def write(self, data: bytes | bytearray | memoryview, /) -> int:
        n = len(data) if isinstance(data, bytes) else memoryview(data).nbytes
        self.n += n
        return n


def _header(chunk_size: int = DEFAULT_CHUNK_SIZE) -> SealedHeader:
    ctx = build_encryption_context(
        dataset_id="bench",
        owner="bench",
        max_epsilon=3.0,
        delta=1e-5,
        record_count=0,
        schema_sha256=hashlib.sha256(_SCHEMA).hexdigest(),
        ledger="local:/var/lib/hermetic/ledger", ledger_public_key="11" * 32,
        model_owner_keys=["alias/hermetic-model-owner"],
    )
    return SealedHeader(
        key_id="bench-key", encrypted_data_key=b"\x00" * 184, encryption_context=ctx, chunk_size=chunk_size,
        schema=_SCHEMA,
    )


def _pool() -> bytes:
    # Random content; GCM speed is content-independent but compression elsewhere is not.
    return os.urandom(4 * MIB)


def _pieces(pool: bytes, total: int, piece: int | list[int]) -> Iterator[memoryview]:
    """`total` bytes from the pool, in writes of `piece` bytes (or cycling through a list of sizes)."""
    sizes = [piece] if isinstance(piece, int) else piece
    view = memoryview(pool)
    sent = 0
    offset = 0
    k = 0
    while sent < total:
        n = min(sizes[k % len(sizes)], total - sent, len(pool) - offset)
        k += 1
        yield view[offset : offset + n]
        sent += n
        offset = (offset + n) % len(pool)


def arrow_write_sizes(batch_rows: int = 8192) -> list[int]:
    """The write sizes pyarrow's IPC stream writer makes for one Fashion-MNIST-shaped batch
    (image fixed_size_list<uint8>[784], label uint8): what `hermetic seal` feeds the writer."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.ipc

    images = pa.FixedSizeListArray.from_arrays(pa.array(np.zeros(batch_rows * 784, np.uint8)), 784)
    labels = pa.array(np.zeros(batch_rows, np.uint8))
    batch = pa.RecordBatch.from_arrays([images, labels], names=["image", "label"])
    sizes: list[int] = []

    class Recorder:
        closed = False

        def write(self, data: object) -> int:
            n = memoryview(data).nbytes  # type: ignore[arg-type]  # every piece here is a buffer
            sizes.append(n)
            return n

        def tell(self) -> int:
            return sum(sizes)

        def flush(self) -> None:
            pass

    with pa.ipc.new_stream(Recorder(), batch.schema) as writer:
        before = len(sizes)
        writer.write_batch(batch)
        batch_sizes = sizes[before:]
    return [s for s in batch_sizes if s > 0]


def _split_frames(sealed: bytes) -> list[bytes]:
    """Cut a sealed file into the pieces a reader asks for: prefix, header, then length/ciphertext pairs."""
    hlen = int.from_bytes(sealed[10:14], "big")
    frames = [sealed[:14], sealed[14 : 14 + hlen]]
    pos = 14 + hlen
    while pos < len(sealed):
        n = int.from_bytes(sealed[pos : pos + 4], "big")
        frames += [sealed[pos : pos + 4], sealed[pos + 4 : pos + 4 + n]]
        pos += 4 + n
    return frames


class _FrameSource:
    """An in-memory source that hands out already separate ciphertext frames without
    copying them: the same footing as the raw-GCM loop over a list of ciphertexts.
    (A BytesIO adds one memcpy per chunk, measured separately.)"""

    def __init__(self, frames: list[bytes]) -> None:
        self._frames = frames
        self._i = 0

    def read(self, n: int) -> bytes:
        if self._i >= len(self._frames):
            return b""
        frame = self._frames[self._i]
        if len(frame) != n:  # the reader never asks for anything else here
            raise AssertionError(f"unexpected read size {n}, frame is {len(frame)}")
        self._i += 1
        return frame


def _time(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure_throughput(size_mib: int = THROUGHPUT_MIB, reps: int = REPS) -> dict[str, object]:
    total = size_mib * MIB
    chunk = DEFAULT_CHUNK_SIZE
    key = AESGCM.generate_key(bit_length=256)
    header = _header(chunk)
    pool = _pool()
    aead = AESGCM(key)
    hh = header.header_hash
    n_chunks = -(-total // chunk)
    chunk_views = [memoryview(pool)[(i * chunk) % len(pool) :][:chunk] for i in range(n_chunks)]

    arrow_sizes = arrow_write_sizes()

    def seal_ours() -> None:
        seal_stream(_pieces(pool, total, arrow_sizes), header, key, _NullSink())

    def seal_small_writes() -> None:
        seal_stream(_pieces(pool, total, PIECE), header, key, _NullSink())

    def seal_raw() -> None:
        for i, view in enumerate(chunk_views):
            final = i == n_chunks - 1
            aead.encrypt(chunk_nonce(i, final), view, chunk_aad(hh, i, final))

    sealed = io.BytesIO()
    seal_stream(_pieces(pool, total, PIECE), header, key, sealed)
    sealed_bytes = sealed.getvalue()
    del sealed
    raw_cts = [
        aead.encrypt(chunk_nonce(i, i == n_chunks - 1), v, chunk_aad(hh, i, i == n_chunks - 1))
        for i, v in enumerate(chunk_views)
    ]

    frames = _split_frames(sealed_bytes)

    def open_ours() -> None:
        stream = _FrameSource(frames)
        h = read_header(stream)
        for _ in iter_plaintext(stream, h, key):
            pass

    def open_bytesio() -> None:
        stream = io.BytesIO(sealed_bytes)
        h = read_header(stream)
        for _ in iter_plaintext(stream, h, key):
            pass

    def open_raw() -> None:
        for i, ct in enumerate(raw_cts):
            final = i == n_chunks - 1
            aead.decrypt(chunk_nonce(i, final), ct, chunk_aad(hh, i, final))

    cases = {
        "seal": seal_ours,
        "raw_seal": seal_raw,
        "seal_small_writes": seal_small_writes,
        "open": open_ours,
        "raw_open": open_raw,
        "open_bytesio": open_bytesio,
    }
    times: dict[str, list[float]] = {name: [] for name in cases}
    for fn in cases.values():  # warm-up: page in the pool and code paths
        fn()
    for _ in range(reps):
        for name, fn in cases.items():
            times[name].append(_time(fn))
    mb = total / 1e6
    med = {name: statistics.median(ts) for name, ts in times.items()}
    rate = {name: mb / t for name, t in med.items()}
    return {
        "bench": "sealing",
        "case": "throughput",
        "size_mib": size_mib,
        "chunk_size": chunk,
        "reps": reps,
        "seal_mb_s": round(rate["seal"], 1),
        "raw_gcm_seal_mb_s": round(rate["raw_seal"], 1),
        "seal_ratio_vs_raw_gcm": round(rate["seal"] / rate["raw_seal"], 3),
        "seal_small_writes_mb_s": round(rate["seal_small_writes"], 1),
        "seal_small_writes_ratio_vs_raw_gcm": round(rate["seal_small_writes"] / rate["raw_seal"], 3),
        "arrow_write_sizes": arrow_sizes,
        "open_mb_s": round(rate["open"], 1),
        "raw_gcm_open_mb_s": round(rate["raw_open"], 1),
        "open_ratio_vs_raw_gcm": round(rate["open"] / rate["raw_open"], 3),
        "open_bytesio_mb_s": round(rate["open_bytesio"], 1),
        "open_bytesio_ratio_vs_raw_gcm": round(rate["open_bytesio"] / rate["raw_open"], 3),
        "goal_ratio": GOAL_RATIO,
    }


# -- memory: one subprocess per case ------------------------------------------------


def _child(op: str, size_mib: int, path: str) -> None:
    key = bytes(range(32))  # fixed so the open child can read what the seal child wrote
    if op == "seal":
        pool = os.urandom(MIB)
        with open(path, "wb") as out:
            seal_stream(_pieces(pool, size_mib * MIB, PIECE), _header(), key, out)
    elif op == "open":
        with open(path, "rb") as stream:
            header = read_header(stream)
            total = sum(len(chunk) for chunk in iter_plaintext(stream, header, key))
        if total != size_mib * MIB:
            raise SystemExit(f"opened {total} bytes, expected {size_mib * MIB}")
    elif op != "baseline":
        raise SystemExit(f"unknown op {op}")
    print(json.dumps({"maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "hwm_kib": _vm_hwm_kib()}))


def _vm_hwm_kib() -> int | None:
    # Linux carries the parent's ru_maxrss over fork+exec as a floor; VmHWM
    # belongs to this process's own address space, so it is the honest peak.
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _run_child(op: str, size_mib: int, path: str) -> float:
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    done = subprocess.run(
        [sys.executable, "-m", "bench.sealing", "--child", op, str(size_mib), path],
        check=True,
        capture_output=True,
        text=True,
        env=env,
        cwd=root,
    )
    report = json.loads(done.stdout.strip().splitlines()[-1])
    peak = report["hwm_kib"] if report["hwm_kib"] is not None else report["maxrss_kib"]
    result: float = peak / 1024
    return result


def measure_memory(sizes_mib: tuple[int, ...] = MEMORY_SIZES_MIB) -> list[dict[str, object]]:
    results: dict[str, dict[str, float]] = {"seal": {}, "open": {}}
    with tempfile.TemporaryDirectory(prefix="hermetic-bench-") as tmp:
        baseline = _run_child("baseline", 0, "-")
        for size in sizes_mib:
            path = os.path.join(tmp, f"bench-{size}.sealed")
            results["seal"][str(size)] = round(_run_child("seal", size, path), 1)
            results["open"][str(size)] = round(_run_child("open", size, path), 1)
            os.unlink(path)
    lines = []
    for op, per_size in results.items():
        values = list(per_size.values())
        lines.append(
            {
                "bench": "sealing",
                "case": f"peak_memory_{op}",
                "sizes_mib": list(sizes_mib),
                "peak_rss_mb": per_size,
                "baseline_rss_mb": round(baseline, 1),
                "growth_mb": round(max(values) - min(values), 1),
            }
        )
    return lines


def _table(tp: dict[str, object], mem: list[dict[str, object]]) -> str:
    rows = [
        f"sealing throughput ({tp['size_mib']} MiB, {int(str(tp['chunk_size'])) // 1024} KiB chunks, "
        f"median of {tp['reps']})",
        f"  {'op':<6} {'sealed-v1 MB/s':>15} {'raw GCM MB/s':>13} {'ratio':>7}",
        f"  {'seal':<6} {tp['seal_mb_s']:>15} {tp['raw_gcm_seal_mb_s']:>13} {tp['seal_ratio_vs_raw_gcm']:>7}"
        "   (writes shaped like Arrow IPC of 8192-row image batches)",
        f"  {'seal*':<6} {tp['seal_small_writes_mb_s']:>15} {tp['raw_gcm_seal_mb_s']:>13} "
        f"{tp['seal_small_writes_ratio_vs_raw_gcm']:>7}   (* 256 KiB + 13 byte writes: every byte buffered)",
        f"  {'open':<6} {tp['open_mb_s']:>15} {tp['raw_gcm_open_mb_s']:>13} {tp['open_ratio_vs_raw_gcm']:>7}",
        f"  {'open*':<6} {tp['open_bytesio_mb_s']:>15} {tp['raw_gcm_open_mb_s']:>13} "
        f"{tp['open_bytesio_ratio_vs_raw_gcm']:>7}"
        "   (* from a BytesIO: + one memcpy per chunk)",
        f"  goal: ratio >= {GOAL_RATIO}",
        "peak RSS per subprocess (MB)",
    ]
    for line in mem:
        sizes = "  ".join(f"{k} MiB: {v}" for k, v in line["peak_rss_mb"].items())  # type: ignore[attr-defined]  # a dict in the JSON it reads
        rows.append(f"  {line['case']:<18} {sizes}  (baseline {line['baseline_rss_mb']})")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.sealing")
    parser.add_argument("--child", nargs=3, metavar=("OP", "SIZE_MIB", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        op, size, path = args.child
        _child(op, int(size), path)
        return 0
    # Memory first, while this process is still small (see _vm_hwm_kib).
    mem = measure_memory()
    tp = measure_throughput()
    print(_table(tp, mem))
    for line in (tp, *mem):
        print(json.dumps(line, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
