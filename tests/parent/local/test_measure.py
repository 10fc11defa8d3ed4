"""PCR0/1/2 of the enclave package: EIF-style construction over the package's code."""
from __future__ import annotations

import hashlib
import shutil
import struct
from pathlib import Path

import pytest

from parent.local.measure import (
    APP_MAGIC,
    MeasurementError,
    app_stream,
    enclave_package_dir,
    image_sha384,
    measure_enclave_package,
    measure_stream,
    measured_files,
    pcr_of_text,
)

# Pinned so that an accidental change of the local boot constants is noticed: it
# would change every local PCR0 and PCR1 and every policy rendered from them.
PCR1_HEX = (
    "ae3fdc60d50fde62d138deee007152fc4093448bcc2636eeee2305f883cb4262"
    "666aed27a5065ffc91d151ea6a79b97b"
)


def _m(stream: bytes) -> bytes:
    return hashlib.sha384(b"\x00" * 48 + hashlib.sha384(stream).digest()).digest()


@pytest.fixture()
def package(tmp_path: Path) -> Path:
    copy = tmp_path / "enclave"
    shutil.copytree(
        enclave_package_dir(), copy, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    return copy


def test_measure_stream_is_the_eif_construction() -> None:
    # SHA384("") is a published constant; the PCR is one extend of zeros with it.
    sha384_empty = bytes.fromhex(
        "38b060a751ac96384cd9327eb1b1e36a21fdb71114be07434c0cc7bf63f6e1da"
        "274edebfe76f65fbd51ad2f14898b95b"
    )
    assert measure_stream(b"") == hashlib.sha384(bytes(48) + sha384_empty).digest()
    assert measure_stream(b"x") == _m(b"x") != measure_stream(b"")


def test_known_answer_for_a_tiny_package(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "__init__.py").write_bytes(b"")
    (tmp_path / "a" / "b.txt").write_bytes(b"hi")
    expected_app = (
        APP_MAGIC
        + struct.pack(">I", 11) + b"__init__.py" + struct.pack(">Q", 0)
        + struct.pack(">I", 7) + b"a/b.txt" + struct.pack(">Q", 2) + b"hi"
    )
    assert app_stream(tmp_path) == expected_app
    pcrs = measure_enclave_package(tmp_path)
    assert pcrs[1].hex() == PCR1_HEX
    assert pcrs[2] == _m(expected_app)
    boot = b"".join(
        [
            b"HERMETIC-LOCAL-KERNEL\x00v1\x00",
            b"reboot=k panic=30 pci=off nomodules console=ttyS0 init=/init\x00",
            b"HERMETIC-LOCAL-BOOTSTRAP\x00v1\x00exec python3 -m enclave\x00",
        ]
    )
    assert pcrs[0] == _m(boot + expected_app)
    assert pcrs[1] == _m(boot)


def test_default_is_the_installed_package(package: Path) -> None:
    pcrs = measure_enclave_package()
    assert sorted(pcrs) == [0, 1, 2]
    assert all(len(v) == 48 for v in pcrs.values())
    # Location-independent: a faithful copy measures the same.
    assert measure_enclave_package(package) == pcrs


def test_one_byte_change_changes_pcr0_and_pcr2_not_pcr1(package: Path) -> None:
    before = measure_enclave_package(package)
    target = package / "errors.py"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    after = measure_enclave_package(package)
    assert after[0] != before[0]
    assert after[2] != before[2]
    assert after[1] == before[1]


def test_added_renamed_and_data_files_count(package: Path) -> None:
    base = measure_enclave_package(package)[0]
    (package / "extra.json").write_text("{}")
    added = measure_enclave_package(package)[0]
    assert added != base
    (package / "extra.json").rename(package / "extra2.json")
    assert measure_enclave_package(package)[0] not in (base, added)


def test_caches_and_hidden_files_are_ignored(package: Path) -> None:
    base = measure_enclave_package(package)
    (package / "__pycache__").mkdir(exist_ok=True)
    (package / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\x00")
    (package / "stray.pyc").write_bytes(b"\x00")
    (package / ".swap").write_bytes(b"\x00")
    assert measure_enclave_package(package) == base
    names = [rel for rel, _ in measured_files(package)]
    assert names == sorted(names, key=lambda n: n.encode())
    assert "errors.py" in names and "__init__.py" in names


def test_missing_package_is_a_clean_error(tmp_path: Path) -> None:
    with pytest.raises(MeasurementError, match="does not exist"):
        measure_enclave_package(tmp_path / "nope")


def test_image_sha384_is_pcr0() -> None:
    pcrs = {0: b"\x01" * 48, 1: b"\x02" * 48, 2: b"\x03" * 48}
    assert image_sha384(pcrs) == b"\x01" * 48
    with pytest.raises(MeasurementError):
        image_sha384({1: b"\x02" * 48})
    with pytest.raises(MeasurementError):
        image_sha384({0: b"\x01" * 32})


def test_pcr_of_text_matches_aws_pcr3_recipe() -> None:
    arn = "arn:aws:iam::123456789012:role/hermetic-enclave"
    assert pcr_of_text(arn) == hashlib.sha384(b"\0" * 48 + arn.encode()).digest()
