"""A tuning job inside the enclave: K trials, one released (Papernot & Steinke's repeat-and-select).

The search was planned and reserved whole before this runs (`enclave.training.budget`,
one "search" ledger entry). Here:

* K is drawn from the job's CSPRNG, on a stream forked for tuning, from the
  distribution the reservation accounted (`enclave.training.trials`); K = 0 (Poisson
  only) releases nothing but the certificate saying so.
* Each trial draws its candidate uniformly from the grid on that stream, builds the
  model afresh (its own forked streams for initialisation, sampling and noise, so no
  trial's draws depend on another's), trains with DP-SGD at the search's one sigma,
  and is scored on the public evaluation set.
* Only the best trial so far (score, model, optimizer) is kept in memory. Nothing
  data-dependent leaves per trial: progress carries step counts and the reserved
  epsilon, which depend only on the candidate drawn and the plan.
* At the end the selected trial alone is released: its public metrics once, one
  final checkpoint, and a version-6 certificate stating the search (`SearchRecord`).

Intermediate evaluations and checkpoints are not made (the spec refuses
checkpoint.every_steps with tuning): each would release an unselected trial, which
repeat-and-select does not account for.
"""
from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import torch
from torch import nn

from enclave.certificate.body import (
    AUDITED_SEARCH_BODY_VERSION,
    NO_OUTPUT,
    CertificateBody,
    SearchRecord,
)
from enclave.egress import EgressGate
from enclave.errors import RuntimeFailure
from enclave.hazmat.csprng import Csprng, seed_from
from enclave.native.heap import retain_freed_memory
from enclave.privacy.ledger import PrivacyLedger
from enclave.privacy.searches import compose
from enclave.training.checkpoint import model_sha256
from enclave.training.dpsgd import DpSgd
from enclave.training.jobmodel import fixed_front, job_model
from enclave.training.modelfmt.weights import load_weights
from enclave.training.models import model_generator
from enclave.training.sampler import PoissonSampler
from enclave.training.spec import JobSpec
from enclave.training.trainer import PCR_INDICES, PublicTable, Trainer, TrainingInputs, _rfc3339, build_optimizer
from enclave.training.trials import draw_index, draw_trials
from enclave.transport.messages import TrainingProgress

__all__ = ["SearchTrainer", "job_trainer"]

log = logging.getLogger(__name__)

Public = tuple[PublicTable, np.ndarray | torch.Tensor, torch.Tensor]


@dataclass
class _Trial:
    index: int
    point: dict[str, float | int]
    spec: JobSpec
    q: float
    steps: int
    score: float
    model: nn.Module
    optimizer: torch.optim.Optimizer


def job_trainer(inputs: TrainingInputs, gate: EgressGate) -> Trainer:
    """The training loop for the job: a search for a tuning spec, else the one DP-SGD run."""
    return SearchTrainer(inputs, gate) if inputs.spec.tuning is not None else Trainer(inputs, gate)


def _candidate_text(point: dict[str, float | int]) -> str:
    """One text per candidate (sorted keys, repr of each value): a record field is a scalar."""
    return ",".join(f"{key}={point[key]!r}" for key in sorted(point))


class SearchTrainer(Trainer):
    def run(self) -> str:
        inp, spec, plan = self._in, self._in.spec, self._in.plan
        tuning, search = spec.tuning, plan.search
        assert tuning is not None and search is not None  # planned as a search (budget._plan_search)
        started = inp.clock()
        retain_freed_memory()
        rng = seed_from(inp.nsm.get_random)
        streams = rng.fork(b"tuning")
        trials = draw_trials(streams.fork(b"trial-count"), tuning.distribution, tuning.mean, tuning.shape)
        candidates = streams.fork(b"candidates")
        self._job_model = job_model(spec, inp.train[0].opened.header)
        rows, labels = self._arrays([d.opened.table for d in inp.train])
        log.info("search of %d trials over %d candidates", trials, tuning.size)
        best: _Trial | None = None
        for index in range(trials):
            point = tuning.candidate(draw_index(candidates, tuning.size))
            # The candidate is drawn from the public grid by the CSPRNG; the score is never recorded.
            self._gate.record("trial_started", index=index, candidate=_candidate_text(point))
            trial = self._trial(index, point, rng.fork(b"trial-%d" % index), rows, labels)
            self._gate.record("trial_finished", index=index)
            if best is None or _better(trial.score, best.score, minimise=tuning.minimise):
                best = trial  # the previous best's model and optimizer are dropped here
        return self._finish(started, trials, best)

    def _trial(self, index: int, point: dict[str, float | int], rng: Csprng,
               rows: np.ndarray | torch.Tensor, labels: torch.Tensor) -> _Trial:
        inp, plan = self._in, self._in.plan
        spec = inp.spec.with_candidate(point)
        records = plan.records
        q, steps = spec.sampling_rate(records), spec.steps_for(records)
        model = self._job.build(model_generator(rng.fork(b"model-init")))
        if inp.weights is not None:
            load_weights(model, inp.weights)
        self._transform = None if self._job.tabular is not None else fixed_front(
            self._job.format, model, self._job.plan())
        optimizer = build_optimizer(spec, model)
        sampler = PoissonSampler(len(rows), q, rng.fork(b"poisson-sampler"))
        net, inputs = self._trainable_inputs(model, rows)
        engine = DpSgd(net, optimizer, max_grad_norm=spec.privacy.max_grad_norm,
                       noise_multiplier=plan.noise_multiplier, expected_batch_size=spec.privacy.expected_batch_size,
                       rng=rng.fork(b"gaussian-noise"), loss=spec.task.loss)
        self._gate.send(TrainingProgress(step=0, total_steps=steps, epsilon=plan.planned_epsilon))
        try:
            for _ in range(steps):
                batch = sampler.sample()
                engine.step(inputs(batch), labels[batch])
        finally:
            engine.close()
        self._gate.send(TrainingProgress(step=steps, total_steps=steps, epsilon=plan.planned_epsilon))
        public = self._public_eval_set()
        assert public is not None  # the spec refuses a search without a public evaluation set
        assert inp.spec.tuning is not None
        score = dict(self._evaluate(model, public)).get(inp.spec.tuning.metric, math.nan)
        log.info("trial %d: %s", index, point)  # never its score: the log leaves the enclave's memory
        return _Trial(index, point, spec, q, steps, score, model, optimizer)

    def _finish(self, started: datetime, trials: int, best: _Trial | None) -> str:
        inp, plan = self._in, self._in.plan
        tuning, search = inp.spec.tuning, plan.search
        assert tuning is not None and search is not None and self._job_model is not None
        ledger = PrivacyLedger(plan.delta, "rdp")
        model_hash = checkpoint_hash = NO_OUTPUT
        if best is not None:
            if not math.isfinite(best.score):
                raise RuntimeFailure(f"no trial released the selection metric {tuning.metric!r}")
            ledger.record(best.q, plan.noise_multiplier, steps=best.steps)
            # The selected model's transform, for its one release of public metrics.
            self._transform = None if self._job.tabular is not None else fixed_front(
                self._job.format, best.model, self._job.plan())
            public = self._public_eval_set()
            assert public is not None
            self._release_metrics(best.model, public, best.steps)
            checkpoint = self._emit_checkpoint(best.model, best.optimizer, ledger, best.steps, final=True,
                                               sampling_rate=best.q)
            model_hash = model_sha256(best.model.state_dict())
            checkpoint_hash = hashlib.sha256(checkpoint).hexdigest()
        epsilon = compose([], [search], plan.delta, "rdp")
        score = None if best is None else next(m.value for m in self._metrics if m.name == tuning.metric)
        audit_sha256, audit_events = self._close_audit(model_hash, checkpoint_hash, ledger.steps)
        body = CertificateBody(
            version=AUDITED_SEARCH_BODY_VERSION,
            job_id=inp.job_id,
            spec_sha256=inp.spec.sha256,
            model_spec_sha256=self._job.format.sha256,
            pcrs={i: inp.nsm.describe_pcr(i).value.hex() for i in PCR_INDICES},
            datasets=self._dataset_records(lambda delta: compose([], [search], delta, "rdp")),
            public_datasets=self._public_records(),
            sampling_rate=plan.sampling_rate if best is None else best.q,
            noise_multiplier=plan.noise_multiplier,
            max_grad_norm=(inp.spec if best is None else best.spec).privacy.max_grad_norm,
            steps=ledger.steps,
            delta=plan.delta,
            epsilon={"rdp": epsilon},
            accountant="rdp",
            ledger=tuple(s.to_dict() for s in ledger.segments),
            model_sha256=model_hash,
            checkpoint_sha256=checkpoint_hash,
            metrics=tuple(self._metrics),
            started_at=_rfc3339(started),
            finished_at=_rfc3339(inp.clock()),
            budget={"max_epsilon": plan.max_epsilon, "delta": plan.budget_delta},
            search=SearchRecord(
                distribution=tuning.distribution, mean=tuning.mean, shape=tuning.shape,
                grid=dict(tuning.grid), runs=tuple(r.to_dict() for r in search.runs), metric=tuning.metric,
                trials=trials, selected={} if best is None else best.point, score=score,
            ),
            audit_log_sha256=audit_sha256,
            audit_log_events=audit_events,
        )
        self._issue(body)
        if best is None:
            return f"search ran no trial (K = 0), epsilon {epsilon:.4f} (rdp)"
        return (f"search of {trials} trials, selected {best.point}: {tuning.metric} {score:.4f}, "
                f"epsilon {epsilon:.4f} (rdp)")


def _better(score: float, best: float, *, minimise: bool) -> bool:
    """Strictly better (ties keep the earlier trial); a missing score (NaN) is never better."""
    if math.isnan(score):
        return False
    if math.isnan(best):
        return True
    return score < best if minimise else score > best

