"""An arbitrary enclave image issues a certificate with absurd privacy claims.

The Nitro root signs documents for every enclave, so a chain and a signature that
verify say nothing about which code wrote the certificate: only the image
measurement (PCR0) does. The attacker here runs its own image (other PCRs, same
root) and states sigma 1000 and epsilon 1e-4, a body that is internally consistent.
A verifier that is not told which image to expect must refuse to call it valid.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from enclave.certificate.issue import issue_certificate
from parent.cli import main
from parent.local.local_ca import LocalCa
from parent.local.mock_nsm import MockNsm
from parent.verify.certificate import verify_certificate
from parent.verify.errors import ImageNotPinned, PcrMismatch
from parent.verify.policy import AttestationPolicy
from tests.support.certificates import PCRS, make_body, new_nsm

# The attacker's own image: every measurement differs from the published one.
ATTACKER_PCRS = {index: hashlib.sha384(b"attacker image " + bytes([index])).digest() for index in range(5)}
ABSURD_Q, ABSURD_SIGMA, ABSURD_STEPS, ABSURD_EPSILON = 0.001, 1000.0, 100, 1e-4


def absurd_certificate(ca: LocalCa) -> bytes:
    ledger = [{"q": ABSURD_Q, "sigma": ABSURD_SIGMA, "steps": ABSURD_STEPS}]
    body = make_body(
        pcrs={index: ATTACKER_PCRS[index].hex() for index in (0, 1, 2, 3)},
        ledger=ledger, sampling_rate=ABSURD_Q, noise_multiplier=ABSURD_SIGMA,
        epsilon={"prv": ABSURD_EPSILON},
    )
    return issue_certificate(body, MockNsm(ca, dict(ATTACKER_PCRS)))


@pytest.fixture()
def files(ca: LocalCa, tmp_path: Path) -> dict[str, Path]:
    paths = {name: tmp_path / name for name in
             ("absurd.cert", "genuine.cert", "root.pem", "measurements.json", "absurd.doc")}
    paths["absurd.cert"].write_bytes(absurd_certificate(ca))
    paths["genuine.cert"].write_bytes(issue_certificate(make_body(), new_nsm(ca)))
    paths["root.pem"].write_bytes(ca.root_pem)
    # What the release publishes for the genuine image (nitro-cli describe-eif's shape).
    paths["measurements.json"].write_text(json.dumps(
        {"Measurements": {"HashAlgorithm": "Sha384 { ... }", **{f"PCR{i}": PCRS[i].hex() for i in (0, 1, 2)}}}))
    paths["absurd.doc"].write_bytes(MockNsm(ca, dict(ATTACKER_PCRS)).attest(user_data=b"anything"))
    return paths


def one_line(err: str) -> str:
    assert err.startswith("hermetic: error: ") and err.count("\n") == 1
    return err


def test_the_absurd_certificate_is_authentic_under_the_root(ca: LocalCa) -> None:
    # The premise: chain, signature, binding and accounting all hold; only the image is wrong.
    policy = AttestationPolicy.from_pcrs({0: ATTACKER_PCRS[0]})
    verified = verify_certificate(absurd_certificate(ca), root_der=ca.root_der, policy=policy)
    assert verified.body.noise_multiplier == ABSURD_SIGMA
    assert verified.epsilon <= ABSURD_EPSILON


@pytest.mark.parametrize("command", ["verify-certificate", "verify-attestation"])
def test_without_a_pin_nothing_verifies(command: str, files: dict[str, Path],
                                        capsys: pytest.CaptureFixture[str]) -> None:
    subject = files["absurd.cert" if command == "verify-certificate" else "absurd.doc"]
    assert main([command, str(subject), "--root", str(files["root.pem"])]) == 1
    assert "image not pinned" in one_line(capsys.readouterr().err)
    assert main([command, str(subject), "--root", str(files["root.pem"]), "--json"]) == 1
    captured = capsys.readouterr()
    verdict = json.loads(captured.out)
    assert verdict == {"valid": False, "error": verdict["error"], "error_type": "ImageNotPinned", "code": "config"}
    assert "image not pinned" in verdict["error"]
    assert captured.err == f"hermetic: error: {verdict['error']}\n"


@pytest.mark.parametrize("command", ["verify-certificate", "verify-attestation"])
def test_pinning_pcrs_other_than_the_image_is_no_pin(command: str, files: dict[str, Path],
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    # PCR3 (the parent's IAM role) and PCR4 (the instance) are chosen by whoever runs the
    # enclave, PCR1 is the same for every image nitro-cli builds: none of them names the code.
    subject = files["absurd.cert" if command == "verify-certificate" else "absurd.doc"]
    argv = [command, str(subject), "--root", str(files["root.pem"]),
            "--pcr", f"1={ATTACKER_PCRS[1].hex()}", "--pcr", f"3={ATTACKER_PCRS[3].hex()}",
            "--pcr", f"4={ATTACKER_PCRS[4].hex()}"]
    assert main(argv) == 1
    assert "image not pinned" in one_line(capsys.readouterr().err)


def test_with_the_published_pin_the_absurd_certificate_fails_naming_pcr0(
        files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    pinned = ["--root", str(files["root.pem"]), "--measurements", str(files["measurements.json"])]
    assert main(["verify-certificate", str(files["absurd.cert"]), *pinned]) == 1
    err = one_line(capsys.readouterr().err)
    assert "PCR0 differs" in err and ATTACKER_PCRS[0].hex()[:8] in err and PCRS[0].hex()[:8] in err
    assert main(["verify-attestation", str(files["absurd.doc"]), *pinned]) == 1
    assert "PCR0 differs" in one_line(capsys.readouterr().err)
    # The genuine image's certificate passes the same pin.
    assert main(["verify-certificate", str(files["genuine.cert"]), *pinned, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["valid"] is True and report["pcrs"]["0"] == PCRS[0].hex()


def test_a_wrong_pin_fails_naming_the_pcr(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    wrong = "ab" * 48
    assert main(["verify-certificate", str(files["genuine.cert"]), "--root", str(files["root.pem"]),
                 "--pcr", f"0={wrong}", "--json"]) == 1
    verdict = json.loads(capsys.readouterr().out)
    assert verdict["valid"] is False and verdict["error_type"] == "PcrMismatch"
    assert verdict["error"].startswith("PCR0 differs: expected abababab...abababab, attested ")


def test_the_library_refuses_an_unpinned_policy(ca: LocalCa) -> None:
    data = absurd_certificate(ca)
    for policy in (None,
                   AttestationPolicy(nonce=b"n"),
                   AttestationPolicy.from_pcrs({3: ATTACKER_PCRS[3]}),
                   # One alternative without PCR0 would admit any image whose PCR3 matches.
                   AttestationPolicy.from_pcrs({0: PCRS[0]}, {3: ATTACKER_PCRS[3]})):
        with pytest.raises(ImageNotPinned, match="image not pinned"):
            verify_certificate(data, root_der=ca.root_der, policy=policy)  # type: ignore[arg-type]  # None on purpose
    with pytest.raises(PcrMismatch, match="PCR0"):
        verify_certificate(data, root_der=ca.root_der, policy=AttestationPolicy.from_pcrs({0: PCRS[0]}))
