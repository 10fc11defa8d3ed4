"""Body versions 7 and 8: versions 5 and 6 plus the audit chain's head and count."""
from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from enclave.certificate.body import (
    AUDITED_BODY_VERSION,
    AUDITED_SEARCH_BODY_VERSION,
    BODY_VERSION,
    SEARCH_BODY_VERSION,
    CertificateBody,
    SearchRecord,
    encode_body,
    wire_map,
)
from enclave.certificate.checks import check_body
from enclave.certificate.errors import CertificateError, MalformedCertificate
from enclave.hazmat.cbor import dumps_f64
from parent.verify.body import decode_body
from tests.enclave.certificate.test_body import KAT_HEX, _kat_body
from tests.support.certificates import make_body

HEAD = "ab" * 32


def _audited(**overrides: Any) -> CertificateBody:
    fields: dict[str, Any] = {"version": AUDITED_BODY_VERSION, "audit_log_sha256": HEAD, "audit_log_events": 12}
    return make_body(**(fields | overrides))


def _search() -> SearchRecord:
    return SearchRecord(distribution="poisson", mean=4.0, shape=None, grid={"lr": (0.1, 0.2)},
                        runs=({"q": 0.01, "sigma": 1.1, "steps": 10},), metric="acc", trials=2,
                        selected={"lr": 0.1}, score=0.5)


def test_version_5_known_answer_is_unchanged_and_still_decodes() -> None:
    assert encode_body(_kat_body()).hex() == KAT_HEX
    assert decode_body(bytes.fromhex(KAT_HEX)).audit_log_sha256 is None


def test_version_7_adds_exactly_the_two_fields_and_round_trips() -> None:
    plain, audited = make_body(), _audited()
    added = set(wire_map(audited)) - set(wire_map(plain))
    assert added == {"audit_log_sha256", "audit_log_events"}
    assert wire_map(audited)["version"] == 7
    data = encode_body(audited)
    assert decode_body(data) == audited and encode_body(decode_body(data)) == data
    check_body(audited)


def test_version_follows_search_and_audit_trail() -> None:
    assert CertificateBody.version_for(search=False, audited=False) == BODY_VERSION == 5
    assert CertificateBody.version_for(search=True, audited=False) == SEARCH_BODY_VERSION == 6
    assert CertificateBody.version_for(search=False, audited=True) == AUDITED_BODY_VERSION == 7
    assert CertificateBody.version_for(search=True, audited=True) == AUDITED_SEARCH_BODY_VERSION == 8
    body = _audited()
    searched = dataclasses.replace(body, version=8, search=_search())
    assert decode_body(encode_body(searched)) == searched


@pytest.mark.parametrize("change", [
    lambda b: dataclasses.replace(b, version=5),  # the fields under the old version
    lambda b: dataclasses.replace(b, version=8),  # a search version with no search
    lambda b: dataclasses.replace(b, audit_log_events=None),  # one of the two alone
    lambda b: dataclasses.replace(b, version=5, audit_log_sha256=None),
    lambda b: dataclasses.replace(b, audit_log_events=True),
    lambda b: dataclasses.replace(b, audit_log_sha256=""),
])
def test_inconsistent_versions_and_fields_are_refused(change: Any) -> None:
    with pytest.raises(MalformedCertificate):
        change(_audited())


@pytest.mark.parametrize("mutate", [
    lambda w: w.pop("audit_log_events"),
    lambda w: w.update(version=5),
    lambda w: w.update(audit_log_events=-1),
    lambda w: w.update(audit_log_sha256=bytes(32)),
    lambda w: (w.pop("audit_log_sha256"), w.pop("audit_log_events"), w.update(version=7)),
])
def test_decoder_refuses_mismatched_keys_and_versions(mutate: Any) -> None:
    wire = wire_map(_audited())
    mutate(wire)
    with pytest.raises(MalformedCertificate):
        decode_body(dumps_f64(wire))


@pytest.mark.parametrize("head, events", [("AB" * 32, 12), ("ab" * 16, 12), (HEAD, 1)])
def test_checks_want_a_sha256_head_and_at_least_two_events(head: str, events: int) -> None:
    with pytest.raises(CertificateError):
        check_body(_audited(audit_log_sha256=head, audit_log_events=events))
