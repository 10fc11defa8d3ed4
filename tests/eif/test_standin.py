"""Image -> EIF without nitro-cli: cpio ramdisks, OCI layouts, the stand-in EIF and its PCRs.

Small OCI layouts are written here by hand (the format is plain JSON and tar), so these
tests need neither buildah nor a kernel; `make eif-check` runs the same code on the
real enclave image.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from enclave.errors import ConfigError
from parent.eif import read_eif, read_eif_bytes
from parent.eif.measure import extend_zero
from parent.eif.ramdisk import CpioWriter, cpio_names, open_oci_image, write_app_ramdisk
from parent.eif.standin import (
    STANDIN_CMDLINE,
    STANDIN_KERNEL,
    build_standin_eif,
    main,
    standin_bootstrap_ramdisk,
)
from parent.eif.writer import build_eif, write_eif

EPOCH = 1767225600


def tar_layer(entries: list[tuple[str, str, bytes | str]]) -> bytes:
    """A layer tar from (kind, name, data-or-linkname) with kind in file/dir/sym/link/exe."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for kind, name, data in entries:
            info = tarfile.TarInfo(name)
            info.mtime = EPOCH
            if kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            elif kind == "sym":
                info.type, info.linkname, info.mode = tarfile.SYMTYPE, str(data), 0o777
                tar.addfile(info)
            elif kind == "link":
                info.type, info.linkname, info.mode = tarfile.LNKTYPE, str(data), 0o755
                tar.addfile(info)
            else:
                assert isinstance(data, bytes)
                info.size, info.mode = len(data), 0o755 if kind == "exe" else 0o644
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def write_blob(layout: Path, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    (layout / "blobs" / "sha256" / digest).write_bytes(data)
    return "sha256:" + digest


def oci_layout(layout: Path, layers: list[bytes], *, entrypoint: list[str] | None = None,
               cmd: list[str] | None = None, env: list[str] | None = None, gzip_layers: bool = False) -> str:
    config = {"architecture": "amd64", "os": "linux", "config": {
        "Entrypoint": entrypoint if entrypoint is not None else ["/usr/local/bin/python3", "/opt/hermetic/entrypoint.py"],
        "Env": env if env is not None else ["PATH=/usr/bin", "HERMETIC_REGION=us-east-1"],
        **({"Cmd": cmd} if cmd is not None else {}),
    }, "rootfs": {"type": "layers", "diff_ids": []}}
    layer_type = "application/vnd.oci.image.layer.v1.tar" + ("+gzip" if gzip_layers else "")
    descriptors = []
    for layer in layers:
        data = gzip.compress(layer, mtime=0) if gzip_layers else layer
        descriptors.append({"mediaType": layer_type, "digest": write_blob(layout, data), "size": len(data)})
    config_bytes = json.dumps(config).encode()
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                           "digest": write_blob(layout, config_bytes), "size": len(config_bytes)},
                "layers": descriptors}
    manifest_bytes = json.dumps(manifest).encode()
    digest = write_blob(layout, manifest_bytes)
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest, "size": len(manifest_bytes),
         "annotations": {"org.opencontainers.image.ref.name": "hermetic-enclave"}}]}))
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    return digest


BASE = [
    ("dir", "usr/", b""), ("dir", "usr/bin/", b""), ("exe", "usr/bin/python3.11", b"\x7fELF not really"),
    ("dir", "usr/local/", b""), ("dir", "usr/local/bin/", b""),
    ("sym", "usr/local/bin/python3", "/usr/bin/python3.11"), ("sym", "bin", "usr/bin"),
    ("link", "usr/bin/python3.11-hardlink", "usr/bin/python3.11"),
    ("dir", "etc/", b""), ("file", "etc/passwd", b"root:x:0:0::/root:/bin/sh\n"),
    ("dir", "dev/", b""), ("dir", "tmp/", b""), ("file", "tmp/junk", b"gone later"),
]
APP = [("dir", "opt/", b""), ("dir", "opt/hermetic/", b""), ("dir", "opt/hermetic/enclave/", b""),
       ("file", "opt/hermetic/enclave/__init__.py", b'"""The enclave."""\n'),
       ("file", "opt/hermetic/entrypoint.py", b"print('entry')\n"), ("file", "tmp/.wh.junk", b"")]


def ramdisk_entries(image_dir: Path) -> dict[str, tuple[int, bytes]]:
    out = io.BytesIO()
    write_app_ramdisk(open_oci_image(image_dir), out, gzip_level=None)
    data = out.getvalue()
    entries, pos = {}, 0
    for name, mode, size in cpio_names(data):
        pos = data.index(name.encode() + b"\0", pos) + len(name) + 1
        pos += -pos % 4
        entries[name] = (mode, data[pos:pos + size])
        pos += size
    return entries


def test_cpio_newc_is_what_gnu_cpio_reads(tmp_path: Path) -> None:
    out = io.BytesIO()
    writer = CpioWriter(out)
    writer.add_dir("d", mode=0o750, mtime=EPOCH)
    writer.add_file("d/f", b"hello", mode=0o600, uid=7, gid=8, mtime=EPOCH)
    writer.add_symlink("d/l", "f")
    writer.add_file("d/big", io.BytesIO(b"x" * 70000), size=70000)
    writer.close()
    data = out.getvalue()
    assert data.startswith(b"070701") and len(data) % 4 == 0
    assert [(n, stat.S_IFMT(m), s) for n, m, s in cpio_names(data)] == [
        ("d", stat.S_IFDIR, 0), ("d/f", stat.S_IFREG, 5), ("d/l", stat.S_IFLNK, 1), ("d/big", stat.S_IFREG, 70000)]
    if shutil.which("cpio") is None:
        pytest.skip("no cpio command here (make eif-check installs it)")
    listing = subprocess.run(["cpio", "-itvn", "--quiet"], input=data, capture_output=True, timeout=30)
    lines = listing.stdout.decode().splitlines()
    assert lines[0].startswith("drwxr-x---") and lines[0].endswith(" d")
    assert lines[1].startswith("-rw-------") and " 7 " in lines[1] and lines[1].endswith(" d/f")
    assert lines[2].endswith("d/l -> f")


def test_gzip_output_is_deterministic() -> None:
    def archive() -> bytes:
        out = io.BytesIO()
        writer = CpioWriter(out, gzip_level=6)
        writer.add_file("a", b"same bytes every time")
        writer.close()
        return out.getvalue()
    first = archive()
    assert first == archive()
    assert first[:2] == b"\x1f\x8b" and first[4:8] == b"\0\0\0\0", "gzip header without a time"
    assert [n for n, _, _ in cpio_names(gzip.decompress(first))] == ["a"]


def test_app_ramdisk_is_laid_out_as_nitro_cli_does(tmp_path: Path) -> None:
    oci_layout(tmp_path, [tar_layer(BASE), tar_layer(APP)])
    entries = ramdisk_entries(tmp_path)
    names = list(entries)
    assert names == sorted(names, key=str.encode), "sorted: the archive does not depend on directory order"
    assert names[:3] == ["cmd", "env", "rootfs"]
    assert entries["cmd"] == (stat.S_IFREG | 0o644, b"/usr/local/bin/python3\n/opt/hermetic/entrypoint.py\n")
    assert entries["env"][1] == b"PATH=/usr/bin\nHERMETIC_REGION=us-east-1\n"
    for d in ("dev", "run", "sys", "var", "proc", "tmp"):
        assert stat.S_ISDIR(entries[f"rootfs/{d}"][0]), d
    assert entries["rootfs/opt/hermetic/entrypoint.py"][1] == b"print('entry')\n"
    assert entries["rootfs/usr/local/bin/python3"] == (stat.S_IFLNK | 0o777, b"/usr/bin/python3.11")
    assert entries["rootfs/usr/bin/python3.11-hardlink"][1] == b"\x7fELF not really", "hard links become copies"
    assert "rootfs/tmp/junk" not in entries, "whiteouts of later layers delete files"
    assert not [n for n in names if ".wh." in n]


def test_cmd_wins_over_entrypoint_as_in_nitro_cli(tmp_path: Path) -> None:
    oci_layout(tmp_path, [tar_layer(BASE)], entrypoint=["/bin/ignored"], cmd=["/usr/bin/python3.11", "-m", "x"])
    assert ramdisk_entries(tmp_path)["cmd"][1] == b"/usr/bin/python3.11\n-m\nx\n"


def test_gzip_layers_give_the_same_ramdisk(tmp_path: Path) -> None:
    oci_layout(tmp_path / "plain", [tar_layer(BASE), tar_layer(APP)])
    oci_layout(tmp_path / "gz", [tar_layer(BASE), tar_layer(APP)], gzip_layers=True)
    assert ramdisk_entries(tmp_path / "plain") == ramdisk_entries(tmp_path / "gz")


def test_blobs_are_checked_against_their_digests(tmp_path: Path) -> None:
    oci_layout(tmp_path, [tar_layer(BASE)])
    image = open_oci_image(tmp_path)
    layer = image.layers[0][0]
    layer.write_bytes(layer.read_bytes() + b"\0" * 512)
    with pytest.raises(ConfigError, match="does not match its digest"):
        open_oci_image(tmp_path)
    with pytest.raises(ConfigError, match="not an OCI image layout"):
        open_oci_image(tmp_path / "nowhere")


def test_write_eif_streams_the_same_file_build_eif_makes(tmp_path: Path) -> None:
    ramdisk = tmp_path / "r.cpio"
    ramdisk.write_bytes(b"ramdisk bytes" * 1000)
    write_eif(tmp_path / "a.eif", b"kernel", b"cmdline", [b"boot", ramdisk])
    assert (tmp_path / "a.eif").read_bytes() == build_eif(b"kernel", b"cmdline", [b"boot", ramdisk.read_bytes()])


def test_standin_eif_measures_and_pcr1_is_only_the_stand_ins(tmp_path: Path) -> None:
    oci_layout(tmp_path / "a", [tar_layer(BASE), tar_layer(APP)])
    build_standin_eif(open_oci_image(tmp_path / "a"), tmp_path / "a.eif")
    first = read_eif(tmp_path / "a.eif")
    boot = standin_bootstrap_ramdisk()
    assert first.measurements.pcr1 == extend_zero(hashlib.sha384(STANDIN_KERNEL + STANDIN_CMDLINE + boot).digest())
    assert [s.section_type.label for s in first.sections] == ["kernel", "cmdline", "metadata", "ramdisk", "ramdisk"]
    assert first.metadata is not None and first.metadata.image_version.startswith("sha256:")
    assert b"STAND-IN" in STANDIN_KERNEL and b"stand-in" in STANDIN_CMDLINE
    assert [n for n, _, _ in cpio_names(gzip.decompress(boot))] == ["dev", "init", "nsm.ko"]

    build_standin_eif(open_oci_image(tmp_path / "a"), tmp_path / "again.eif")
    assert (tmp_path / "again.eif").read_bytes() == (tmp_path / "a.eif").read_bytes(), "deterministic"

    changed = [(k, n, d + b"\n" if n.endswith("__init__.py") else d) for k, n, d in APP]  # one byte more
    oci_layout(tmp_path / "b", [tar_layer(BASE), tar_layer(changed)])
    build_standin_eif(open_oci_image(tmp_path / "b"), tmp_path / "b.eif")
    second = read_eif(tmp_path / "b.eif")
    assert second.measurements.pcr1 == first.measurements.pcr1
    assert second.measurements.pcr0 != first.measurements.pcr0
    assert second.measurements.pcr2 != first.measurements.pcr2


def test_module_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    oci_layout(tmp_path / "img", [tar_layer(BASE)])
    assert main([str(tmp_path / "img"), str(tmp_path / "x.eif"), "--ref", "hermetic-enclave", "--gzip-level", "1"]) == 0
    assert read_eif_bytes((tmp_path / "x.eif").read_bytes()).measurements.pcr0
    assert main([str(tmp_path / "img"), str(tmp_path / "y.eif"), "--ref", "other"]) == 1
    assert "expected one image named other" in capsys.readouterr().err
