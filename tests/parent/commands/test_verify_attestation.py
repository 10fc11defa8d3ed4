"""`hermetic verify-attestation` through the real CLI entry point: exit codes 0/1/2."""
from __future__ import annotations

import base64
import io
import json
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from enclave.attestation.document import parse_attestation
from parent.cli import main
from parent.commands.verify_attestation import decode_document_text
from tests.support.attestation_chain import AT, default_pcrs, make_chain, make_document
from tests.support.vectors import AWS_ATTESTATION

FIXTURES = AWS_ATTESTATION
RECENT = FIXTURES / "aws_2026_indefinite_map.cbor"
BRAVE = FIXTURES / "aws_2022_brave_definite_map.cbor"
RECENT_DOC = parse_attestation(RECENT.read_bytes())
ZERO48 = "00" * 48
# Every verification names the image (PCR0); the tests below pin each document's own.
PIN = ("--pcr", f"0={RECENT_DOC.pcrs[0].hex()}")
PIN_SYNTHETIC = ("--pcr", f"0={default_pcrs()[0].hex()}")
PIN_DEBUG = ("--pcr", f"0={ZERO48}")  # debug-mode enclaves attest zero PCR0/1/2
NULL_FIELDS = FIXTURES / "aws_2021_uid2_null_fields.cbor"
PIN_NULL = ("--pcr", f"0={parse_attestation(NULL_FIELDS.read_bytes()).pcrs[0].hex()}")


def run(*argv: str) -> int:
    return main(["verify-attestation", *argv])


def usage_error(*argv: str) -> None:
    with pytest.raises(SystemExit) as exc:
        run(*argv)
    assert exc.value.code == 2


def test_real_document_at_its_own_timestamp(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(str(RECENT), *PIN, "--at", "document") == 0
    out = capsys.readouterr().out
    assert "VALID" in out
    assert RECENT_DOC.module_id in out
    assert f"PCR0:       {RECENT_DOC.pcrs[0].hex()}" in out
    assert "PCR8:" in out
    assert "aws.nitro-enclaves -> " in out
    assert "nonce (20 bytes)" in out


def test_real_document_now_is_invalid(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(str(RECENT), *PIN) == 1
    err = capsys.readouterr().err
    assert err.startswith("hermetic: error: ") and "expired" in err
    assert err.count("\n") == 1


def test_debug_mode_is_pointed_out(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(str(BRAVE), *PIN_DEBUG, "--at", "document") == 0
    out = capsys.readouterr().out
    assert "debug mode" in out
    assert "public_key (0 bytes)" in out


def test_json_output(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(str(RECENT), *PIN, "--at", "document", "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["valid"] is True
    assert report["module_id"] == RECENT_DOC.module_id
    assert report["timestamp"] == "2026-02-02T20:43:47.502+00:00"
    assert report["digest"] == "SHA384"
    assert report["pcrs"]["0"] == RECENT_DOC.pcrs[0].hex()
    assert len(report["pcrs"]) == 16
    assert report["nonce"] == "0123456789abcdef0123456789abcdef01234567"
    assert report["public_key"] == b"dummy".hex()
    assert report["certificate"]["subject"].startswith("CN=i-0340e0cb833504eb6-enc019c12d31f78864d")
    assert report["chain"][0] == "CN=aws.nitro-enclaves,OU=AWS,O=Amazon,C=US"
    assert len(report["chain"]) == 5


def test_json_null_fields(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(str(NULL_FIELDS), *PIN_NULL, "--at", "document", "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["user_data"] is None and report["nonce"] is None and report["public_key"] is None


def test_json_failure_is_machine_readable(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(str(RECENT), *PIN, "--json") == 1
    captured = capsys.readouterr()
    verdict = json.loads(captured.out)
    assert verdict == {"valid": False, "error": verdict["error"], "error_type": "CertificateExpired",
                       "code": "attestation"}
    assert captured.err == f"hermetic: error: {verdict['error']}\n"


@pytest.mark.parametrize("encoding", ["base64", "base64-wrapped", "base64-urlsafe", "hex"])
def test_text_encodings_are_detected(tmp_path: Path, encoding: str) -> None:
    raw = RECENT.read_bytes()
    text = {
        "base64": base64.b64encode(raw),
        "base64-wrapped": base64.encodebytes(raw),
        "base64-urlsafe": base64.urlsafe_b64encode(raw).rstrip(b"="),
        "hex": raw.hex().encode() + b"\n",
    }[encoding]
    path = tmp_path / "doc.txt"
    path.write_bytes(text)
    assert decode_document_text(text) == raw
    assert run(str(path), *PIN, "--at", "document") == 0


def test_stdin(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    stdin = io.TextIOWrapper(io.BytesIO(base64.b64encode(RECENT.read_bytes())))
    monkeypatch.setattr(sys, "stdin", stdin)
    assert run("-", *PIN, "--at", "document", "--json") == 0
    assert json.loads(capsys.readouterr().out)["valid"] is True


def test_pcr_requirements() -> None:
    pcr0, pcr1 = RECENT_DOC.pcrs[0].hex(), RECENT_DOC.pcrs[1].hex()
    assert run(str(RECENT), "--at", "document", "--pcr", f"0={pcr0}", "--pcr", f"1={pcr1}") == 0
    assert run(str(RECENT), "--at", "document", "--pcr", f"0={pcr0}", "--pcr", f"1={ZERO48}") == 1
    assert run(str(RECENT), "--at", "document", "--pcr", f"0=0x{pcr0.upper()}") == 0
    # PCR1 alone is shared by every image one nitro-cli version builds: no pin.
    assert run(str(RECENT), "--at", "document", "--pcr", f"1={pcr1}") == 1


def test_measurements_file_pins_the_image(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    measurements = tmp_path / "measurements.json"
    pcrs = {f"PCR{i}": RECENT_DOC.pcrs[i].hex() for i in (0, 1, 2)}
    measurements.write_text(json.dumps({"Measurements": {"HashAlgorithm": "Sha384 { ... }", **pcrs}}))
    assert run(str(RECENT), "--at", "document", "--measurements", str(measurements), "--json") == 0
    assert json.loads(capsys.readouterr().out)["pinned_pcrs"] == [0, 1, 2]
    measurements.write_text(json.dumps({"Measurements": {**pcrs, "PCR2": ZERO48}}))
    assert run(str(RECENT), "--at", "document", "--measurements", str(measurements)) == 1
    assert "PCR2 differs" in capsys.readouterr().err
    measurements.write_text(json.dumps({"Measurements": {"PCR1": pcrs["PCR1"]}}))
    assert run(str(RECENT), "--at", "document", "--measurements", str(measurements)) == 1
    assert "image not pinned" in capsys.readouterr().err
    # The same PCR from both sources must agree: a usage error otherwise.
    usage_error(str(RECENT), "--measurements", str(measurements), "--pcr", f"1={ZERO48}")


def test_pcr_mismatch_names_the_pcr_and_both_values(capsys: pytest.CaptureFixture[str]) -> None:
    pcr0, pcr1 = RECENT_DOC.pcrs[0].hex(), RECENT_DOC.pcrs[1].hex()
    assert run(str(RECENT), "--at", "document", "--pcr", f"0={pcr0}", "--pcr", f"1={ZERO48}") == 1
    assert capsys.readouterr().err == (f"hermetic: error: PCR1 differs: expected 00000000...00000000, "
                                       f"attested {pcr1[:8]}...{pcr1[-8:]}\n")


def test_nonce_user_data_public_key() -> None:
    nonce = RECENT_DOC.nonce.hex()  # type: ignore[union-attr]
    user_data = RECENT_DOC.user_data.hex()  # type: ignore[union-attr]
    assert run(str(RECENT), *PIN, "--at", "document", "--nonce", nonce, "--user-data", user_data,
               "--public-key", b"dummy".hex()) == 0
    assert run(str(RECENT), *PIN, "--at", "document", "--nonce", "00" * 20) == 1
    assert run(str(RECENT), *PIN, "--at", "document", "--user-data", "") == 1
    assert run(str(RECENT), *PIN, "--at", "document", "--public-key", "00") == 1


def test_max_age(capsys: pytest.CaptureFixture[str]) -> None:
    later = (RECENT_DOC.timestamp + timedelta(hours=2)).isoformat()
    assert run(str(RECENT), *PIN, "--at", later) == 0
    assert run(str(RECENT), *PIN, "--at", later, "--max-age", "60") == 1
    assert "older than" in capsys.readouterr().err
    assert run(str(RECENT), *PIN, "--at", later, "--max-age", str(3 * 3600)) == 0


def test_at_iso_without_offset_is_utc() -> None:
    naive = (RECENT_DOC.timestamp + timedelta(minutes=1)).replace(tzinfo=None).isoformat()
    assert run(str(RECENT), *PIN, "--at", naive) == 0
    assert run(str(RECENT), *PIN, "--at", "2026-02-02T20:00:00Z") == 1  # before the leaf was issued


def test_custom_root_with_synthetic_chain(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    chain = make_chain()
    doc = tmp_path / "doc.cbor"
    doc.write_bytes(make_document(chain, user_data=b"u"))
    root_pem = tmp_path / "root.pem"
    root_pem.write_bytes(chain.root.pem)
    root_der = tmp_path / "root.der"
    root_der.write_bytes(chain.root.der)
    at = AT.isoformat()
    assert run(str(doc), *PIN_SYNTHETIC, "--root", str(root_pem), "--at", at) == 0
    assert run(str(doc), *PIN_SYNTHETIC, "--root", str(root_der), "--at", at) == 0
    capsys.readouterr()
    assert run(str(doc), *PIN_SYNTHETIC, "--at", at) == 1  # default root is AWS: refused
    assert "pinned root" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["--pcr", "0=zz"],
        ["--pcr", "0"],
        ["--pcr", "x=00"],
        ["--pcr", "32=" + ZERO48],
        ["--pcr", "0=" + "00" * 47],
        ["--pcr", "0=" + ZERO48, "--pcr", "0=" + "11" * 48],
        ["--nonce", "abc"],
        ["--user-data", "xyz0"],
        ["--at", "yesterday"],
        ["--at", "2026-13-01T00:00:00"],
        ["--max-age", "-5"],
        ["--max-age", "soon"],
        ["--max-age", "nan"],
    ],
)
def test_usage_errors_exit_2(argv: list[str]) -> None:
    usage_error(str(RECENT), *argv)


def test_missing_document_argument() -> None:
    usage_error()


def test_unreadable_inputs_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(str(tmp_path / "missing.cbor"), *PIN) == 1
    assert "cannot read" in capsys.readouterr().err
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"\x00\x01garbage")
    assert run(str(garbage), *PIN) == 1
    assert run(str(garbage), *PIN, "--at", "document") == 1
    assert run(str(RECENT), *PIN, "--root", str(tmp_path / "none.pem")) == 1
    assert run(str(RECENT), *PIN, "--root", str(garbage)) == 1
    huge = tmp_path / "huge"
    huge.write_bytes(b"A" * (1 << 17))
    assert run(str(huge), *PIN) == 1


def test_tampered_document_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = bytearray(RECENT.read_bytes())
    data[-1] ^= 0x01  # last signature byte
    path = tmp_path / "tampered.cbor"
    path.write_bytes(bytes(data))
    assert run(str(path), *PIN, "--at", "document") == 1
    assert "signature" in capsys.readouterr().err


def test_mock_enclave_documents_verify_against_the_local_root(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from parent.local.local_ca import LocalCa
    from parent.local.mock_nsm import MockNsm

    ca = LocalCa.load_or_create(tmp_path / "state")
    nsm = MockNsm(ca)
    nonce = b"\x01" * 16
    doc = tmp_path / "mock.cbor"
    doc.write_bytes(nsm.attest(nonce=nonce, user_data=b"job"))
    pcr0 = nsm.describe_pcr(0).value.hex()
    root = str(ca.root_cert_path)
    assert main(["verify-attestation", str(doc), "--root", root, "--pcr", f"0={pcr0}",
                 "--nonce", nonce.hex(), "--user-data", b"job".hex(), "--max-age", "60"]) == 0
    assert pcr0[:16] in capsys.readouterr().out
    # The pinned AWS root (the default) does not vouch for the local CA.
    assert main(["verify-attestation", str(doc), "--pcr", f"0={pcr0}"]) == 1
    assert "pinned root" in capsys.readouterr().err
    assert main(["verify-attestation", str(doc), "--root", root, "--pcr", "0=" + "00" * 48]) == 1
