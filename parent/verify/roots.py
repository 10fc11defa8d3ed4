"""The pinned AWS Nitro Enclaves Root-G1 certificate.

The PEM ships inside the package (roots/aws_nitro_root_g1.pem, from
https://aws-nitro-enclaves.amazonaws.com/AWS_NitroEnclaves_Root-G1.zip) and is
checked against the SHA-256 AWS publishes before anything may use it: a swapped
file must never silently become a trust anchor.
"""
from __future__ import annotations

import hashlib
from importlib import resources

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from parent.verify.errors import RootPinMismatch

AWS_NITRO_ROOT_G1_SHA256 = "641a0321a3e244efe456463195d606317ed7cdcc3c1756e09893f3c68f79bb5b"
_PEM_DIR = "roots"
_PEM_NAME = "aws_nitro_root_g1.pem"


def load_pinned_root(pem: bytes | None = None) -> bytes:
    """Return the DER of the bundled root (or of `pem`), refusing it unless its SHA-256 is the pin."""
    if pem is None:
        pem = resources.files(__package__).joinpath(_PEM_DIR).joinpath(_PEM_NAME).read_bytes()
    try:
        der = x509.load_pem_x509_certificate(pem).public_bytes(Encoding.DER)
    except ValueError as err:
        raise RootPinMismatch("bundled AWS Nitro root certificate is not a valid PEM") from err
    digest = hashlib.sha256(der).hexdigest()
    if digest != AWS_NITRO_ROOT_G1_SHA256:
        raise RootPinMismatch(f"bundled AWS Nitro root certificate has SHA-256 {digest}, not the pinned one")
    return der


AWS_NITRO_ROOT_G1_DER: bytes = load_pinned_root()
