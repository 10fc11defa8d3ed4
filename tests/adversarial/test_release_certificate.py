"""Attack: read more into a certificate than its accounting covers.

An epsilon means nothing without the neighbouring relation it is stated for. The
record count N is public (in the sealed file's encryption context, by the data owner's
declaration at sealing), so the relation must keep N fixed: zero-out neighbours (one
record replaced by a null record that contributes nothing), with the record as the
unit of privacy. For the Poisson-subsampled Gaussian its privacy curves equal
add/remove's, so the epsilons do not change. The body states both; the verifier
refuses a body that omits them or states another relation.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cbor2
import pytest

from enclave.certificate.body import NEIGHBOURING, PRIVACY_UNIT, encode_body
from enclave.certificate.errors import MalformedCertificate
from enclave.certificate.issue import issue_certificate
from enclave.hazmat.cbor import dumps_f64
from parent.cli import main
from parent.local.local_ca import LocalCa
from parent.verify.body import decode_body
from tests.support.certificates import PCRS, make_body, new_nsm


def test_the_body_states_the_unit_of_privacy_and_the_neighbouring_relation() -> None:
    assert (PRIVACY_UNIT, NEIGHBOURING) == ("record", "zero-out")
    wire = cbor2.loads(encode_body(make_body()))
    assert (wire["privacy_unit"], wire["neighbouring"]) == ("record", "zero-out")
    decoded = decode_body(encode_body(make_body()))
    assert (decoded.privacy_unit, decoded.neighbouring) == ("record", "zero-out")


@pytest.mark.parametrize(
    "change",
    [
        lambda w: w.pop("privacy_unit"),
        lambda w: w.pop("neighbouring"),
        lambda w: w.update(neighbouring="add-remove"),  # N is public: add/remove is not what holds
        lambda w: w.update(neighbouring="replace-one"),
        lambda w: w.update(privacy_unit="user"),
        lambda w: w.update(privacy_unit=1),
    ],
)
def test_the_verifier_refuses_a_body_without_them_or_with_another_relation(change: Any) -> None:
    wire = cbor2.loads(encode_body(make_body()))
    change(wire)
    with pytest.raises(MalformedCertificate):
        decode_body(dumps_f64(wire))


def test_the_enclave_cannot_issue_another_relation(ca: LocalCa) -> None:
    with pytest.raises(MalformedCertificate, match="zero-out"):
        make_body(neighbouring="add-remove")
    with pytest.raises(MalformedCertificate, match="record"):
        issue_certificate(make_body(privacy_unit="dataset"), new_nsm(ca))


def test_verify_certificate_shows_them(ca: LocalCa, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cert = tmp_path / "job.cert"
    cert.write_bytes(issue_certificate(make_body(), new_nsm(ca)))
    root = tmp_path / "root.pem"
    root.write_bytes(ca.root_pem)
    args = ["verify-certificate", str(cert), "--root", str(root), "--pcr", f"0={PCRS[0].hex()}"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "privacy unit: one record; zero-out neighbours" in out
    assert "record count is public" in out
    assert main([*args, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["privacy_unit"], report["neighbouring"]) == ("record", "zero-out")
