"""Typed failures of reading an attestation document (structure, sizes, algorithm)."""
from __future__ import annotations

from enclave.errors import AttestationError

__all__ = ["AttestationError", "DocumentTooLarge", "MalformedDocument", "UnsupportedAlgorithm"]


class MalformedDocument(AttestationError):
    """The bytes are not a well-formed COSE_Sign1 attestation document."""


class DocumentTooLarge(MalformedDocument):
    """The document, or one of its fields, exceeds the size AWS NSM can produce."""


class UnsupportedAlgorithm(AttestationError):
    """The document or a certificate uses an algorithm other than ECDSA P-384 / ES384."""
