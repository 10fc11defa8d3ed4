"""Reading the files people hand to the CLI: bounded, with one-line errors."""
from __future__ import annotations

import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from enclave.errors import ConfigError


def read_bounded(name: str, limit: int, what: str) -> bytes:
    """The bytes of file `name` ('-' for stdin), refusing more than `limit`."""
    try:
        if name == "-":
            data = sys.stdin.buffer.read(limit + 1)
        else:
            with open(name, "rb") as handle:
                data = handle.read(limit + 1)
    except OSError as err:
        raise ConfigError(f"cannot read {what} {name}: {err.strerror}") from None
    if len(data) > limit:
        raise ConfigError(f"{what} {name} is larger than {limit} bytes")
    return data


def load_certificate_der(path: Path, what: str = "root certificate") -> bytes:
    """A PEM or DER X.509 certificate file, as DER."""
    try:
        blob = Path(path).read_bytes()
    except OSError as err:
        raise ConfigError(f"cannot read {what} {path}: {err.strerror}") from None
    try:
        if b"-----BEGIN" in blob:
            cert = x509.load_pem_x509_certificate(blob)
        else:
            cert = x509.load_der_x509_certificate(blob)
    except ValueError:
        raise ConfigError(f"{what} {path} is not a PEM or DER X.509 certificate") from None
    return cert.public_bytes(Encoding.DER)
