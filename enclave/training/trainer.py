"""The DP-SGD training loop inside the enclave, from opened data to certificate.

What leaves, all through the egress gate: progress (step counts and the epsilon
spent, which depend only on q, sigma, steps and delta), metrics on PUBLIC data
(accuracy, and AUC for two classes; RMSE and MAE for regression, in the target's
units against the target clipped to its public bounds), checkpoints sealed under
the model owner's KMS key, and the privacy certificate. Training loss and any
metric on private data never leave.
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
from enclave.training.jobmodel import FixedFront, JobModel, fixed_front, job_model
from enclave.training.modelfmt.weights import Weights, load_weights
from enclave.training.models import model_generator
from enclave.training.plan import BudgetExceeded, PlannedRun
from enclave.training.sampler import PoissonSampler
from enclave.training.spec import JobSpec
from enclave.training.tabular import Target
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
    # The public initial weights the spec names (its model.weights_sha256), checked against the model.
    weights: Weights | None = None


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class UnusableRecords(DatasetError):
    """Records the trainer cannot use (a fixed message: it must not depend on the values)."""


def table_arrays(
    table: pa.Table, features: str, label: str, num_classes: int | None = None, *, read_labels: bool = True
) -> tuple[np.ndarray, torch.Tensor]:
    """uint8 feature rows [N, F] and int64 labels from an Arrow table.

    With `num_classes`, every label must lie in [0, num_classes). Without `read_labels`, the
    label column is not read and the labels returned are empty (a regression target's
    values come from `tabular.Target`). The sealer checked
    that and AES-GCM proves the file is the sealer's, so only a defect gets here; the
    check still keeps a label from reaching torch's indexing, whose error would quote it.
    """
    try:
        column = table.column(features).combine_chunks()
        labels = table.column(label).combine_chunks() if read_labels else pa.array([], pa.int64())
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
    tables: Sequence[pa.Table], features: str, label: str, num_classes: int | None = None, *, read_labels: bool = True
) -> tuple[np.ndarray, torch.Tensor]:
    """`table_arrays` over the records of every table, in order (the job check made their fields equal)."""
    parts = [table_arrays(t, features, label, num_classes, read_labels=read_labels) for t in tables]
    if len(parts) == 1:
        return parts[0]
    return np.concatenate([rows for rows, _ in parts]), torch.cat([labels for _, labels in parts])


def outputs_of(model: nn.Module, inputs: Callable[[slice], torch.Tensor], count: int) -> torch.Tensor:
    """The model's outputs [count, K] on inputs(slice) taken EVAL_BATCH records at a time, no autograd."""
    model.eval()
    parts = []
    with torch.no_grad():
        for start in range(0, count, EVAL_BATCH):
            parts.append(model(inputs(slice(start, start + EVAL_BATCH))).detach().to(torch.float64))
    model.train()
    return torch.cat(parts) if parts else torch.zeros((0, 1), dtype=torch.float64)


def binary_auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """The ROC AUC of scores for class 1 (ties count half): the Mann-Whitney U over both classes' counts."""
    y = labels.to(torch.int64).numpy()
    s = scores.to(torch.float64).numpy()
    positives, negatives = int((y == 1).sum()), int((y == 0).sum())
    if positives == 0 or negatives == 0:
        return float("nan")  # undefined with one class only; the caller releases no AUC
    order = np.argsort(s, kind="stable")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_scores = s[order]
    # Average ranks over ties, 1-based.
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    ends = np.r_[starts[1:], len(s)]
    for a, b in zip(starts, ends, strict=True):
        ranks[order[a:b]] = (a + b + 1) / 2.0
    u = ranks[y == 1].sum() - positives * (positives + 1) / 2.0
    return float(u / (positives * negatives))


def public_metrics(outputs: torch.Tensor, labels: torch.Tensor, target: Target | None) -> list[tuple[str, float]]:
    """(metric, value) for outputs on public records: accuracy (+ AUC for 2 classes), or RMSE and MAE."""
    count = max(1, len(labels))
    if target is not None and target.regression:
        predicted = target.unscale(outputs[:, 0]) if len(outputs) else torch.zeros(0, dtype=torch.float64)
        error = predicted - target.unscale(labels)
        return [("rmse", float(torch.sqrt((error**2).sum() / count))), ("mae", float(error.abs().sum() / count))]
    correct = int((outputs.argmax(dim=1) == labels).sum()) if len(outputs) else 0
    metrics = [("accuracy", correct / count)]
    if outputs.shape[1] == 2:
        auc = binary_auc(outputs[:, 1] - outputs[:, 0], labels)
        if np.isfinite(auc):
            metrics.append(("auc", auc))
    return metrics


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
        # Each step frees and reallocates the same temporaries; keep them mapped.
        retain_freed_memory()
        inp, spec, plan = self._in, self._in.spec, self._in.plan
        if spec.tuning is not None or plan.search is not None:
            # Its reservation is a search's: one plain run of it would be accounted as nothing.
            raise RuntimeFailure("a tuning job runs as a search (enclave.training.tuning), not as one run")
        started = inp.clock()
        rng = seed_from(inp.nsm.get_random)
        # The job check passed on every dataset and they share one schema: the first gives the layout.
        job = self._job_model = job_model(spec, inp.train[0].opened.header)
        model = job.build(model_generator(rng.fork(b"model-init")))
        if inp.weights is not None and inp.resume is None:
            # Drawn first all the same: the generator's later draws stay those of a job without weights.
            # A resumed job takes the checkpoint's state instead (`_restore`).
            load_weights(model, inp.weights)
        # A model with a fixed front end (no parameters, one record at a time,
        # data-independent) has it applied once to each table instead of every step;
        # DP-SGD then runs on the head, which holds all of the model's parameters.
        # Assembled tabular inputs are small vectors: no front end worth computing once.
        self._transform = None if job.tabular is not None else fixed_front(job.format, model, job.plan())
        optimizer = build_optimizer(spec, model)
        ledger = PrivacyLedger(plan.delta, plan.accountant)
        start = 0
        if inp.resume is not None:
            start = self._restore(model, optimizer, inp.resume)
            ledger = PrivacyLedger.from_dict(inp.resume.ledger)
            self._check_resumed_ledger(ledger, start)
        rows, labels = self._arrays([d.opened.table for d in inp.train])
        sampler = PoissonSampler(len(rows), plan.sampling_rate, rng.fork(b"poisson-sampler"))
        net, inputs = self._trainable_inputs(model, rows)
        engine = DpSgd(
            net,
            optimizer,
            max_grad_norm=spec.privacy.max_grad_norm,
            noise_multiplier=plan.noise_multiplier,
            expected_batch_size=spec.privacy.expected_batch_size,
            rng=rng.fork(b"gaussian-noise"),
            loss=spec.task.loss,
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
                    self._release_metrics(model, public, step)
                if ckpt_every and step % ckpt_every == 0 and step < last:
                    self._emit_checkpoint(model, optimizer, ledger, step, final=False)
        finally:
            engine.close()  # stops the worker drawing the next step's noise
        log.info("trained %d steps in %.1fs", last - start, time.monotonic() - began)
        eps = {name: float(ledger.epsilon(name)) for name in ACCOUNTANT_NAMES}
        self._gate.send(TrainingProgress(step=last, total_steps=plan.steps, epsilon=eps[plan.accountant]))
        if public is not None:
            self._release_metrics(model, public, last)
        checkpoint = self._emit_checkpoint(model, optimizer, ledger, last, final=True)
        model_hash, checkpoint_hash = model_sha256(model.state_dict()), hashlib.sha256(checkpoint).hexdigest()
        audit_sha256, audit_events = self._close_audit(model_hash, checkpoint_hash, ledger.steps)
        body = CertificateBody(
            version=CertificateBody.version_for(search=False, audited=True),
            job_id=inp.job_id,
            spec_sha256=spec.sha256,
            model_spec_sha256=job.format.sha256,
            pcrs={i: inp.nsm.describe_pcr(i).value.hex() for i in PCR_INDICES},
            # The job's whole ledger at each dataset's delta: each owner's cap is at its own.
            datasets=self._dataset_records(lambda delta: compose_epsilon(ledger.segments, delta, plan.accountant)),
            public_datasets=self._public_records(),
            sampling_rate=plan.sampling_rate,
            noise_multiplier=plan.noise_multiplier,
            max_grad_norm=spec.privacy.max_grad_norm,
            steps=ledger.steps,
            delta=plan.delta,
            epsilon=eps,
            accountant=plan.accountant,
            ledger=tuple(s.to_dict() for s in ledger.segments),
            model_sha256=model_hash,
            checkpoint_sha256=checkpoint_hash,
            metrics=tuple(self._metrics),
            started_at=_rfc3339(started),
            finished_at=_rfc3339(inp.clock()),
            budget={"max_epsilon": plan.max_epsilon, "delta": plan.budget_delta},
            resumed_from=(
                None if inp.resume is None
                else ResumedFrom(sealed_sha256=inp.resume_sealed_sha256, step=inp.resume.step)
            ),
            audit_log_sha256=audit_sha256,
            audit_log_events=audit_events,
        )
        self._issue(body)
        summary = f"{ledger.steps} steps, epsilon {eps[plan.accountant]:.4f} ({plan.accountant})"
        final = [m for m in self._metrics if m.step == last]
        if final:
            summary += ", public " + ", ".join(f"{m.name} {m.value:.4f}" for m in final)
        return summary

    # ------------------------------------------------------------------ pieces

    def _dataset_records(self, epsilon_at: Callable[[float], float]) -> tuple[DatasetRecord, ...]:
        """The certificate's dataset records, with this job's epsilon at each dataset's delta."""
        return tuple(
            DatasetRecord(
                dataset_id=d.opened.dataset_id,
                sealed_sha256=d.sealed_sha256,
                key_id=d.opened.header.key_id,
                encryption_context=dict(d.opened.header.encryption_context),
                records=d.opened.records,
                epsilon=epsilon_at(d.opened.header.delta),
                dataset_epsilon=d.dataset_epsilon,
            )
            for d in self._in.train
        )

    def _public_records(self) -> tuple[PublicDatasetRecord, ...]:
        return tuple(PublicDatasetRecord(name=p.name, sha256=p.sha256, records=p.table.num_rows)
                     for p in self._in.public.values())

    @property
    def _job(self) -> JobModel:
        assert self._job_model is not None  # set first thing in run()
        return self._job_model

    def _arrays(self, tables: Sequence[pa.Table]) -> tuple[np.ndarray | torch.Tensor, torch.Tensor]:
        """The records' inputs (uint8 rows, or an assembled tabular tensor) and what the loss compares with."""
        job, spec = self._job, self._in.spec
        target = job.target
        if job.tabular is not None:
            assert target is not None  # set with every tabular layout
            return job.tabular.assemble(tables), torch.cat([target.values(t) for t in tables])
        rows, labels = union_arrays(tables, spec.data.columns[0], spec.data.label,
                                    None if target is not None else job.num_classes, read_labels=target is None)
        if target is not None:
            labels = torch.cat([target.values(t) for t in tables])
        return rows, labels

    def _trainable_inputs(
        self, model: nn.Module, rows: np.ndarray | torch.Tensor
    ) -> tuple[nn.Module, Callable[[np.ndarray], torch.Tensor]]:
        """The module DP-SGD trains and a batch -> its inputs function."""
        model_input = self._job.input
        if isinstance(rows, torch.Tensor):
            assembled = rows
            return model, lambda batch: assembled[torch.from_numpy(batch)]
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
        rows, labels = self._arrays([table.table])
        if self._transform is not None:
            assert isinstance(rows, np.ndarray)
            return table, self._transform.features(self._job.input, rows), labels
        return table, rows, labels

    def _evaluate(
        self, model: nn.Module, public: tuple[PublicTable, np.ndarray | torch.Tensor, torch.Tensor]
    ) -> list[tuple[str, float]]:
        """("metric/public set", value) of `model` on the public set; nothing is released here."""
        table, rows, labels = public
        net: nn.Module = model
        if isinstance(rows, torch.Tensor):
            # Front-end features (the head takes them) or an assembled tabular input (the model does).
            ready = rows
            net = self._transform.head if self._transform is not None else model
            outputs = outputs_of(net, lambda part: ready[part], len(ready))
        else:
            pixels, model_input = rows, self._job.input
            outputs = outputs_of(net, lambda part: model_input.tensor(pixels[part]), len(pixels))
        return [(f"{name}/{table.name}", value) for name, value in public_metrics(outputs, labels, self._job.target)]

    def _close_audit(self, model_hash: str, checkpoint_hash: str, steps: int) -> tuple[str, int]:
        """Close the session's audit chain; the (head, count) the certificate body states.

        The chain closes before the body is built because the body holds its head: the
        last record, certificate_issuing, names what the certificate will state, and no
        record follows it (`enclave.audit_log`).
        """
        return self._gate.close_audit(model_sha256=model_hash, checkpoint_sha256=checkpoint_hash, steps=steps)

    def _issue(self, body: CertificateBody) -> None:
        """Issue and release the certificate, then the audit log it attests."""
        self._gate.send(CertificateIssued(data=issue_certificate(body, self._in.nsm)))
        self._gate.release_audit_log()

    def _release_metrics(
        self, model: nn.Module, public: tuple[PublicTable, np.ndarray | torch.Tensor, torch.Tensor], step: int
    ) -> None:
        for name, value in self._evaluate(model, public):
            metric = ReleasedMetric(name=name, value=value, kind="public_eval", step=step, epsilon_cost=0.0)
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
        sampling_rate: float | None = None,
    ) -> bytes:
        inp = self._in
        q = inp.plan.sampling_rate if sampling_rate is None else sampling_rate
        state = CheckpointState(
            job_id=inp.job_id,
            spec_sha256=inp.spec.sha256,
            step=step,
            model_state=model.state_dict(),
            optimizer_state=optimizer.state_dict(),
            ledger=ledger.to_dict(),
            sampler=SamplerState(steps=step, q=q),
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
