"""Builders shared by the certificate tests (also used by the CLI tests)."""
from __future__ import annotations

import dataclasses
import functools
import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

from enclave.certificate.body import CertificateBody, DatasetRecord, PublicDatasetRecord, ReleasedMetric, encode_body
from enclave.certificate.checks import format_time
from enclave.certificate.envelope import encode_envelope
from enclave.certificate.issue import body_digest
from enclave.sealed.format import build_encryption_context
from parent.local.local_ca import LocalCa
from parent.local.mock_nsm import MockNsm
from parent.verify.accounting import recompute_epsilon
from parent.verify.policy import AttestationPolicy

PCRS: dict[int, bytes] = {
    0: hashlib.sha384(b"pcr0").digest(),
    1: hashlib.sha384(b"pcr1").digest(),
    2: hashlib.sha384(b"pcr2").digest(),
    3: hashlib.sha384(b"pcr3").digest(),
    4: hashlib.sha384(b"pcr4").digest(),
}
#: The image pin a verifier of these certificates passes: the published PCR0.
PINNED = AttestationPolicy.from_pcrs({0: PCRS[0]})
Q, SIGMA, STEPS, DELTA = 0.01, 1.1, 100, 1e-5
MAX_EPSILON = 8.0


def sha256_hex(label: str) -> str:
    return hashlib.sha256(label.encode()).hexdigest()


def context(dataset_id: str = "patients-2024", *, max_epsilon: float = MAX_EPSILON,
            delta: float = DELTA, records: int = 60000) -> dict[str, str]:
    return build_encryption_context(
        dataset_id=dataset_id, owner="hospital-a", max_epsilon=max_epsilon, delta=delta,
        record_count=records, schema_sha256=sha256_hex("schema"),
        ledger="local:/var/lib/hermetic/ledger", ledger_public_key="11" * 32,
        model_owner_keys=["alias/hermetic-model-owner"],
    )


@functools.lru_cache(maxsize=64)
def _stated(ledger: tuple[tuple[float, float, int], ...], delta: float) -> tuple[tuple[str, float], ...]:
    segments = [{"q": q, "sigma": sigma, "steps": steps} for q, sigma, steps in ledger]
    return tuple((name, recompute_epsilon(segments, delta, name)) for name in ("prv", "rdp"))


def stated_epsilons(ledger: list[dict[str, Any]], delta: float) -> dict[str, float]:
    """The real accountants' epsilons (cached: the PLD accountant takes a moment per call)."""
    key = tuple((s["q"], s["sigma"], s["steps"]) for s in ledger)
    return dict(_stated(key, delta))


def make_body(**overrides: Any) -> CertificateBody:
    """A consistent body whose stated epsilons are exactly the recomputed ones."""
    now = datetime.now(UTC)
    ledger = overrides.pop("ledger", [{"q": Q, "sigma": SIGMA, "steps": STEPS}])
    delta = overrides.get("delta", DELTA)
    fields: dict[str, Any] = {
        "job_id": "job-0001",
        "spec_sha256": sha256_hex("spec"),
        "model_spec_sha256": sha256_hex("model-spec"),
        "pcrs": {index: PCRS[index].hex() for index in (0, 1, 2, 3)},
        "public_datasets": (PublicDatasetRecord("fashion-mnist-test", sha256_hex("public"), 10000),),
        "sampling_rate": Q,
        "noise_multiplier": SIGMA,
        "max_grad_norm": 1.0,
        "steps": sum(segment["steps"] for segment in ledger),
        "delta": delta,
        "accountant": "prv",
        "ledger": ledger,
        "model_sha256": sha256_hex("model"),
        "checkpoint_sha256": sha256_hex("checkpoint"),
        "metrics": (ReleasedMetric("test_accuracy", 0.8125, "public_eval", STEPS, 0.0),),
        "started_at": format_time(now - timedelta(minutes=10)),
        "finished_at": format_time(now - timedelta(minutes=1)),
        "budget": {"max_epsilon": MAX_EPSILON, "delta": DELTA},
    }
    fields.update(overrides)
    if "datasets" not in fields:
        # The job's epsilon at the dataset's delta, recomputed as a verifier does; 2.5 spent in all.
        epsilon = stated_epsilons(list(fields["ledger"]), DELTA)["prv"]
        fields["datasets"] = (DatasetRecord("patients-2024", sha256_hex("sealed"), "alias/hospital-a",
                                            context(), 60000, epsilon, max(epsilon, 2.5)),)
    if "epsilon" not in fields:
        fields["epsilon"] = stated_epsilons(list(fields["ledger"]), fields["delta"])
    return CertificateBody(**fields)


def assemble(body: CertificateBody, nsm: MockNsm) -> bytes:
    """A certificate file signed by `nsm` without issue_certificate's own checks."""
    body_bytes = encode_body(body)
    return encode_envelope(body_bytes, nsm.attest(user_data=body_digest(body_bytes)))


def replace(body: CertificateBody, **changes: Any) -> CertificateBody:
    return dataclasses.replace(body, **changes)


def new_nsm(ca: LocalCa, **kwargs: Any) -> MockNsm:
    return MockNsm(ca, dict(PCRS), **kwargs)
