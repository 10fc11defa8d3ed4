from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from enclave.attestation.errors import AttestationError
from enclave.certificate.body import encode_body
from enclave.certificate.checks import format_time
from enclave.certificate.envelope import CERTIFICATE_FORMAT, encode_envelope
from enclave.certificate.errors import (
    BudgetExceeded,
    CertificateBindingError,
    CertificatePcrMismatch,
    DebugEnclaveCertificate,
    InconsistentCertificate,
    MalformedCertificate,
    StatedEpsilonTooLow,
)
from enclave.certificate.issue import issue_certificate
from enclave.errors import HermeticError
from enclave.hazmat.cbor import dumps_f64
from parent.local.local_ca import LocalCa
from parent.local.mock_nsm import MockNsm
from parent.verify.accounting import recompute_epsilon
from parent.verify.certificate import verify_certificate
from parent.verify.envelope import decode_envelope
from parent.verify.errors import PcrMismatch
from parent.verify.policy import AttestationPolicy
from tests.support.certificates import (
    MAX_EPSILON,
    PCRS,
    PINNED,
    assemble,
    make_body,
    new_nsm,
    replace,
)


def test_round_trip(ca: LocalCa, nsm: MockNsm) -> None:
    body = make_body()
    data = issue_certificate(body, nsm)
    verified = verify_certificate(data, root_der=ca.root_der, policy=PINNED)
    assert verified.body == body
    assert verified.accountant == "prv"
    assert set(verified.epsilons) == {"prv", "rdp"}
    assert verified.epsilon == recompute_epsilon(body.ledger, body.delta, "prv")
    assert verified.epsilons["rdp"] == recompute_epsilon(body.ledger, body.delta, "rdp")
    body_bytes, _ = decode_envelope(data)
    assert body_bytes == encode_body(body)
    assert verified.attestation.user_data == hashlib.sha384(body_bytes).digest()
    assert verified.body_sha384 == verified.attestation.user_data
    assert abs(verified.attested_at - datetime.now(UTC)) < timedelta(minutes=1)
    other = verify_certificate(data, root_der=ca.root_der, policy=PINNED, accountant="rdp")
    assert other.epsilon == verified.epsilons["rdp"]


def test_heterogeneous_ledger_round_trip(ca: LocalCa, nsm: MockNsm) -> None:
    ledger = [{"q": 0.01, "sigma": 1.1, "steps": 60}, {"q": 0.02, "sigma": 1.5, "steps": 40}]
    body = make_body(ledger=ledger, sampling_rate=0.02, noise_multiplier=1.5)
    verified = verify_certificate(issue_certificate(body, nsm), root_der=ca.root_der, policy=PINNED)
    assert verified.epsilon == recompute_epsilon(ledger, body.delta, "prv")


def test_envelope_known_answer() -> None:
    data = encode_envelope(b"B", b"A")
    # Keys length-first: "body" (4), "format" (6), "attestation" (11).
    expected = (b"\xa3" + b"\x64body" + b"\x41B" + b"\x66format" + b"\x78\x1f"
                + CERTIFICATE_FORMAT.encode() + b"\x6battestation" + b"\x41A")
    assert data == expected
    assert decode_envelope(data) == (b"B", b"A")


def test_archived_certificate_verifies_at_its_own_time(ca: LocalCa) -> None:
    then = datetime.now(UTC) - timedelta(days=30)
    nsm = new_nsm(ca, clock=lambda: then)
    body = make_body(started_at=format_time(then - timedelta(hours=2)),
                     finished_at=format_time(then - timedelta(minutes=1)))
    # The leaf expired ~30 days ago: verifying "now" would fail, at the document time it holds.
    verified = verify_certificate(issue_certificate(body, nsm), root_der=ca.root_der, policy=PINNED)
    assert verified.attested_at == then.replace(microsecond=then.microsecond // 1000 * 1000)


# --- binding: every field of the body is covered ------------------------------------------


def _leaf_paths(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaf_paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _leaf_paths(item, (*path, index))
    else:
        yield path


def _tampered_leaf(value: Any) -> Any:
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value * 1.5 + 1e-3
    if isinstance(value, str):
        return value[:-1] + ("0" if value[-1:] != "0" else "1")
    if value is None:
        return {"sealed_sha256": "00" * 32, "step": 1}  # a fresh run passed off as a resume
    raise AssertionError(f"unexpected leaf {value!r}")


def _set(wire: Any, path: tuple[Any, ...], value: Any) -> None:
    for step in path[:-1]:
        wire = wire[step]
    wire[path[-1]] = value


def _body_variants(body_bytes: bytes) -> Iterator[tuple[str, bytes]]:
    wire = cbor2.loads(body_bytes)
    for path in _leaf_paths(wire):
        changed = cbor2.loads(body_bytes)
        leaf = changed
        for step in path:
            leaf = leaf[step]
        _set(changed, path, _tampered_leaf(leaf))
        yield "/".join(map(str, path)), dumps_f64(changed)
    for key, value in wire.items():
        if isinstance(value, (list, dict)) and value:
            changed = cbor2.loads(body_bytes)
            changed[key] = type(value)()
            yield f"{key} emptied", dumps_f64(changed)
        if isinstance(value, list) and value:
            changed = cbor2.loads(body_bytes)
            changed[key] = value + value[:1]
            yield f"{key} extended", dumps_f64(changed)
    changed = cbor2.loads(body_bytes)
    changed["pcrs"][5] = "00" * 48
    yield "pcrs added", dumps_f64(changed)


def test_every_body_field_is_bound(ca: LocalCa, nsm: MockNsm) -> None:
    data = issue_certificate(make_body(), nsm)
    body_bytes, attestation = decode_envelope(data)
    top_level = set(cbor2.loads(body_bytes))
    touched: set[str] = set()
    count = 0
    for name, tampered in _body_variants(body_bytes):
        assert tampered != body_bytes, name
        with pytest.raises(CertificateBindingError):
            verify_certificate(encode_envelope(tampered, attestation), root_der=ca.root_der, policy=PINNED)
        touched.add(name.split("/")[0].split(" ")[0])
        count += 1
    assert touched == top_level and len(top_level) == 24
    assert count > 40


def test_swapped_attestation_is_refused(ca: LocalCa, nsm: MockNsm) -> None:
    first = issue_certificate(make_body(job_id="job-a"), nsm)
    second = issue_certificate(make_body(job_id="job-b"), nsm)
    body_a, _ = decode_envelope(first)
    _, attestation_b = decode_envelope(second)
    with pytest.raises(CertificateBindingError):
        verify_certificate(encode_envelope(body_a, attestation_b), root_der=ca.root_der, policy=PINNED)


def test_document_without_user_data_is_refused(ca: LocalCa, nsm: MockNsm) -> None:
    body_bytes = encode_body(make_body())
    with pytest.raises(CertificateBindingError):
        verify_certificate(encode_envelope(body_bytes, nsm.attest()), root_der=ca.root_der, policy=PINNED)


# --- attestation --------------------------------------------------------------------------


def test_certificate_from_another_ca_is_refused(ca: LocalCa, other_ca: LocalCa) -> None:
    data = issue_certificate(make_body(), new_nsm(other_ca))
    verify_certificate(data, root_der=other_ca.root_der, policy=PINNED)  # fine under its own root
    with pytest.raises(AttestationError):
        verify_certificate(data, root_der=ca.root_der, policy=PINNED)


def test_mock_certificate_fails_under_the_aws_root(nsm: MockNsm) -> None:
    with pytest.raises(AttestationError):
        verify_certificate(issue_certificate(make_body(), nsm), policy=PINNED)


def test_policy_pcrs_must_match(ca: LocalCa, nsm: MockNsm) -> None:
    data = issue_certificate(make_body(), nsm)
    verify_certificate(data, root_der=ca.root_der,
                       policy=AttestationPolicy.from_pcrs({0: PCRS[0], 3: PCRS[3]}))
    with pytest.raises(PcrMismatch):
        verify_certificate(data, root_der=ca.root_der,
                           policy=AttestationPolicy.from_pcrs({0: bytes(48)}))


def test_body_pcrs_differing_from_the_document(ca: LocalCa, nsm: MockNsm) -> None:
    body = make_body()
    wrong = replace(body, pcrs={**body.pcrs, 3: "ab" * 48})
    with pytest.raises(CertificatePcrMismatch):
        issue_certificate(wrong, nsm)  # the enclave refuses to sign it...
    with pytest.raises(CertificatePcrMismatch, match="PCR3"):
        verify_certificate(assemble(wrong, nsm), root_der=ca.root_der, policy=PINNED)  # ...and verifiers too
    other_image = replace(body, pcrs={**body.pcrs, 0: "cd" * 48})
    with pytest.raises(CertificatePcrMismatch, match="PCR0"):
        verify_certificate(assemble(other_image, nsm), root_der=ca.root_der, policy=PINNED)
    no_pcr2 = replace(body, pcrs={i: v for i, v in body.pcrs.items() if i != 2})
    with pytest.raises(CertificatePcrMismatch, match="PCR2"):
        verify_certificate(assemble(no_pcr2, nsm), root_der=ca.root_der, policy=PINNED)


def test_debug_enclave_is_refused_unless_allowed(ca: LocalCa) -> None:
    nsm = MockNsm(ca, {3: PCRS[3]}, debug=True)
    body = make_body(pcrs={0: "00" * 48, 1: "00" * 48, 2: "00" * 48, 3: PCRS[3].hex()})
    data = issue_certificate(body, nsm)
    # A debug enclave's PCR0 is zero: pinning it is the explicit choice allow_debug is for.
    zero = AttestationPolicy.from_pcrs({0: bytes(48)})
    with pytest.raises(DebugEnclaveCertificate):
        verify_certificate(data, root_der=ca.root_der, policy=zero)
    assert verify_certificate(data, root_der=ca.root_der, policy=zero, allow_debug=True).body == body


# --- privacy numbers ----------------------------------------------------------------------


@pytest.mark.parametrize("accountant", ["prv", "rdp"])
def test_legitimately_attested_low_epsilon_is_refused(
    ca: LocalCa, nsm: MockNsm, accountant: str
) -> None:
    body = make_body()
    truth = body.epsilon[accountant]
    lowered = replace(body, epsilon={**body.epsilon, accountant: truth * 0.999})
    data = issue_certificate(lowered, nsm)  # consistent and within budget: the enclave signs it
    with pytest.raises(StatedEpsilonTooLow, match=accountant):
        verify_certificate(data, root_der=ca.root_der, policy=PINNED)


def test_epsilon_tolerance_and_conservative_statements(ca: LocalCa, nsm: MockNsm) -> None:
    body = make_body()
    truth = body.epsilon["prv"]
    within = replace(body, epsilon={**body.epsilon, "prv": truth * (1 - 1e-8)})
    assert verify_certificate(issue_certificate(within, nsm), root_der=ca.root_der, policy=PINNED).epsilon == truth
    beyond = replace(body, epsilon={**body.epsilon, "prv": truth * (1 - 1e-5)})
    with pytest.raises(StatedEpsilonTooLow):
        verify_certificate(issue_certificate(beyond, nsm), root_der=ca.root_der, policy=PINNED)
    # Overstating is allowed; the verifier still reports what it recomputed.
    higher = replace(body, epsilon={"prv": truth * 2})
    verified = verify_certificate(issue_certificate(higher, nsm), root_der=ca.root_der, policy=PINNED)
    assert verified.epsilon == truth


def test_over_budget_is_refused_by_issuer_and_verifier(ca: LocalCa, nsm: MockNsm) -> None:
    body = make_body()
    over = replace(body, epsilon={**body.epsilon, "prv": MAX_EPSILON * 1.01})
    with pytest.raises(BudgetExceeded):
        issue_certificate(over, nsm)
    with pytest.raises(BudgetExceeded):
        verify_certificate(assemble(over, nsm), root_der=ca.root_der, policy=PINNED)


def test_recomputed_epsilon_above_budget_is_refused(ca: LocalCa, nsm: MockNsm) -> None:
    # A ledger whose true epsilon exceeds the sealed budget, stated as if it fit.
    ledger = [{"q": 0.5, "sigma": 0.6, "steps": 200}]
    body = make_body(ledger=ledger, sampling_rate=0.5, noise_multiplier=0.6,
                     epsilon={"prv": MAX_EPSILON, "rdp": MAX_EPSILON}, metrics=())
    assert recompute_epsilon(ledger, body.delta, "prv") > MAX_EPSILON
    with pytest.raises((StatedEpsilonTooLow, BudgetExceeded)):
        verify_certificate(assemble(body, nsm), root_der=ca.root_der, policy=PINNED)


def test_inconsistent_body_is_refused_by_issuer_and_verifier(ca: LocalCa, nsm: MockNsm) -> None:
    body = replace(make_body(), steps=99)
    calls: list[bytes | None] = []
    original = nsm.attest

    def counting(**kwargs: Any) -> bytes:
        calls.append(kwargs.get("user_data"))
        return original(**kwargs)

    nsm.attest = counting  # type: ignore[method-assign]
    with pytest.raises(InconsistentCertificate):
        issue_certificate(body, nsm)
    assert calls == []  # refused before anything was signed
    with pytest.raises(InconsistentCertificate):
        verify_certificate(assemble(body, nsm), root_der=ca.root_der, policy=PINNED)


def test_finished_after_attestation_is_refused(ca: LocalCa, nsm: MockNsm) -> None:
    later = datetime.now(UTC) + timedelta(hours=1)
    body = make_body(finished_at=format_time(later))
    with pytest.raises(InconsistentCertificate, match="finished_at"):
        verify_certificate(issue_certificate(body, nsm), root_der=ca.root_der, policy=PINNED)


# --- malformed files ----------------------------------------------------------------------


def test_truncated_files_are_malformed(ca: LocalCa, nsm: MockNsm) -> None:
    data = issue_certificate(make_body(), nsm)
    for cut in [0, 1, 2, 10, len(data) // 3, len(data) // 2, len(data) - 97, len(data) - 1]:
        with pytest.raises(MalformedCertificate):
            verify_certificate(data[:cut], root_der=ca.root_der, policy=PINNED)


def test_envelope_shape_is_strict(ca: LocalCa, nsm: MockNsm) -> None:
    body_bytes, attestation = decode_envelope(issue_certificate(make_body(), nsm))
    bad = [
        dumps_f64({"format": "other", "body": body_bytes, "attestation": attestation}),
        dumps_f64({"format": CERTIFICATE_FORMAT, "body": body_bytes}),
        dumps_f64({"format": CERTIFICATE_FORMAT, "body": body_bytes,
                         "attestation": attestation, "x": 1}),
        dumps_f64({"format": CERTIFICATE_FORMAT, "body": list(body_bytes[:5]),
                         "attestation": attestation}),
        dumps_f64([CERTIFICATE_FORMAT, body_bytes, attestation]),
        cbor2.dumps({"attestation": attestation, "body": body_bytes, "format": CERTIFICATE_FORMAT}),
        encode_envelope(body_bytes, attestation) + b"\x00",
    ]
    for data in bad:
        with pytest.raises(MalformedCertificate):
            verify_certificate(data, root_der=ca.root_der, policy=PINNED)


def test_garbage_attestation_is_an_attestation_error(ca: LocalCa) -> None:
    body_bytes = encode_body(make_body())
    with pytest.raises(AttestationError):
        verify_certificate(encode_envelope(body_bytes, b"\x84\x40\xa0\x40\x40"), root_der=ca.root_der, policy=PINNED)


@pytest.fixture(scope="module")
def valid_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, bytes]:
    ca = LocalCa.load_or_create(tmp_path_factory.mktemp("hypothesis-ca"))
    return issue_certificate(make_body(epsilon={"prv": 1.0, "rdp": 1.25}), new_nsm(ca)), ca.root_der


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.data())
def test_mutated_files_raise_only_hermetic_errors(valid_file: tuple[bytes, bytes],
                                                  data: st.DataObject) -> None:
    original, root = valid_file
    mutated = bytearray(original)
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(mutated) - 1))
        mutated[position] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(len(mutated) // 2, len(mutated)))
    try:
        verify_certificate(bytes(mutated[:cut]), root_der=root, policy=PINNED)
    except HermeticError:
        return
    assert bytes(mutated[:cut]) == original  # only the unchanged file may verify


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_raise_only_hermetic_errors(blob: bytes) -> None:
    with pytest.raises(HermeticError):
        verify_certificate(blob, policy=PINNED)


def test_a_datasets_stated_epsilon_below_the_recomputed_at_its_delta_is_refused(ca: LocalCa, nsm: MockNsm) -> None:
    body = make_body()
    record = body.datasets[0]
    truth = recompute_epsilon(body.ledger, 1e-5, "prv")
    assert record.epsilon == pytest.approx(truth)
    low = replace(body, datasets=(dataclasses.replace(record, epsilon=truth * 0.9),))
    with pytest.raises(StatedEpsilonTooLow, match="dataset 'patients-2024'"):
        verify_certificate(assemble(low, nsm), root_der=ca.root_der, policy=PINNED)
