"""A one-run privacy audit of the DP-SGD mechanism with white-box gradient canaries.

Steinke, Nasr & Jagielski (2023), Algorithm 1, played against the code the enclave
trains with (`DpSgd`: the clipping engine and the Csprng Gaussian noise; `PoissonSampler`),
in-process on this host, on synthetic data of a job spec's shape:

- m canaries, each a gradient of norm exactly C over the trainable parameters, and each
  IN the run independently with probability 1/2. The auditor knows every canary but not
  which are IN: that secret is what the guesses are scored against. Norm-C vectors are
  already clipped gradients, so a canary is exactly a record that every step's clipping
  leaves alone. Two kinds:
  - Dirac (the default): C times one coordinate each, m distinct coordinates chosen
    where the data's clipped gradients are smallest on a public probe (the initial
    model on the audit's own public records, before membership is drawn). The data's
    gradient sum then barely moves a canary's score, so without noise the guesses are
    right and the bound reaches its ceiling.
  - Gaussian: isotropic random directions from a public seed. Each score then also
    carries the projection of the whole data sum, so only the extreme scores separate.
- each step, every IN canary joins the clipped sum with probability q, the job's
  Poisson rate, through the audit-only `DpSgd.audit_hooks`: a canary is treated exactly
  like a record under the accountant, so the audit tests the very mechanism
  ("Poisson-sampled clipped sum + Gaussian noise") whose epsilon the certificate states.
- the score of canary i is the sum over steps of <noisy update, direction i>, the
  noisy update being what DP-SGD writes into the gradients ((clipped sum + noise) / B),
  read after every step: the white-box view of every iterate. Parameter deltas are that
  update post-processed by the optimizer (for plain SGD exactly -lr times it); with
  momentum or Adam they mix steps and rescale coordinates, which can only weaken the
  attacker, so the update itself is the sharper and still honest score.
- the guesses: IN for the k/2 highest scores, OUT for the k/2 lowest, abstain on the
  rest; r right of k gives `bound.epsilon_lower_bound` at the chosen confidence.

This audits the mechanism's implementation, not a deployed enclave: the canary hook
exists only for this host-side run, and the production enclave never sets it.
"""
from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Mapping

import numpy as np
import pyarrow as pa
import torch
from torch import nn

from enclave.errors import ConfigError
from enclave.hazmat.csprng import Csprng, seed_from
from enclave.privacy.calibration import epsilon
from enclave.sealed.records import SHAPE_METADATA_KEY, declare_num_classes, format_shape
from enclave.training.clipping.reference import clip_per_sample, per_sample_gradients
from enclave.training.clipping.rules import trainable_parameters
from enclave.training.dpsgd import DpSgd
from enclave.training.jobmodel import JobModel, fixed_front, job_model_for_schema
from enclave.training.models import model_generator
from enclave.training.sampler import PoissonSampler
from enclave.training.spec import JobSpec
from enclave.training.trainer import build_optimizer, table_arrays
from parent.audit import CANARY_KINDS
from parent.audit.bound import Guesses, ceiling, epsilon_lower_bound
from parent.audit.result import EmpiricalAudit, verdict
from parent.privacy_plan import RunPlan, plan_for_records

__all__ = ["CANARY_KINDS", "Canaries", "DiracCanaries", "GaussianCanaries", "audit_spec",
           "default_canaries", "default_guesses", "guess", "quiet_coordinates", "synthetic_images"]

log = logging.getLogger(__name__)

#: Synthetic records take Fashion-MNIST's shape and classes, which every preset model takes.
IMAGE_SHAPE = (28, 28)
NUM_CLASSES = 10
#: Pixels of black border around each synthetic image.
MARGIN = 4
_BLOCK = 64
#: Public records the Dirac probe takes per-sample gradients of (at most).
_PROBE = 512


def default_guesses(canaries: int) -> int:
    """k = m / 5, even, at least 2: the extreme scores, where IN and OUT separate even when the data's
    gradients blur the middle (m = 5000, k = 1000: ceiling 5.67 at 95%; m = 1000, k = 200: 4.17)."""
    return max(2, 2 * (canaries // 10))


def default_canaries(kind: str, parameters: int) -> int:
    """5000 Dirac canaries, one parameter each, but at most the quietest quarter of a small model's
    `parameters` (and at least 2); 1000 Gaussian ones (each a dense direction)."""
    if kind == "dirac":
        return max(2, min(5000, parameters // 4))
    return 1000


class Canaries:
    """m gradient canaries over `params`: secret membership, per-step inclusion at rate q, scores.

    A kind supplies `_total(drawn)`, the flat sum of the drawn canaries, and `_project(update)`,
    each canary's inner product with a flat update.
    """

    def __init__(
        self, params: Mapping[str, torch.Tensor], count: int, *, rate: float, rng: Csprng,
    ) -> None:
        if count < 2:
            raise ConfigError(f"an audit needs at least 2 canaries, got {count}")
        self._shapes = [(name, tuple(p.shape)) for name, p in params.items()]
        self.size = sum(math.prod(shape) for _, shape in self._shapes)
        self.count = count
        self.member = rng.fork(b"audit-membership").bernoulli(count, 0.5)
        self._inclusion = rng.fork(b"audit-inclusion")
        self._rate = rate
        self.scores = torch.zeros(count, dtype=torch.float64)

    def _total(self, drawn: np.ndarray) -> torch.Tensor:
        raise NotImplementedError

    def _project(self, update: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def sampled(self) -> Mapping[str, torch.Tensor] | None:
        """This step's sum of the IN canaries drawn at rate q, by parameter name (the DpSgd hook)."""
        drawn = self.member & self._inclusion.bernoulli(self.count, self._rate)
        if not drawn.any():
            return None
        total = self._total(drawn)
        out: dict[str, torch.Tensor] = {}
        start = 0
        for name, shape in self._shapes:
            size = math.prod(shape)
            out[name] = total[start:start + size].reshape(shape)
            start += size
        return out

    def observe(self, params: Mapping[str, torch.Tensor]) -> None:
        """Add <this step's noisy update, canary i> to every canary's score."""
        grads = []
        for name, _ in self._shapes:
            grad = params[name].grad
            if grad is None:
                raise ConfigError(f"parameter {name} got no update this step")
            grads.append(grad.detach().reshape(-1).to(torch.float32))
        self.scores += self._project(torch.cat(grads)).to(torch.float64)


class DiracCanaries(Canaries):
    """Canary i is C on coordinate `coordinates[i]` of the flat parameter vector, 0 elsewhere."""

    def __init__(
        self, params: Mapping[str, torch.Tensor], coordinates: torch.Tensor, *, clip: float, rate: float,
        rng: Csprng,
    ) -> None:
        super().__init__(params, len(coordinates), rate=rate, rng=rng)
        if len(torch.unique(coordinates)) != len(coordinates) or int(coordinates.max()) >= self.size:
            raise ConfigError("Dirac canaries need distinct coordinates of the parameter vector")
        self.coordinates = coordinates.to(torch.int64)
        self._clip = clip

    def _total(self, drawn: np.ndarray) -> torch.Tensor:
        total = torch.zeros(self.size, dtype=torch.float32)
        total[self.coordinates[torch.from_numpy(drawn)]] = self._clip
        return total

    def _project(self, update: torch.Tensor) -> torch.Tensor:
        return update[self.coordinates] * self._clip


class GaussianCanaries(Canaries):
    """Canary i is an isotropic Gaussian direction scaled to norm C, from a public seed."""

    def __init__(
        self, params: Mapping[str, torch.Tensor], count: int, *, clip: float, rate: float, rng: Csprng,
        seed: int = 0,
    ) -> None:
        super().__init__(params, count, rate=rate, rng=rng)
        size = self.size
        generator = torch.Generator(device="cpu")
        generator.manual_seed(seed)
        # Isotropic Gaussian directions normalised in float64 (norm C to float32 rounding), a
        # block of rows at a time: m x D float64 at once would double a large model's footprint.
        self.directions = torch.empty((count, size), dtype=torch.float32)
        for start in range(0, count, _BLOCK):
            raw = torch.randn((min(_BLOCK, count - start), size), generator=generator, dtype=torch.float64)
            self.directions[start:start + len(raw)] = raw * (clip / raw.norm(dim=1, keepdim=True))

    def _total(self, drawn: np.ndarray) -> torch.Tensor:
        return self.directions[torch.from_numpy(drawn)].to(torch.float64).sum(dim=0).to(torch.float32)

    def _project(self, update: torch.Tensor) -> torch.Tensor:
        return self.directions @ update


def quiet_coordinates(
    net: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, count: int, *, clip: float, loss: str,
    seed: int = 0,
) -> torch.Tensor:
    """The `count` flat parameter coordinates where public records' clipped gradients are smallest.

    Activity of coordinate j: sum over probe records of |clipped gradient_j|, a bound on how far
    a step's data sum can move it. Ties (zero activity is common: inputs that are always 0) fall
    to a public random order, so the choice depends only on public data and the public seed.
    """
    params = trainable_parameters(net)
    size = sum(p.numel() for p in params.values())
    if not 2 <= count <= size:
        raise ConfigError(f"Dirac canaries need 2 to {size} canaries (one per parameter), got {count}")
    probe = min(_PROBE, len(inputs))
    # Eval mode: the probe ranks coordinates, and dropout's masks would only add noise (and need a seed).
    was_training = net.training
    net.eval()
    try:
        grads, _ = clip_per_sample(per_sample_gradients(net, inputs[:probe], labels[:probe], loss=loss), clip)
    finally:
        net.train(was_training)
    activity = torch.cat([g.abs().sum(dim=0).reshape(-1) for g in grads.values()]).to(torch.float64)
    generator = torch.Generator(device="cpu")
    generator.manual_seed(seed)
    shuffle = torch.randperm(size, generator=generator)
    order = torch.argsort(activity[shuffle], stable=True)
    return torch.sort(shuffle[order[:count]]).values


def guess(scores: np.ndarray, member: np.ndarray, guesses: int) -> int:
    """Algorithm 1's guesses: IN for the k - k//2 highest scores, OUT for the k//2 lowest; how many are right."""
    if not 0 < guesses <= len(scores):
        raise ConfigError(f"guesses must be in [1, {len(scores)}], got {guesses}")
    # Stable ordering: ties (exact equal scores) fall to canary order, which is independent of membership.
    order = np.argsort(scores, kind="stable")
    low, high = guesses // 2, guesses - guesses // 2
    right_in = int(member[order[len(scores) - high:]].sum())
    right_out = int((~member[order[:low]]).sum())
    return right_in + right_out


def synthetic_images(records: int, rng: Csprng) -> tuple[np.ndarray, torch.Tensor]:
    """Uniform uint8 28x28 images with a black margin, and uniform labels: public by construction.

    The margin is Fashion-MNIST's layout (an item in the middle, a border of zeros), and what Dirac
    canaries need: parameters that only the border feeds get (almost) no gradient from the data.
    """
    raw = np.frombuffer(rng.random_bytes(records * (math.prod(IMAGE_SHAPE) + 1)), dtype=np.uint8)
    images = raw[: records * math.prod(IMAGE_SHAPE)].reshape(records, *IMAGE_SHAPE).copy()
    images[:, :MARGIN, :] = 0
    images[:, -MARGIN:, :] = 0
    images[:, :, :MARGIN] = 0
    images[:, :, -MARGIN:] = 0
    labels = torch.from_numpy((raw[records * math.prod(IMAGE_SHAPE):] % NUM_CLASSES).astype(np.int64))
    return images.reshape(records, -1), labels


def synthetic_schema(spec: JobSpec) -> pa.Schema:
    features, label = spec.data.columns[0], spec.data.label
    field = pa.field(features, pa.list_(pa.uint8(), math.prod(IMAGE_SHAPE)),
                     metadata={SHAPE_METADATA_KEY: format_shape(IMAGE_SHAPE)})
    return declare_num_classes(pa.schema([field, pa.field(label, pa.int64())]), label, NUM_CLASSES)


def audit_spec(
    spec: JobSpec,
    *,
    records: int,
    canaries: int | None = None,
    canary_kind: str = "dirac",
    guesses: int | None = None,
    confidence: float = 0.95,
    control: bool = False,
    seed: bytes | None = None,
    canary_seed: int = 0,
    steps: int | None = None,
    data: pa.Table | None = None,
    schema: pa.Schema | None = None,
) -> EmpiricalAudit:
    """Train the spec's model with DP-SGD on synthetic data plus canaries and bound its epsilon.

    `control` trains without noise (an infinite epsilon) and must give a bound far above the
    certified epsilon; `steps` shortens the run (the certified epsilon is then that of the
    shorter run, so both sides of the comparison stay the same mechanism). `seed` (32 bytes)
    makes the run reproducible; by default it is fresh from os.urandom. `data`, a public table
    with the spec's feature and label columns, replaces the synthetic records (and sets
    `records` to its row count): the audit then runs on exactly that public data. `schema`,
    a sealed dataset's Arrow schema with its public metadata, builds the job's model and
    input layout instead of `data`'s own (a tabular, sequence or regression job needs it,
    with `data` re-encoded by it as the enclave's public sets are).
    """
    if spec.tuning is not None:
        raise ConfigError("a tuning spec's search is many runs: audit one of its candidates as a plain spec")
    if data is None and (spec.data.tabular or spec.task.regression):
        raise ConfigError("the audit's synthetic data are images of 28x28 with 10 classes: audit a tabular or "
                          "regression job on a public file of its shape (--data FILE --sealed FILE.sealed)")
    if data is not None:
        records = data.num_rows
    plan = plan_for_records(spec, records)
    if steps is not None:
        if steps < 1:
            raise ConfigError(f"steps must be positive, got {steps}")
        plan = RunPlan(records, plan.sampling_rate, steps, plan.noise_multiplier, plan.accountant, plan.delta,
                       _epsilon(plan, steps))
    if canary_kind not in CANARY_KINDS:
        raise ConfigError(f"canary kind must be one of {', '.join(CANARY_KINDS)}, got {canary_kind!r}")
    rng = Csprng(seed) if seed is not None else seed_from(os.urandom)
    if schema is None:
        schema = synthetic_schema(spec) if data is None else data.schema
    job = job_model_for_schema(spec, schema)
    model = job.build(model_generator(rng.fork(b"model-init")))
    net, inputs, labels = _records(spec, job, model, data, records, rng)
    optimizer = build_optimizer(spec, model)
    sampler = PoissonSampler(records, plan.sampling_rate, rng.fork(b"poisson-sampler"))
    engine = DpSgd(net, optimizer, max_grad_norm=spec.privacy.max_grad_norm,
                   noise_multiplier=plan.noise_multiplier, expected_batch_size=spec.privacy.expected_batch_size,
                   rng=rng.fork(b"gaussian-noise"), loss=spec.task.loss)
    params = trainable_parameters(net)
    if canaries is None:
        canaries = default_canaries(canary_kind, sum(p.numel() for p in params.values()))
    k = default_guesses(canaries) if guesses is None else guesses
    if not 0 < k <= canaries:
        raise ConfigError(f"guesses must be in [1, {canaries}], got {k}")
    cans: Canaries
    if canary_kind == "dirac":
        coordinates = quiet_coordinates(net, inputs, labels, canaries, clip=engine.max_grad_norm,
                                        loss=spec.task.loss, seed=canary_seed)
        cans = DiracCanaries(params, coordinates, clip=engine.max_grad_norm, rate=plan.sampling_rate,
                             rng=rng.fork(b"audit-canaries"))
    else:
        cans = GaussianCanaries(params, canaries, clip=engine.max_grad_norm, rate=plan.sampling_rate,
                                rng=rng.fork(b"audit-canaries"), seed=canary_seed)
    engine.audit_hooks(extra_clipped=cans.sampled, add_noise=not control)
    began = time.monotonic()
    try:
        for _ in range(plan.steps):
            batch = sampler.sample()
            index = torch.from_numpy(batch)
            engine.step(inputs[index], labels[index])
            cans.observe(params)
    finally:
        engine.close()
    seconds = time.monotonic() - began
    correct = guess(cans.scores.numpy(), cans.member, k)
    bound = epsilon_lower_bound(Guesses(canaries, k, correct), delta=plan.delta, confidence=confidence)
    result = EmpiricalAudit(
        epsilon_certified=plan.epsilon, epsilon_lower_bound=bound,
        ceiling=ceiling(canaries, k, delta=plan.delta, confidence=confidence),
        canaries=canaries, canary_kind=canary_kind, guesses=k, correct=correct, confidence=confidence, control=control,
        delta=plan.delta, accountant=plan.accountant, sampling_rate=plan.sampling_rate,
        noise_multiplier=plan.noise_multiplier, steps=plan.steps, records=records, seconds=seconds, job=spec.name,
        verdict=verdict(control=control, lower_bound=bound, certified=plan.epsilon),
    )
    log.info("audit: %d of %d guesses right; epsilon >= %.3f (certified %.3f)", correct, k,
             result.epsilon_lower_bound, result.epsilon_certified)
    return result


def _records(
    spec: JobSpec, job: JobModel, model: nn.Module, data: pa.Table | None, records: int, rng: Csprng,
) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """The module DP-SGD trains, every record's input to it, and the labels (or regression targets)."""
    if job.tabular is not None:
        assert data is not None and job.target is not None  # a tabular layout comes only from a given schema
        return model, job.tabular.assemble([data]), job.target.values(data)
    if data is None:
        rows, labels = synthetic_images(records, rng.fork(b"audit-data"))
    else:
        rows, labels = table_arrays(data, spec.data.columns[0], spec.data.label,
                                    None if job.target is not None else job.num_classes,
                                    read_labels=job.target is None)
        if job.target is not None:
            labels = job.target.values(data)
    front = fixed_front(job.format, model, job.plan())
    if front is None:
        return model, job.input.tensor(rows), labels
    return front.head, front.features(job.input, rows), labels


def _epsilon(plan: RunPlan, steps: int) -> float:
    return float(epsilon(plan.sampling_rate, plan.noise_multiplier, steps, plan.delta, plan.accountant))
