"""A tuning job through the real runtime and trainer, in memory: what leaves, and its certificate.

Only the selected trial leaves: one checkpoint, one set of public metrics, and a
certificate stating the search, whose epsilon the verifier recomputes and which equals
dp-accounting's repeat-and-select value composed with the ledger's earlier entries."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from dp_accounting import dp_event as ev
from dp_accounting.rdp import rdp_privacy_accountant as dp_rdp

from enclave.audit_log import decode_log
from enclave.certificate.body import AUDITED_SEARCH_BODY_VERSION, NO_OUTPUT, CertificateBody, encode_body
from enclave.certificate.checks import check_body
from enclave.certificate.errors import InconsistentCertificate
from enclave.privacy import rdp
from enclave.training import tuning as tuning_module
from enclave.training.tuning import job_trainer
from enclave.transport.messages import (
    PUBLIC_PREFIX,
    AuditLog,
    CertificateIssued,
    CheckpointBegin,
    JobResult,
    JobStart,
    Message,
    MetricRelease,
    TrainingJob,
    TrainingProgress,
)
from parent.cli import main
from parent.local.local_ca import LocalCa
from parent.local.mock_nsm import MockNsm
from parent.verify.audit import verify_audit_log
from parent.verify.body import decode_body
from parent.verify.certificate import verify_certificate
from tests.enclave.test_runtime import CREDS, HELLO, KEY_ARN, TRAIN, StubKms, run_session, sealed, stream
from tests.support.certificates import PCRS, PINNED
from tests.support.ledgers import MemoryLedgers
from tests.support.specs import mlp_spec

__all__ = ["sealed"]  # the module fixture, shared

JOB = JobStart("tune-1", [PUBLIC_PREFIX + "pub", TRAIN])
TUNING = """[eval]
public = "pub"
[tuning]
lr = [0.05, 0.2]
steps = [2, 3]
trials = {{ distribution = "{distribution}", mean = 3 }}
select = {{ metric = "accuracy/pub" }}
"""


def tuning_spec(distribution: str = "geometric") -> TrainingJob:
    text = mlp_spec(key_id=KEY_ARN, name="tune", steps=2, noise=2.0, extra=TUNING.format(distribution=distribution))
    return TrainingJob(text.replace("noise_multiplier = ", 'accountant = "rdp"\nnoise_multiplier = '))


@pytest.fixture(scope="module")
def public(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    from parent.public_data import load_public_dataset

    folder: Path = tmp_path_factory.mktemp("public")
    rng = np.random.default_rng(2)
    np.savez(folder / "p.npz", image=rng.integers(0, 256, (40, 784), dtype=np.uint8),
             label=rng.integers(0, 10, 40, dtype=np.uint8))
    return load_public_dataset("pub", folder / "p.npz").ipc


def search_reference(mean: float, shape: float, prior: list[tuple[float, float, int]] = ()) -> float:  # type: ignore[assignment]
    acc = dp_rdp.RdpAccountant(list(rdp.ORDERS))
    for q, s, t in prior:
        acc.compose(ev.SelfComposedDpEvent(ev.PoissonSampledDpEvent(q, ev.GaussianDpEvent(s)), t))
    # q = 20 / 200; the 3-step candidate dominates the 2-step one at every order.
    one = ev.SelfComposedDpEvent(ev.PoissonSampledDpEvent(0.1, ev.GaussianDpEvent(2.0)), 3)
    acc.compose(ev.RepeatAndSelectDpEvent(one, mean, shape))
    return float(acc.get_epsilon(1e-5))


def run(nsm: MockNsm, sealed: bytes, public: bytes, ledgers: MemoryLedgers, spec: TrainingJob,
        kms: StubKms | None = None) -> list[Message]:
    messages = [HELLO, CREDS, JOB, spec, *stream(0, PUBLIC_PREFIX + "pub", public), *stream(1, TRAIN, sealed)]
    return run_session(nsm, messages, kms=kms, ledgers=ledgers, training_loop=job_trainer)


def test_a_search_releases_only_the_selected_trial(nsm: MockNsm, ca: LocalCa, sealed: bytes, public: bytes,
                                                   monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(tuning_module, "draw_trials", lambda *args: 3)
    ledgers = MemoryLedgers()
    # An earlier plain job on the dataset: the certificate's dataset epsilon composes it with the search.
    plain = [HELLO, CREDS, JobStart("plain", [TRAIN]), TrainingJob(mlp_spec(key_id=KEY_ARN, steps=2, noise=1.0)),
             *stream(0, TRAIN, sealed)]
    assert isinstance(run_session(nsm, plain, ledgers=ledgers)[-2], JobResult)
    kms = StubKms()
    replies = run(nsm, sealed, public, ledgers, tuning_spec(), kms)
    [result] = [m for m in replies if isinstance(m, JobResult)]
    assert result.status == "ok" and result.detail.startswith("search of 3 trials")
    assert len([m for m in replies if isinstance(m, CheckpointBegin)]) == 1
    assert kms.calls == ["Decrypt", "GenerateDataKey"]  # the data key, then the one checkpoint's
    metrics = [m for m in replies if isinstance(m, MetricRelease)]
    assert [m.name for m in metrics] == ["accuracy/pub"]
    progress = [m for m in replies if isinstance(m, TrainingProgress)]
    assert len(progress) == 6 and all(p.step in (0, p.total_steps) for p in progress)
    [issued] = [m for m in replies if isinstance(m, CertificateIssued)]
    verified = verify_certificate(issued.data, root_der=ca.root_der, policy=PINNED)
    body = verified.body
    assert body.version == AUDITED_SEARCH_BODY_VERSION and body.search is not None
    search = body.search
    assert (search.distribution, search.mean, search.shape, search.trials) == ("geometric", 3.0, None, 3)
    # Each trial is in the audit trail by index and candidate, never by its score.
    [log_msg] = [m for m in replies if isinstance(m, AuditLog)]
    verify_audit_log(log_msg.data, body)
    trials = [r for r in decode_log(log_msg.data) if r.type.startswith("trial_")]
    assert [(r.type, r.fields["index"]) for r in trials] == [
        (kind, index) for index in range(3) for kind in ("trial_started", "trial_finished")]
    assert all(set(r.fields) <= {"index", "candidate"} for r in trials)
    assert dict(search.grid) == {"lr": (0.05, 0.2), "steps": (2, 3)}
    assert search.selected["lr"] in (0.05, 0.2) and search.score == metrics[0].value
    assert body.steps == search.selected["steps"] and body.metrics[0].value == search.score
    expected = search_reference(3.0, 1.0)
    assert body.epsilon == {"rdp": pytest.approx(expected, rel=1e-6)}
    assert verified.epsilons["rdp"] == pytest.approx(expected, rel=1e-6)
    [record] = body.datasets
    assert record.epsilon == pytest.approx(expected, rel=1e-6)
    assert record.dataset_epsilon == pytest.approx(search_reference(3.0, 1.0, [(0.1, 1.0, 2)]), rel=1e-6)
    # The command line verifies it and says what was searched.
    (tmp_path / "c.cbor").write_bytes(issued.data)
    (tmp_path / "root.pem").write_bytes(ca.root_pem)
    args = ["verify-certificate", str(tmp_path / "c.cbor"), "--root", str(tmp_path / "root.pem"),
            "--pcr", f"0={PCRS[0].hex()}"]
    assert main(args) == 0
    assert "search:       3 trials (geometric, mean 3)" in capsys.readouterr().out
    assert main([*args, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["search"]["trials"] == 3
    assert shown["audit_log"] == {"sha256": body.audit_log_sha256, "events": body.audit_log_events}


def test_a_search_of_no_trial_releases_only_its_certificate(nsm: MockNsm, ca: LocalCa, sealed: bytes, public: bytes,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tuning_module, "draw_trials", lambda *args: 0)
    kms = StubKms()
    replies = run(nsm, sealed, public, MemoryLedgers(), tuning_spec("poisson"), kms)
    assert not [m for m in replies if isinstance(m, (CheckpointBegin, MetricRelease, TrainingProgress))]
    assert kms.calls == ["Decrypt"]
    [issued] = [m for m in replies if isinstance(m, CertificateIssued)]
    body = verify_certificate(issued.data, root_der=ca.root_der, policy=PINNED).body
    assert body.search is not None and body.search.trials == 0 and body.search.score is None
    assert (body.steps, body.ledger, body.model_sha256) == (0, (), NO_OUTPUT)
    assert body.epsilon["rdp"] == pytest.approx(search_reference(3.0, float("inf")), rel=1e-6)
    # The body decodes from its own bytes, and a claim of a cheaper search is caught by the checks.
    assert decode_body(encode_body(body)) == body
    assert body.search is not None
    forged = dataclasses.replace(body, search=dataclasses.replace(body.search, selected={"lr": 0.05, "steps": 2}))
    with pytest.raises(InconsistentCertificate, match="no trial"):
        check_body(forged)
    assert isinstance(forged, CertificateBody)
