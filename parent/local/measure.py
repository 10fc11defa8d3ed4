"""Local PCR measurements derived from the `enclave` package's code.

A real EIF measures (aws-nitro-enclaves-image-format)::

    PCR = SHA384(48 zero bytes || SHA384(stream))
    PCR0: stream = kernel || cmdline || all ramdisks
    PCR1: stream = kernel || cmdline || first ramdisk   (the bootstrap: init, NSM driver)
    PCR2: stream = the other ramdisks                   (the application)

Locally there is no kernel or ramdisk, so the same construction runs over two
streams that stand in for them:

* ``boot``: a fixed, versioned description of the local "kernel", "cmdline" and
  "bootstrap" (constants below). Like a real EIF's PCR1 it does not change when the
  application changes, and it is the same on every machine.
* ``app``: the enclave package itself. Every regular file under the package
  directory (``.py`` sources and data files such as pinned root certificates), in
  order of relative POSIX path (sorted by its UTF-8 bytes), skipping ``__pycache__``
  directories, ``*.pyc``/``*.pyo`` files and hidden names (starting with "."). The
  stream is ``APP_MAGIC`` followed, for each file, by::

      u32be(len(path)) || path (UTF-8) || u64be(len(content)) || content

  The length prefixes make the encoding injective, so any change to any file's
  content, name or presence changes the stream.

Then ``PCR1 = M(boot)``, ``PCR2 = M(app)``, ``PCR0 = M(boot || app)`` with
``M(s) = SHA384(0^48 || SHA384(s))``. KMS's ``ImageSha384`` condition equals PCR0.
PCR3/PCR4 (IAM role ARN, instance id) are ``SHA384(0^48 || text)`` as on AWS.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import struct
from collections.abc import Iterator, Mapping
from pathlib import Path

from enclave.errors import ConfigError

__all__ = [
    "APP_MAGIC",
    "BOOT_STREAM",
    "MeasurementError",
    "PCR_LENGTH",
    "app_stream",
    "enclave_package_dir",
    "image_sha384",
    "measure_enclave_package",
    "measure_stream",
    "measured_files",
    "pcr_of_text",
]

PCR_LENGTH = 48

APP_MAGIC = b"HERMETIC-LOCAL-APP\x00v1\x00"
_KERNEL = b"HERMETIC-LOCAL-KERNEL\x00v1\x00"
_CMDLINE = b"reboot=k panic=30 pci=off nomodules console=ttyS0 init=/init\x00"
_BOOTSTRAP = b"HERMETIC-LOCAL-BOOTSTRAP\x00v1\x00exec python3 -m enclave\x00"
#: The local stand-in for kernel || cmdline || first ramdisk.
BOOT_STREAM = _KERNEL + _CMDLINE + _BOOTSTRAP

_SKIPPED_DIRS = frozenset({"__pycache__"})
_SKIPPED_SUFFIXES = (".pyc", ".pyo")


class MeasurementError(ConfigError):
    """The enclave package cannot be measured (missing, unreadable)."""


def measure_stream(stream: bytes) -> bytes:
    """``SHA384(48 zero bytes || SHA384(stream))``, the EIF's PCR construction."""
    return hashlib.sha384(bytes(PCR_LENGTH) + hashlib.sha384(stream).digest()).digest()


def pcr_of_text(text: str) -> bytes:
    """PCR3/PCR4 style value: one extend of a zero PCR with the UTF-8 text."""
    return hashlib.sha384(bytes(PCR_LENGTH) + text.encode("utf-8")).digest()


def enclave_package_dir() -> Path:
    """Where the `enclave` package lives, found without importing it."""
    spec = importlib.util.find_spec("enclave")
    if spec is None or not spec.submodule_search_locations:
        raise MeasurementError("the enclave package cannot be found")
    return Path(next(iter(spec.submodule_search_locations)))


def measured_files(package_dir: Path) -> list[tuple[str, Path]]:
    """(relative POSIX path, file) pairs that make up the app stream, in stream order."""
    root = Path(package_dir)
    if not root.is_dir():
        raise MeasurementError(f"enclave package directory {root} does not exist")
    found: list[tuple[bytes, str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = [d for d in dirnames if d not in _SKIPPED_DIRS and not d.startswith(".")]
        for name in filenames:
            if name.startswith(".") or name.endswith(_SKIPPED_SUFFIXES):
                continue
            path = Path(dirpath) / name
            if not path.is_file():
                continue
            rel = path.relative_to(root).as_posix()
            found.append((rel.encode("utf-8"), rel, path))
    found.sort(key=lambda item: item[0])
    return [(rel, path) for _, rel, path in found]


def _app_chunks(package_dir: Path) -> Iterator[bytes]:
    yield APP_MAGIC
    for rel, path in measured_files(package_dir):
        try:
            content = path.read_bytes()
        except OSError as exc:
            raise MeasurementError(f"cannot read {path}: {exc.strerror}") from None
        name = rel.encode("utf-8")
        yield struct.pack(">I", len(name)) + name + struct.pack(">Q", len(content))
        yield content


def app_stream(package_dir: Path | None = None) -> bytes:
    """The application stream of the package (see the module docstring)."""
    return b"".join(_app_chunks(enclave_package_dir() if package_dir is None else package_dir))


def measure_enclave_package(package_dir: Path | None = None) -> dict[int, bytes]:
    """PCR0, PCR1 and PCR2 of the enclave package at `package_dir` (default: the
    installed `enclave` package)."""
    app = app_stream(package_dir)
    return {
        0: measure_stream(BOOT_STREAM + app),
        1: measure_stream(BOOT_STREAM),
        2: measure_stream(app),
    }


def image_sha384(pcrs: Mapping[int, bytes]) -> bytes:
    """KMS's ``kms:RecipientAttestation:ImageSha384`` value: PCR0."""
    try:
        value = pcrs[0]
    except KeyError:
        raise MeasurementError("measurements have no PCR0") from None
    if len(value) != PCR_LENGTH:
        raise MeasurementError(f"PCR0 is {len(value)} bytes, expected {PCR_LENGTH}")
    return bytes(value)
