"""EIF ramdisks: deterministic cpio ("newc") archives, and the application ramdisk of an OCI image.

nitro-cli (`enclave_build`, via linuxkit) turns the Docker image into the EIF's second
ramdisk: the image's file system under `rootfs/`, the directories `rootfs/dev`, `run`,
`sys`, `var`, `proc`, `tmp` (0755), and two files next to `rootfs/` that AWS's init
reads: `cmd` (the command, one argument a line) and `env` (the environment, one
`NAME=value` a line), both 0644. The command is the image's `Cmd` when it has one,
else its `Entrypoint`. The archive is a gzip-compressed newc cpio.

This module builds the same layout from an OCI image layout (`index.json`, `blobs/`),
deterministically: entries sorted by name, inode numbers counted from 1, owners,
modes and mtimes taken from the layers, synthetic entries dated 0, gzip without a
name or time. It is not byte-identical to linuxkit's output (another cpio writer,
Go's deflate instead of zlib's), so its PCR2 is not the PCR2 nitro-cli reports for
the same image; what it shows is which bytes the measurement covers and that the
same image always gives the same ramdisk.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import posixpath
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from enclave.errors import ConfigError

CPIO_MAGIC = b"070701"
TRAILER = "TRAILER!!!"
# What the customer ramdisk must hold besides the image (nitro-cli's yaml_generator).
ROOTFS = "rootfs"
ROOTFS_DIRS = ("dev", "run", "sys", "var", "proc", "tmp")
_CHUNK = 1 << 20
_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
_REF_NAME = "org.opencontainers.image.ref.name"
_LAYER_TYPES = {
    "application/vnd.oci.image.layer.v1.tar": None,
    "application/vnd.oci.image.layer.v1.tar+gzip": "gz",
    "application/vnd.docker.image.rootfs.diff.tar": None,
    "application/vnd.docker.image.rootfs.diff.tar.gzip": "gz",
}


class CpioWriter:
    """Writes a newc cpio archive (what the Linux initramfs unpacker reads), optionally gzipped."""

    def __init__(self, out: BinaryIO, *, gzip_level: int | None = None) -> None:
        self._gz = gzip.GzipFile(filename="", mode="wb", fileobj=out, compresslevel=gzip_level, mtime=0) \
            if gzip_level is not None else None
        self._out: BinaryIO = self._gz if self._gz is not None else out  # type: ignore[assignment]
        self._ino = 0
        self._written = 0

    def _write(self, data: bytes) -> None:
        self._out.write(data)
        self._written += len(data)

    def _pad(self) -> None:
        self._write(b"\0" * (-self._written % 4))

    def _header(self, name: str, *, mode: int, uid: int, gid: int, nlink: int, mtime: int, size: int,
                rdev: tuple[int, int] = (0, 0), ino: int | None = None) -> None:
        encoded = name.encode("utf-8") + b"\0"
        if ino is None:
            self._ino += 1
            ino = self._ino
        fields = (ino, mode, uid, gid, nlink, max(0, mtime), size, 0, 0, rdev[0], rdev[1], len(encoded), 0)
        self._write(CPIO_MAGIC + b"".join(b"%08x" % f for f in fields) + encoded)
        self._pad()

    def add_dir(self, name: str, *, mode: int = 0o755, uid: int = 0, gid: int = 0, mtime: int = 0) -> None:
        self._header(name, mode=stat.S_IFDIR | (mode & 0o7777), uid=uid, gid=gid, nlink=2, mtime=mtime, size=0)

    def add_file(self, name: str, data: bytes | BinaryIO, *, size: int | None = None, mode: int = 0o644,
                 uid: int = 0, gid: int = 0, mtime: int = 0) -> None:
        if isinstance(data, bytes):
            size = len(data)
        if size is None:
            raise ValueError("streamed file data needs its size")
        self._header(name, mode=stat.S_IFREG | (mode & 0o7777), uid=uid, gid=gid, nlink=1, mtime=mtime, size=size)
        if isinstance(data, bytes):
            self._write(data)
        else:
            remaining = size
            while remaining:
                chunk = data.read(min(_CHUNK, remaining))
                if not chunk:
                    raise ConfigError(f"{name}: file data ends {remaining} bytes early")
                self._write(chunk)
                remaining -= len(chunk)
        self._pad()

    def add_symlink(self, name: str, target: str, *, uid: int = 0, gid: int = 0, mtime: int = 0) -> None:
        encoded = target.encode("utf-8")
        self._header(name, mode=stat.S_IFLNK | 0o777, uid=uid, gid=gid, nlink=1, mtime=mtime, size=len(encoded))
        self._write(encoded)
        self._pad()

    def add_node(self, name: str, kind: int, *, mode: int, rdev: tuple[int, int] = (0, 0), uid: int = 0,
                 gid: int = 0, mtime: int = 0) -> None:
        """A character or block device, or a FIFO (`kind` is the S_IF* bits)."""
        self._header(name, mode=kind | (mode & 0o7777), uid=uid, gid=gid, nlink=1, mtime=mtime, size=0, rdev=rdev)

    def close(self) -> None:
        """Write the trailer (and finish the gzip stream); the underlying stream stays open."""
        self._header(TRAILER, mode=0, uid=0, gid=0, nlink=1, mtime=0, size=0, ino=0)
        if self._gz is not None:
            self._gz.close()


# --- OCI image layouts ------------------------------------------------------------------


@dataclass(frozen=True)
class OciImage:
    """One image of an OCI image layout: its manifest digest, config and layer files."""

    layout: Path
    digest: str
    config: Mapping[str, Any]
    layers: tuple[tuple[Path, str | None], ...]  # (blob, compression)

    @property
    def command(self) -> list[str]:
        """What nitro-cli writes to `cmd`: the image's Cmd if it has one, else its Entrypoint."""
        cfg = self.config.get("config") or {}
        cmd, entrypoint = cfg.get("Cmd") or [], cfg.get("Entrypoint") or []
        return list(cmd if cmd else entrypoint)

    @property
    def environment(self) -> list[str]:
        return list((self.config.get("config") or {}).get("Env") or [])


def _blob(layout: Path, digest: str) -> Path:
    algo, _, value = digest.partition(":")
    if algo != "sha256" or len(value) != 64 or not all(c in "0123456789abcdef" for c in value):
        raise ConfigError(f"unsupported or malformed digest {digest!r}")
    return layout / "blobs" / "sha256" / value


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def _read_json_blob(layout: Path, digest: str) -> Any:
    path = _blob(layout, digest)
    data = path.read_bytes()
    if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
        raise ConfigError(f"blob {digest} does not match its digest")
    return json.loads(data)


def open_oci_image(layout: str | os.PathLike[str], ref: str | None = None) -> OciImage:
    """The image named `ref` (annotation org.opencontainers.image.ref.name) in the layout,
    or its only image; every blob is checked against its digest."""
    root = Path(layout)
    try:
        index = json.loads((root / "index.json").read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(f"{root} is not an OCI image layout: {err}") from None
    manifests = [m for m in index.get("manifests", []) if m.get("mediaType", _OCI_MANIFEST) == _OCI_MANIFEST]
    if ref is not None:
        manifests = [m for m in manifests if (m.get("annotations") or {}).get(_REF_NAME) == ref]
    if len(manifests) != 1:
        named = f" named {ref}" if ref else ""
        raise ConfigError(f"{root}: expected one image{named}, found {len(manifests)}")
    digest = manifests[0]["digest"]
    manifest = _read_json_blob(root, digest)
    config = _read_json_blob(root, manifest["config"]["digest"])
    layers = []
    for layer in manifest.get("layers", []):
        media = layer.get("mediaType", "")
        if media not in _LAYER_TYPES:
            raise ConfigError(f"{root}: unsupported layer type {media!r}")
        path = _blob(root, layer["digest"])
        if _sha256_file(path) != layer["digest"]:
            raise ConfigError(f"layer {layer['digest']} does not match its digest")
        layers.append((path, _LAYER_TYPES[media]))
    return OciImage(layout=root, digest=digest, config=config, layers=tuple(layers))


def _clean(name: str) -> str:
    path = posixpath.normpath("/" + name).lstrip("/")
    return "" if path == "." else path


@dataclass
class _Entry:
    info: tarfile.TarInfo
    layer: int


def _merged_tree(layers: Sequence[Path]) -> dict[str, _Entry]:
    """The image's file system: each layer applied over the previous, whiteouts honoured."""
    tree: dict[str, _Entry] = {}
    for index, path in enumerate(layers):
        with tarfile.open(path, "r:") as tar:
            for info in tar:
                name = _clean(info.name)
                if not name:
                    continue
                parent, base = posixpath.split(name)
                if base == ".wh..wh..opq":
                    prefix = parent + "/"
                    for key in [k for k in tree if k.startswith(prefix) and tree[k].layer < index]:
                        del tree[key]
                    continue
                if base.startswith(".wh."):
                    gone = posixpath.join(parent, base[4:])
                    for key in [k for k in tree if k == gone or k.startswith(gone + "/")]:
                        del tree[key]
                    continue
                if name in tree and not info.isdir():
                    for key in [k for k in tree if k.startswith(name + "/")]:
                        del tree[key]
                tree[name] = _Entry(info, index)
    return tree


def write_app_ramdisk(image: OciImage, out: BinaryIO, *, gzip_level: int | None = 6) -> None:
    """The application ramdisk of `image`, laid out as nitro-cli lays it out."""
    with ExitStack() as stack:
        plain: list[Path] = []
        for path, compression in image.layers:
            if compression is None:
                plain.append(path)
                continue
            tmp = stack.enter_context(tempfile.NamedTemporaryFile(suffix=".tar"))
            with gzip.open(path, "rb") as src:
                shutil.copyfileobj(src, tmp, _CHUNK)
            tmp.flush()
            plain.append(Path(tmp.name))
        tree = _merged_tree(plain)
        files = [stack.enter_context(open(p, "rb")) for p in plain]
        writer = CpioWriter(out, gzip_level=gzip_level)
        extra = {"cmd": "".join(f"{a}\n" for a in image.command).encode(),
                 "env": "".join(f"{e}\n" for e in image.environment).encode()}
        names = set(extra) | {ROOTFS} | {f"{ROOTFS}/{n}" for n in tree}
        names |= {f"{ROOTFS}/{d}" for d in ROOTFS_DIRS}
        for name in list(names):  # every parent directory gets an entry
            while (name := posixpath.dirname(name)) and name not in names:
                names.add(name)
        for name in sorted(names, key=lambda n: n.encode("utf-8")):
            if name in extra:
                writer.add_file(name, extra[name], mode=0o644)
                continue
            entry = tree.get(name.removeprefix(f"{ROOTFS}/")) if name != ROOTFS else None
            if entry is None:
                writer.add_dir(name)
                continue
            _write_entry(writer, name, entry, tree, files)
        writer.close()


def _write_entry(writer: CpioWriter, name: str, entry: _Entry, tree: Mapping[str, _Entry],
                 files: Sequence[BinaryIO]) -> None:
    info = entry.info
    owner = {"uid": info.uid, "gid": info.gid, "mtime": int(info.mtime)}
    if info.isdir():
        writer.add_dir(name, mode=info.mode, **owner)
    elif info.issym():
        writer.add_symlink(name, info.linkname, **owner)
    elif info.islnk():
        # A hard link is written as a copy of the file it links to.
        target = tree.get(_clean(info.linkname))
        if target is None or not target.info.isreg():
            raise ConfigError(f"hard link {name} -> {info.linkname}: no such regular file in the image")
        _copy(writer, name, target.info, files[target.layer], mode=info.mode, **owner)
    elif info.isreg():
        _copy(writer, name, info, files[entry.layer], mode=info.mode, **owner)
    elif info.ischr() or info.isblk() or info.isfifo():
        kind = stat.S_IFCHR if info.ischr() else stat.S_IFBLK if info.isblk() else stat.S_IFIFO
        writer.add_node(name, kind, mode=info.mode, rdev=(info.devmajor, info.devminor), **owner)
    else:
        raise ConfigError(f"{name}: unsupported tar entry type {info.type!r}")


def _copy(writer: CpioWriter, name: str, info: tarfile.TarInfo, layer: BinaryIO, **fields: int) -> None:
    layer.seek(info.offset_data)
    writer.add_file(name, layer, size=info.size, **fields)


def cpio_names(data: bytes) -> Iterator[tuple[str, int, int]]:
    """(name, mode, size) of each entry of an uncompressed newc archive (for tests and checks)."""
    pos = 0
    while True:
        if data[pos:pos + 6] != CPIO_MAGIC:
            raise ConfigError(f"no newc header at offset {pos}")
        fields = [int(data[pos + 6 + 8 * i:pos + 14 + 8 * i], 16) for i in range(13)]
        namesize, size, mode = fields[11], fields[6], fields[1]
        name = data[pos + 110:pos + 110 + namesize - 1].decode("utf-8")
        pos += 110 + namesize
        pos += -pos % 4
        if name == TRAILER:
            return
        yield name, mode, size
        pos += size
        pos += -pos % 4
