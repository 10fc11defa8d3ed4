"""PCR values of an EIF, computed the way `nitro-cli describe-eif` computes them.

The image-format crate feeds section data into plain SHA-384 hashers
(`EifHasher::new_without_cache`) and finishes each with a TPM-style extend of a
zero register: ``PCR = SHA384(48 zero bytes || SHA384(stream))``.

* PCR0 (image): kernel || cmdline || every ramdisk, in file order.
* PCR1 (bootstrap): kernel || cmdline || the first ramdisk (AWS's init and NSM driver).
* PCR2 (application): the ramdisks after the first. With none, the stream is empty
  and PCR2 is the extend of SHA384(b"") (PCR2_EMPTY below).
* PCR8: the DER of the signing certificate, only for signed images.

Metadata and the signature section are never measured.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

PCR_SIZE = 48
# `format!("{:?}", Sha384::new())` in nitro-cli's sha2 version; describe-eif prints it as is.
HASH_ALGORITHM = "Sha384 { ... }"


def extend_zero(digest: bytes) -> bytes:
    """One TPM extend of an all-zero 48-byte register with `digest`."""
    return hashlib.sha384(bytes(PCR_SIZE) + digest).digest()


#: PCR2 of an image without application ramdisks: SHA384(0^48 || SHA384(b"")).
PCR2_EMPTY = extend_zero(hashlib.sha384(b"").digest())


class PcrHasher:
    """An incremental SHA-384 whose result is extended into a zero PCR."""

    def __init__(self) -> None:
        self._hash = hashlib.sha384()

    def update(self, data: bytes) -> None:
        self._hash.update(data)

    def pcr(self) -> bytes:
        return extend_zero(self._hash.digest())


@dataclass(frozen=True)
class EifMeasurements:
    pcr0: bytes
    pcr1: bytes
    pcr2: bytes
    pcr8: bytes | None = None

    def as_dict(self) -> dict[str, Any]:
        """nitro-cli's `Measurements` object (lower-case hex, PCR8 only when signed)."""
        out: dict[str, Any] = {
            "HashAlgorithm": HASH_ALGORITHM,
            "PCR0": self.pcr0.hex(),
            "PCR1": self.pcr1.hex(),
            "PCR2": self.pcr2.hex(),
        }
        if self.pcr8 is not None:
            out["PCR8"] = self.pcr8.hex()
        return out
