"""Assembling EIF files from their parts, laid out as nitro-cli's EifBuilder does.

Used to make test images (no nitro-cli, kernel or Docker needed): kernel, cmdline,
metadata, the ramdisks, then the signature when signed, each behind its 12-byte
section header, with the section table and CRC32 filled in. `build_eif` works in
memory; `write_eif` streams ramdisks from files into a file (real application
ramdisks are hundreds of MiB: see parent.eif.standin). Signing follows
`EifSigner::generate_eif_signature`: a COSE_Sign1 (untagged) over the serde_cbor
encoding of PcrInfo { register_index: 0, register_value: PCR0 }, stored as
`[{"signing_certificate": PEM, "signature": COSE}]` with both byte vectors
written the serde way (arrays of integers).
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from enclave.errors import ConfigError
from parent.eif.format import (
    CURRENT_VERSION,
    EIF_MAGIC,
    HEADER_CRC_SPAN,
    HEADER_SIZE,
    MAX_NUM_SECTIONS,
    SECTION_HEADER_SIZE,
    EifHeader,
    SectionType,
)

_CURVES: dict[str, tuple[int, hashes.HashAlgorithm, int]] = {
    "secp256r1": (-7, hashes.SHA256(), 32),
    "secp384r1": (-35, hashes.SHA384(), 48),
    "secp521r1": (-36, hashes.SHA512(), 66),
}


@dataclass(frozen=True)
class Signer:
    certificate_pem: bytes
    private_key: ec.EllipticCurvePrivateKey


def default_metadata(name: str = "hermetic-test", version: str = "0") -> bytes:
    """A metadata section shaped like EifIdentityInfo (fixed values: reproducible)."""
    info: dict[str, Any] = {
        "ImageName": name,
        "ImageVersion": version,
        "BuildMetadata": {
            "BuildTime": "1970-01-01T00:00:00+00:00",
            "BuildTool": "hermetic",
            "BuildToolVersion": "0",
            "OperatingSystem": "Linux",
            "KernelVersion": "0",
        },
        "DockerInfo": {},
        "CustomMetadata": {},
    }
    return json.dumps(info).encode()


def pcr0_of(kernel: bytes, cmdline: bytes, ramdisks: Sequence[bytes]) -> bytes:
    inner = hashlib.sha384(kernel + cmdline + b"".join(ramdisks)).digest()
    return hashlib.sha384(bytes(48) + inner).digest()


def cose_sign1(payload: bytes, key: ec.EllipticCurvePrivateKey) -> bytes:
    try:
        alg, hash_alg, size = _CURVES[key.curve.name]
    except KeyError:
        raise ConfigError(f"cannot sign with curve {key.curve.name}") from None
    protected = cbor2.dumps({1: alg})
    to_sign = cbor2.dumps(["Signature1", protected, b"", payload])
    r, s = decode_dss_signature(key.sign(to_sign, ec.ECDSA(hash_alg)))
    return cbor2.dumps([protected, {}, payload, r.to_bytes(size, "big") + s.to_bytes(size, "big")])


def signature_section(pcr0: bytes, signer: Signer) -> bytes:
    payload = cbor2.dumps({"register_index": 0, "register_value": list(pcr0)})
    signature = cose_sign1(payload, signer.private_key)
    return cbor2.dumps([
        {"signing_certificate": list(signer.certificate_pem), "signature": list(signature)}
    ])


def assemble(
    sections: Sequence[tuple[int, bytes]],
    *,
    version: int = CURRENT_VERSION,
    flags: int = 0,
    default_mem: int = 1024 << 20,
    default_cpus: int = 2,
) -> bytes:
    """Lay out raw (type, data) sections behind a correct header and CRC.

    Types are plain ints so tests can write invalid ones on purpose.
    """
    if len(sections) > MAX_NUM_SECTIONS:
        raise ConfigError(f"an EIF holds at most {MAX_NUM_SECTIONS} sections")
    offsets = [0] * MAX_NUM_SECTIONS
    sizes = [0] * MAX_NUM_SECTIONS
    body = bytearray()
    pos = HEADER_SIZE
    for i, (kind, data) in enumerate(sections):
        offsets[i], sizes[i] = pos, len(data)
        body += struct.pack(">HHQ", int(kind), 0, len(data))
        body += data
        pos += SECTION_HEADER_SIZE + len(data)
    header = EifHeader(
        magic=EIF_MAGIC, version=version, flags=flags, default_mem=default_mem,
        default_cpus=default_cpus, reserved=0, section_count=len(sections),
        section_offsets=tuple(offsets), section_sizes=tuple(sizes), unused=0, crc32=0,
    ).pack()
    crc = zlib.crc32(bytes(body), zlib.crc32(header[:HEADER_CRC_SPAN]))
    return header[:HEADER_CRC_SPAN] + crc.to_bytes(4, "big") + bytes(body)


def build_eif(
    kernel: bytes,
    cmdline: bytes,
    ramdisks: Sequence[bytes],
    *,
    metadata: bytes | None = None,
    signer: Signer | None = None,
    **header: int,
) -> bytes:
    """An EIF in nitro-cli's section order; `metadata=None` writes the default one."""
    sections: list[tuple[int, bytes]] = [
        (SectionType.KERNEL, kernel),
        (SectionType.CMDLINE, cmdline),
        (SectionType.METADATA, default_metadata() if metadata is None else metadata),
    ]
    sections += [(SectionType.RAMDISK, r) for r in ramdisks]
    if signer is not None:
        sections.append((SectionType.SIGNATURE, signature_section(pcr0_of(kernel, cmdline, ramdisks), signer)))
    return assemble(sections, **header)


_CHUNK = 1 << 20


def write_eif(
    path: str | os.PathLike[str],
    kernel: bytes,
    cmdline: bytes,
    ramdisks: Sequence[bytes | Path],
    *,
    metadata: bytes | None = None,
    default_mem: int = 1024 << 20,
    default_cpus: int = 2,
) -> None:
    """The unsigned EIF `build_eif` would make, written to `path`; a ramdisk given as a
    Path is streamed from that file instead of being held in memory."""
    parts: list[tuple[int, bytes | Path]] = [
        (SectionType.KERNEL, kernel),
        (SectionType.CMDLINE, cmdline),
        (SectionType.METADATA, default_metadata() if metadata is None else metadata),
    ]
    parts += [(SectionType.RAMDISK, r) for r in ramdisks]
    if len(parts) > MAX_NUM_SECTIONS:
        raise ConfigError(f"an EIF holds at most {MAX_NUM_SECTIONS} sections")
    sizes = [len(d) if isinstance(d, bytes) else d.stat().st_size for _, d in parts]
    offsets, pos = [], HEADER_SIZE
    for size in sizes:
        offsets.append(pos)
        pos += SECTION_HEADER_SIZE + size
    pad = MAX_NUM_SECTIONS - len(parts)

    def header(crc: int) -> bytes:
        return EifHeader(
            magic=EIF_MAGIC, version=CURRENT_VERSION, flags=0, default_mem=default_mem,
            default_cpus=default_cpus, reserved=0, section_count=len(parts),
            section_offsets=(*offsets, *[0] * pad), section_sizes=(*sizes, *[0] * pad), unused=0, crc32=crc,
        ).pack()

    crc = zlib.crc32(header(0)[:HEADER_CRC_SPAN])
    with open(path, "wb") as out:
        out.write(header(0))
        for (kind, data), size in zip(parts, sizes, strict=True):
            section_header = struct.pack(">HHQ", int(kind), 0, size)
            out.write(section_header)
            crc = zlib.crc32(section_header, crc)
            if isinstance(data, bytes):
                out.write(data)
                crc = zlib.crc32(data, crc)
                continue
            with open(data, "rb") as src:
                copied = 0
                while chunk := src.read(_CHUNK):
                    out.write(chunk)
                    crc = zlib.crc32(chunk, crc)
                    copied += len(chunk)
            if copied != size:
                raise ConfigError(f"{data} changed size while it was written into the EIF")
        out.seek(0)
        out.write(header(crc))


def recompute_crc(data: bytes) -> bytes:
    """`data` with its header CRC set to match its contents (for crafting bad files)."""
    crc = zlib.crc32(data[HEADER_SIZE:], zlib.crc32(data[:HEADER_CRC_SPAN]))
    return data[:HEADER_CRC_SPAN] + crc.to_bytes(4, "big") + data[HEADER_SIZE:]
