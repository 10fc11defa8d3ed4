"""`hermetic measure-eif` through the real CLI entry point: output shapes and exit codes 0/1/2."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from parent.cli import main
from parent.eif.writer import Signer, build_eif, pcr0_of, signature_section
from tests.parent.eif.helpers import CMDLINE, KERNEL, RAMDISK, SIGNATURE, hand_built_eif, pcr, self_signed

KERNEL_BYTES, CMD, BOOT, APP = b"bzImage" * 9, b"console=ttyS0", b"bootstrap", b"app layer"
EMPTY_PCR2 = "21b9efbc184807662e966d34f390821309eeac6802309798826296bf3e8bec7c10edb30948c90ba67310f7b964fc500a"


def write(tmp_path: Path, data: bytes, name: str = "image.eif") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_json_output_is_describe_eif_shaped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, build_eif(KERNEL_BYTES, CMD, [BOOT, APP]))
    assert main(["measure-eif", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["Measurements"] == {
        "HashAlgorithm": "Sha384 { ... }",
        "PCR0": pcr(KERNEL_BYTES + CMD + BOOT + APP),
        "PCR1": pcr(KERNEL_BYTES + CMD + BOOT),
        "PCR2": pcr(APP),
    }
    assert out["EifVersion"] == 4 and out["IsSigned"] is False and out["CheckCRC"] is True
    assert "SignatureCheck" not in out
    assert [s["Type"] for s in out["Header"]["Sections"]] == ["kernel", "cmdline", "metadata", "ramdisk", "ramdisk"]


def test_text_output_no_application_ramdisk(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, hand_built_eif([(KERNEL, KERNEL_BYTES), (CMDLINE, CMD), (RAMDISK, BOOT)]))
    assert main(["measure-eif", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"PCR2: {EMPTY_PCR2}" in out
    assert f"PCR0: {pcr(KERNEL_BYTES + CMD + BOOT)}" in out
    assert "PCR8" not in out and "CRC32" in out


def test_signed_image(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pem, key = self_signed()
    path = write(tmp_path, build_eif(KERNEL_BYTES, CMD, [BOOT, APP], signer=Signer(pem, key)))
    assert main(["measure-eif", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["IsSigned"] is True and out["SignatureCheck"] is True
    assert len(out["Measurements"]["PCR8"]) == 96
    assert main(["measure-eif", str(path)]) == 0
    assert "covers this image's PCR0" in capsys.readouterr().out


def test_signature_for_another_image_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pem, key = self_signed()
    other = signature_section(pcr0_of(b"another kernel", CMD, [BOOT]), Signer(pem, key))
    path = write(tmp_path, hand_built_eif([(KERNEL, KERNEL_BYTES), (CMDLINE, CMD), (RAMDISK, BOOT), (SIGNATURE, other)]))
    assert main(["measure-eif", str(path), "--json"]) == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out)["SignatureCheck"] is False
    assert "does not sign this image's PCR0" in captured.err


def test_bad_crc_exits_1_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = bytearray(build_eif(KERNEL_BYTES, CMD, [BOOT]))
    data[-1] ^= 0xFF
    path = write(tmp_path, bytes(data))
    assert main(["measure-eif", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("hermetic: error: CRC32 mismatch") and err.count("\n") == 1


def test_not_an_eif_and_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["measure-eif", str(write(tmp_path, b"\x7fELF" + bytes(600)))]) == 1
    assert "not an EIF file" in capsys.readouterr().err
    assert main(["measure-eif", str(tmp_path / "nope.eif")]) == 1
    assert "cannot read EIF" in capsys.readouterr().err


def test_usage_error() -> None:
    with pytest.raises(SystemExit) as exc:
        main(["measure-eif"])
    assert exc.value.code == 2
