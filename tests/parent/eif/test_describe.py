"""measure-eif --json against describe-eif's output, on hand-built EIFs.

The expected objects are written from nitro-cli's `EifDescribeInfo` and
`MetadataDescribeInfo` (src/common/json_output.rs) and the image-format crate's
`EifIdentityInfo` and `EifReader::check_crc`: key order, the flattened Metadata,
sorted nested keys (serde_json without preserve_order), and "CheckCRC": false with
the PCRs still computed when the CRC does not match.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from parent.cli import main
from parent.eif import read_eif_bytes
from parent.eif.errors import EifBadMetadata
from tests.parent.eif.helpers import CMDLINE, KERNEL, METADATA, RAMDISK, hand_built_eif, pcr

KERNEL_BYTES, CMD, BOOT, APP = b"bzImage!" * 16, b"reboot=k panic=30 pci=off", b"init+nsm", b"app rootfs"

# What nitro-cli build-enclave writes (serde_json of EifIdentityInfo, fields in struct
# order; DockerInfo is docker inspect's object, whose keys are not sorted here).
IDENTITY: dict[str, Any] = {
    "ImageName": "hermetic-enclave",
    "ImageVersion": "build",
    "BuildMetadata": {
        "BuildTime": "2026-01-01T00:00:00.000000000+00:00",
        "BuildTool": "nitro-cli",
        "BuildToolVersion": "1.4.2",
        "OperatingSystem": "Linux",
        "KernelVersion": "6.12.46",
    },
    "DockerInfo": {"RepoTags": ["hermetic-enclave:build"], "Id": "sha256:" + "ab" * 32,
                   "Config": {"User": "10001:10001", "Env": ["B=2", "A=1"]}, "Architecture": "amd64"},
    "CustomMetadata": {"zeta": "last", "AppVersion": "3.2", "nested": {"y": 1, "x": [{"b": 0, "a": 1}]}},
    "SomeFutureField": "ignored, as serde ignores unknown fields",
}


def image(identity: dict[str, Any] | None = IDENTITY) -> list[tuple[int, bytes]]:
    sections = [(KERNEL, KERNEL_BYTES), (CMDLINE, CMD)]
    if identity is not None:
        sections.append((METADATA, json.dumps(identity).encode()))
    return sections + [(RAMDISK, BOOT), (RAMDISK, APP)]


def expected_measurements(kernel: bytes = KERNEL_BYTES) -> dict[str, str]:
    return {
        "HashAlgorithm": "Sha384 { ... }",
        "PCR0": pcr(kernel + CMD + BOOT + APP),
        "PCR1": pcr(kernel + CMD + BOOT),
        "PCR2": pcr(APP),
    }


def test_metadata_is_flattened_like_describe_eif() -> None:
    out = read_eif_bytes(hand_built_eif(image())).describe()
    assert list(out) == ["EifVersion", "Measurements", "IsSigned", "CheckCRC", "ImageName", "ImageVersion",
                         "Metadata", "Header"]
    expected = {
        "EifVersion": 4,
        "Measurements": expected_measurements(),
        "IsSigned": False,
        "CheckCRC": True,
        "ImageName": "hermetic-enclave",
        "ImageVersion": "build",
        "Metadata": {
            "BuildTime": "2026-01-01T00:00:00.000000000+00:00",
            "BuildTool": "nitro-cli",
            "BuildToolVersion": "1.4.2",
            "OperatingSystem": "Linux",
            "KernelVersion": "6.12.46",
            "DockerInfo": {"Architecture": "amd64", "Config": {"Env": ["B=2", "A=1"], "User": "10001:10001"},
                           "Id": "sha256:" + "ab" * 32, "RepoTags": ["hermetic-enclave:build"]},
            "AppVersion": "3.2",
            "nested": {"x": [{"a": 1, "b": 0}], "y": 1},
            "zeta": "last",
        },
    }
    del out["Header"]
    assert out == expected
    # Same text as describe-eif's pretty printer, key order included (Header aside).
    assert json.dumps(out, indent=2) == json.dumps(expected, indent=2)
    assert "CustomMetadata" not in out["Metadata"] and "SomeFutureField" not in out


def test_null_custom_metadata_adds_nothing() -> None:
    identity = {**IDENTITY, "CustomMetadata": None}
    meta = read_eif_bytes(hand_built_eif(image(identity))).describe()["Metadata"]
    assert list(meta) == ["BuildTime", "BuildTool", "BuildToolVersion", "OperatingSystem", "KernelVersion",
                          "DockerInfo"]


def test_custom_key_named_like_a_build_field_wins_as_a_json_reader_sees_it() -> None:
    identity = {**IDENTITY, "CustomMetadata": {"BuildTool": "custom"}}
    meta = read_eif_bytes(hand_built_eif(image(identity))).describe()["Metadata"]
    assert meta["BuildTool"] == "custom" and list(meta)[1] == "BuildTool"


def test_image_without_metadata_has_no_identity_keys() -> None:
    out = read_eif_bytes(hand_built_eif(image(None))).describe()
    assert "ImageName" not in out and "ImageVersion" not in out and "Metadata" not in out
    assert out["Measurements"] == expected_measurements()


@pytest.mark.parametrize(("change", "reason"), [
    ({"ImageName": None}, "ImageName"),
    ({"ImageVersion": 3}, "ImageVersion"),
    ({"BuildMetadata": "nitro-cli"}, "BuildMetadata"),
    ({"BuildMetadata": {**IDENTITY["BuildMetadata"], "KernelVersion": 6}}, "KernelVersion"),
    ({"CustomMetadata": "a string"}, "CustomMetadata"),
    ({"CustomMetadata": [1, 2]}, "CustomMetadata"),
])
def test_metadata_nitro_cli_cannot_read_or_print_is_refused(change: dict[str, Any], reason: str) -> None:
    with pytest.raises(EifBadMetadata, match=reason):
        read_eif_bytes(hand_built_eif(image({**IDENTITY, **change})))


@pytest.mark.parametrize("missing", ["ImageName", "ImageVersion", "BuildMetadata", "DockerInfo", "CustomMetadata"])
def test_every_identity_field_is_required(missing: str) -> None:
    identity = {k: v for k, v in IDENTITY.items() if k != missing}
    with pytest.raises(EifBadMetadata, match=f"no {missing} field"):
        read_eif_bytes(hand_built_eif(image(identity)))


def test_null_docker_info_is_printed_as_null() -> None:
    meta = read_eif_bytes(hand_built_eif(image({**IDENTITY, "DockerInfo": None}))).describe()["Metadata"]
    assert meta["DockerInfo"] is None


# ------------------------------------------------------------------ CRC


def corrupt_kernel(data: bytes) -> tuple[bytes, bytes]:
    out = bytearray(data)
    out[548 + 12 + 5] ^= 0x40
    return bytes(out), bytes(out[548 + 12:548 + 12 + len(KERNEL_BYTES)])


def test_bad_crc_gives_check_crc_false_with_the_measurements(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    data, kernel = corrupt_kernel(hand_built_eif(image()))
    path = tmp_path / "bad-crc.eif"
    path.write_bytes(data)
    assert main(["measure-eif", str(path), "--json"]) == 1
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert out["CheckCRC"] is False
    assert out["Measurements"] == expected_measurements(kernel)
    assert out["Metadata"]["BuildTool"] == "nitro-cli"
    assert out["Header"]["Crc32"] != out["Header"]["HeaderCrc32"]
    assert captured.err.startswith("hermetic: error: CRC32 mismatch: header says ") and captured.err.count("\n") == 1


def test_bad_crc_in_text_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data, kernel = corrupt_kernel(hand_built_eif(image()))
    path = tmp_path / "bad-crc.eif"
    path.write_bytes(data)
    assert main(["measure-eif", str(path)]) == 1
    captured = capsys.readouterr()
    assert "CRC32 MISMATCH (header " in captured.out
    assert f"PCR0: {pcr(kernel + CMD + BOOT + APP)}" in captured.out
    assert "image hermetic-enclave build, built 2026-01-01T00:00:00.000000000+00:00 by nitro-cli 1.4.2" in captured.out
    assert captured.err.count("\n") == 1


def test_good_crc_exits_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "good.eif"
    path.write_bytes(hand_built_eif(image()))
    assert main(["measure-eif", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["CheckCRC"] is True
