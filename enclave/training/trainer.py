"""The DP-SGD training loop inside the enclave, from opened data to certificate.

What leaves, all through the egress gate: progress (step counts and the epsilon
spent, which depend only on q, sigma, steps and delta), accuracy on PUBLIC data,
checkpoints sealed under the model owner's KMS key, and the privacy certificate.
Training loss and accuracy on private data never leave.
"""
from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import torch
from torch import nn

from enclave.certificate.body import (
    CertificateBody,
    DatasetRecord,
    PublicDatasetRecord,
    ReleasedMetric,
    ResumedFrom,
)
from enclave.certificate.issue import issue_certificate
from enclave.datasets import OpenedDataset
from enclave.egress import EgressGate
from enclave.errors import DatasetError, RuntimeFailure
from enclave.hazmat.csprng import seed_from
from enclave.native.heap import retain_freed_memory
from enclave.nsm.interface import Nsm
from enclave.privacy.accountants import NAMES as ACCOUNTANT_NAMES
from enclave.privacy.ledger import PrivacyLedger, compose_epsilon
from enclave.training.checkpoint import (
    CheckpointAuthenticator,
    CheckpointState,
    SamplerState,
    model_sha256,
    seal_checkpoint,
)
from enclave.training.dpsgd import DpSgd
from enclave.training.jobmodel import FixedFront, JobModel, ModelInput, fixed_front, job_model
from enclave.training.models import model_generator
from enclave.training.plan import BudgetExceeded, PlannedRun
from enclave.training.sampler import PoissonSampler
from enclave.training.spec import JobSpec
from enclave.transport.messages import (
    CertificateIssued,
    CheckpointBegin,
    CheckpointData,
    CheckpointEnd,
    MetricRelease,
    TrainingProgress,
)

log = logging.getLogger(__name__)

CHECKPOINT_FRAME = 512 * 1024
PROGRESS_UPDATES = 50
PCR_INDICES = (0, 1, 2)
EVAL_BATCH = 2048


class ResumeMismatch(RuntimeFailure):
    """A checkpoint does not continue this job's plan."""


@dataclass(frozen=True)
class PublicTable:
    name: str
    table: pa.Table
    sha256: str


@dataclass(frozen=True)
class TrainingDataset:
    """One opened sealed dataset and what its budget ledger says about this job."""

    opened: OpenedDataset
    sealed_sha256: str
    # The dataset's cumulative epsilon per its budget ledger, this job's reservation included.
    dataset_epsilon: float


@dataclass(frozen=True)
class TrainingInputs:
    job_id: str
    spec: JobSpec
    plan: PlannedRun
    # The sealed datasets in the spec's order; the job trains on the union of their records.
    train: tuple[TrainingDataset, ...]
    public: Mapping[str, PublicTable]
    resume: CheckpointState | None
    nsm: Nsm
    generate_data_key: Callable[[str, dict[str, str]], tuple[bytes, bytes]]
    # Tags every checkpoint so that only this image, job and datasets can resume it.
    checkpoint_auth: CheckpointAuthenticator
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    # SHA-256 (hex) of the sealed checkpoint file `resume` came from; the certificate names it.
    resume_sealed_sha256: str = ""


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class UnusableRecords(DatasetError):
    """Records the trainer cannot use (a fixed message: it must not depend on the values)."""


def table_arrays(
    table: pa.Table, features: str, label: str, num_classes: int | None = None
) -> tuple[np.ndarray, torch.Tensor]:
    """uint8 feature rows [N, F] and int64 labels from an Arrow table.

    With `num_classes`, every label must lie in [0, num_classes). The sealer checked
    that and AES-GCM proves the file is the sealer's, so only a defect gets here; the
    check still keeps a label from reaching torch's indexing, whose error would quote it.
    """
    try:
        column = table.column(features).combine_chunks()
        labels = table.column(label).combine_chunks()
    except KeyError as err:
        raise DatasetError(f"dataset lacks column {err}") from None
    if not pa.types.is_fixed_size_list(column.type) or column.type.value_type != pa.uint8():
        raise DatasetError(f"column {features!r} must be fixed_size_list<uint8>, got {column.type}")
    if not pa.types.is_integer(labels.type):
        raise DatasetError(f"column {label!r} must hold integers, got {labels.type}")
    # Types are public (the header's schema); null counts and values are not: fixed texts.
    if column.null_count or column.values.null_count or labels.null_count:
        raise UnusableRecords("a record has a missing feature or label")
    rows = column.flatten().to_numpy(zero_copy_only=False).reshape(len(column), column.type.list_size)
    values = labels.to_numpy(zero_copy_only=False)
    if num_classes is not None and len(values) and (values.min() < 0 or values.max() >= num_classes):
        raise UnusableRecords("a label lies outside the declared class range")
    y = torch.from_numpy(values.astype(np.int64))
    return rows, y


def union_arrays(
    tables: Sequence[pa.Table], features: str, label: str, num_classes: int | None = None
) -> tuple[np.ndarray, torch.Tensor]:
    """`table_arrays` over the records of every table, in order (the job check made their fields equal)."""
    parts = [table_arrays(t, features, label, num_classes) for t in tables]
    if len(parts) == 1:
        return parts[0]
    return np.concatenate([rows for rows, _ in parts]), torch.cat([labels for _, labels in parts])


def accuracy(model: nn.Module, model_input: ModelInput, rows: np.ndarray, labels: torch.Tensor) -> float:
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(rows), EVAL_BATCH):
            x = model_input.tensor(rows[start : start + EVAL_BATCH])
            correct += int((model(x).argmax(dim=1) == labels[start : start + EVAL_BATCH]).sum())
    model.train()
    return correct / max(1, len(rows))


def features_accuracy(head: nn.Module, features: torch.Tensor, labels: torch.Tensor) -> float:
    """`accuracy` for a model whose fixed front end was already applied (FixedFront)."""
    head.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(features), EVAL_BATCH):
            logits = head(features[start : start + EVAL_BATCH])
            correct += int((logits.argmax(dim=1) == labels[start : start + EVAL_BATCH]).sum())
    head.train()
    return correct / max(1, len(features))


def build_optimizer(spec: JobSpec, model: nn.Module) -> torch.optim.Optimizer:
    opt = spec.optimizer
    params = [p for p in model.parameters() if p.requires_grad]
    if opt.name == "adam":
        return torch.optim.Adam(params, lr=opt.lr, weight_decay=opt.weight_decay)
    return torch.optim.SGD(params, lr=opt.lr, momentum=opt.momentum or 0.0, weight_decay=opt.weight_decay)


class Trainer:
    def __init__(self, inputs: TrainingInputs, gate: EgressGate) -> None:
        self._in = inputs
        self._gate = gate
        self._metrics: list[ReleasedMetric] = []
        self._transform: FixedFront | None = None
        self._job_model: JobModel | None = None

    def run(self) -> str:
        inp, spec, plan = self._in, self._in.spec, self._in.plan
        started = inp.clock()
        # Each step frees and reallocates the same temporaries; keep them mapped.
        retain_freed_memory()
        rng = seed_from(inp.nsm.get_random)
        # The job check passed on every dataset and they share one schema: the first gives the layout.
        job = self._job_model = job_model(spec, inp.train[0].opened.header)
        model = job.build(model_generator(rng.fork(b"model-init")))
        # A model with a fixed front end (no parameters, one record at a time,
        # data-independent) has it applied once to each table instead of every step;
        # DP-SGD then runs on the head, which holds all of the model's parameters.
        self._transform = fixed_front(job.format, model, job.plan())
        optimizer = build_optimizer(spec, model)
        ledger = PrivacyLedger(plan.delta, plan.accountant)
        start = 0
        if inp.resume is not None:
            start = self._restore(model, optimizer, inp.resume)
            ledger = PrivacyLedger.from_dict(inp.resume.ledger)
            self._check_resumed_ledger(ledger, start)
        rows, labels = union_arrays([d.opened.table for d in inp.train], spec.data.features, spec.data.label,
                                    job.num_classes)
        sampler = PoissonSampler(len(rows), plan.sampling_rate, rng.fork(b"poisson-sampler"))
        net, inputs = self._trainable_inputs(model, rows)
        engine = DpSgd(
            net,
            optimizer,
            max_grad_norm=spec.privacy.max_grad_norm,
            noise_multiplier=plan.noise_multiplier,
            expected_batch_size=spec.privacy.expected_batch_size,
            rng=rng.fork(b"gaussian-noise"),
        )
        # Never take a step that would exceed the data owner's budget.
        last = min(plan.steps, plan.max_steps_within_budget)
        if start > last:
            raise BudgetExceeded(f"checkpoint is at step {start}, beyond the {last} steps the budget allows")
        public = self._public_eval_set()
        progress_every = max(1, plan.steps // PROGRESS_UPDATES)
        eval_every = spec.eval.every_steps
        ckpt_every = spec.checkpoint.every_steps
        self._gate.send(TrainingProgress(step=start, total_steps=plan.steps, epsilon=float(ledger.epsilon())))
        began = time.monotonic()
        try:
            for step in range(start + 1, last + 1):
                batch = sampler.sample()
                engine.step(inputs(batch), labels[batch])
                ledger.record(plan.sampling_rate, plan.noise_multiplier)
                if step % progress_every == 0 and step < last:
                    spent = float(ledger.epsilon())
                    self._gate.send(TrainingProgress(step=step, total_steps=plan.steps, epsilon=spent))
                if public is not None and eval_every and step % eval_every == 0 and step < last:
                    self._release_accuracy(model, public, step)
                if ckpt_every and step % ckpt_every == 0 and step < last:
                    self._emit_checkpoint(model, optimizer, ledger, step, final=False)
        finally:
            engine.close()  # stops the worker drawing the next step's noise
        log.info("trained %d steps in %.1fs", last - start, time.monotonic() - began)
        eps = {name: float(ledger.epsilon(name)) for name in ACCOUNTANT_NAMES}
        self._gate.send(TrainingProgress(step=last, total_steps=plan.steps, epsilon=eps[plan.accountant]))
        if public is not None:
            self._release_accuracy(model, public, last)
        checkpoint = self._emit_checkpoint(model, optimizer, ledger, last, final=True)
        body = CertificateBody(
            job_id=inp.job_id,
            spec_sha256=spec.sha256,
            model_spec_sha256=job.format.sha256,
            pcrs={i: inp.nsm.describe_pcr(i).value.hex() for i in PCR_INDICES},
            datasets=tuple(
                DatasetRecord(
                    dataset_id=d.opened.dataset_id,
                    sealed_sha256=d.sealed_sha256,
                    key_id=d.opened.header.key_id,
                    encryption_context=dict(d.opened.header.encryption_context),
                    records=d.opened.records,
                    # The job's whole ledger at this dataset's delta: each owner's cap is at its own.
                    epsilon=compose_epsilon(ledger.segments, d.opened.header.delta, plan.accountant),
                    dataset_epsilon=d.dataset_epsilon,
                )
                for d in inp.train
            ),
            public_datasets=tuple(
                PublicDatasetRecord(name=p.name, sha256=p.sha256, records=p.table.num_rows)
                for p in inp.public.values()
            ),
            sampling_rate=plan.sampling_rate,
            noise_multiplier=plan.noise_multiplier,
            max_grad_norm=spec.privacy.max_grad_norm,
            steps=ledger.steps,
            delta=plan.delta,
            epsilon=eps,
            accountant=plan.accountant,
            ledger=tuple(s.to_dict() for s in ledger.segments),
            model_sha256=model_sha256(model.state_dict()),
            checkpoint_sha256=hashlib.sha256(checkpoint).hexdigest(),
            metrics=tuple(self._metrics),
            started_at=_rfc3339(started),
            finished_at=_rfc3339(inp.clock()),
            budget={"max_epsilon": plan.max_epsilon, "delta": plan.budget_delta},
            resumed_from=(
                None if inp.resume is None
                else ResumedFrom(sealed_sha256=inp.resume_sealed_sha256, step=inp.resume.step)
            ),
        )
        self._gate.send(CertificateIssued(data=issue_certificate(body, inp.nsm)))
        summary = f"{ledger.steps} steps, epsilon {eps[plan.accountant]:.4f} ({plan.accountant})"
        if self._metrics:
            summary += f", public accuracy {self._metrics[-1].value:.4f}"
        return summary

    # ------------------------------------------------------------------ pieces

    @property
    def _job(self) -> JobModel:
        assert self._job_model is not None  # set first thing in run()
        return self._job_model

    def _trainable_inputs(
        self, model: nn.Module, rows: np.ndarray
    ) -> tuple[nn.Module, Callable[[np.ndarray], torch.Tensor]]:
        """The module DP-SGD trains and a batch -> its inputs function."""
        model_input = self._job.input
        if self._transform is None:
            return model, lambda batch: model_input.tensor(rows[batch])
        began = time.monotonic()
        features = self._transform.features(model_input, rows)
        log.info("computed fixed front-end features of %d records in %.1fs", len(rows), time.monotonic() - began)
        return self._transform.head, lambda batch: features[torch.from_numpy(batch)]

    def _restore(self, model: nn.Module, optimizer: torch.optim.Optimizer, state: CheckpointState) -> int:
        try:
            model.load_state_dict(dict(state.model_state))
            optimizer.load_state_dict(dict(state.optimizer_state))
        except (RuntimeError, KeyError, ValueError) as err:
            raise ResumeMismatch(f"checkpoint does not fit the model: {str(err).splitlines()[0]}") from None
        self._metrics = [
            ReleasedMetric(
                name=str(m["name"]), value=float(m["value"]), kind=str(m["kind"]),
                step=int(m["step"]), epsilon_cost=float(m["epsilon_cost"]),
            )
            for m in state.metrics
        ]
        log.info("resumed at step %d", state.step)
        return state.step

    def _check_resumed_ledger(self, ledger: PrivacyLedger, start: int) -> None:
        plan = self._in.plan
        if ledger.steps != start:
            raise ResumeMismatch(f"checkpoint ledger holds {ledger.steps} steps, its state says {start}")
        if ledger.delta != plan.delta or ledger.accountant != plan.accountant:
            raise ResumeMismatch("checkpoint ledger was kept with another delta or accountant")
        for seg in ledger.segments:
            if seg.q != plan.sampling_rate or seg.sigma != plan.noise_multiplier:
                raise ResumeMismatch("checkpoint ledger used another sampling rate or noise multiplier")

    def _public_eval_set(self) -> tuple[PublicTable, np.ndarray | torch.Tensor, torch.Tensor] | None:
        name = self._in.spec.eval.public
        if name is None:
            return None
        table = self._in.public.get(name)
        if table is None:
            raise DatasetError(f"the job spec evaluates on public dataset {name!r}, which was not sent")
        spec = self._in.spec
        rows, labels = table_arrays(table.table, spec.data.features, spec.data.label, self._job.num_classes)
        if self._transform is not None:
            return table, self._transform.features(self._job.input, rows), labels
        return table, rows, labels

    def _release_accuracy(
        self, model: nn.Module, public: tuple[PublicTable, np.ndarray | torch.Tensor, torch.Tensor], step: int
    ) -> None:
        table, rows, labels = public
        if isinstance(rows, torch.Tensor):
            assert self._transform is not None
            value = features_accuracy(self._transform.head, rows, labels)
        else:
            value = accuracy(model, self._job.input, rows, labels)
        metric = ReleasedMetric(
            name=f"accuracy/{table.name}", value=value, kind="public_eval", step=step, epsilon_cost=0.0
        )
        self._metrics.append(metric)
        self._gate.send(MetricRelease(name=metric.name, value=value, kind=metric.kind, step=step))

    def _emit_checkpoint(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        ledger: PrivacyLedger,
        step: int,
        *,
        final: bool,
    ) -> bytes:
        inp = self._in
        state = CheckpointState(
            job_id=inp.job_id,
            spec_sha256=inp.spec.sha256,
            step=step,
            model_state=model.state_dict(),
            optimizer_state=optimizer.state_dict(),
            ledger=ledger.to_dict(),
            sampler=SamplerState(steps=step, q=inp.plan.sampling_rate),
            metrics=tuple(
                {"name": m.name, "value": m.value, "kind": m.kind, "step": m.step, "epsilon_cost": m.epsilon_cost}
                for m in self._metrics
            ),
        )
        data = seal_checkpoint(state, key_id=inp.spec.checkpoint.key_id, generate_data_key=inp.generate_data_key,
                               authenticator=inp.checkpoint_auth)
        self._gate.send(CheckpointBegin(step=step, size=len(data), final=final))
        for offset in range(0, len(data), CHECKPOINT_FRAME):
            self._gate.send(CheckpointData(data=data[offset : offset + CHECKPOINT_FRAME]))
        self._gate.send(CheckpointEnd(step=step, sha256=hashlib.sha256(data).digest()))
        return data
