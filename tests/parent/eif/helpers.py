"""Test-side EIF pieces written straight from the format definition, not from parent.eif."""
from __future__ import annotations

import datetime as dt
import hashlib
import struct
import zlib

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

KERNEL, CMDLINE, RAMDISK, SIGNATURE, METADATA = 1, 2, 3, 4, 5


def pcr(stream: bytes) -> str:
    """SHA384(48 zero bytes || SHA384(stream)), hex."""
    return hashlib.sha384(b"\x00" * 48 + hashlib.sha384(stream).digest()).hexdigest()


def hand_built_eif(sections: list[tuple[int, bytes]], *, mem: int = 512 << 20, cpus: int = 2) -> bytes:
    """An EIF laid out by hand: 548-byte big-endian header, then (u16 type, u16 flags, u64 size, data)."""
    offsets, sizes, body = [], [], b""
    pos = 548
    for kind, data in sections:
        offsets.append(pos)
        sizes.append(len(data))
        body += struct.pack(">HHQ", kind, 0, len(data)) + data
        pos += 12 + len(data)
    offsets += [0] * (32 - len(offsets))
    sizes += [0] * (32 - len(sizes))
    head = b".eif" + struct.pack(">HHQQHH", 4, 0, mem, cpus, 0, len(sections))
    head += struct.pack(">32Q", *offsets) + struct.pack(">32Q", *sizes) + struct.pack(">I", 0)
    assert len(head) == 544
    crc = zlib.crc32(head + body)  # everything but the CRC field itself
    return head + struct.pack(">I", crc) + body


def self_signed(curve: ec.EllipticCurve | None = None) -> tuple[bytes, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(curve or ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hermetic eif signer")])
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(7).not_valid_before(now).not_valid_after(now + dt.timedelta(days=365))
        .sign(key, hashes.SHA384())
    )
    return cert.public_bytes(Encoding.PEM), key
