"""The one interface the enclave uses to reach a Nitro Secure Module.

Backends: `enclave.native.nsm_device.DeviceNsm` (/dev/nsm ioctl) and, for local runs
only, `parent.local.mock_nsm.MockNsm`.
All of them enforce the real NSM's input limits here, before anything is sent, so a
job that works locally does not fail on Nitro hardware for size reasons.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, runtime_checkable

from enclave.nsm.errors import NsmInputTooLarge, NsmInvalidArgument

__all__ = [
    "MAX_ATTESTATION_FIELD",
    "MAX_RANDOM_REQUEST",
    "Nsm",
    "NsmDescription",
    "PcrState",
    "check_attestation_inputs",
    "check_random_length",
]

#: user_data, nonce and public_key: at most this many bytes each
#: (attestation_process.md: `user_data = bytes .size (0..1024)`).
MAX_ATTESTATION_FIELD = 1024

#: Upper bound for one get_random(n) call; larger amounts should come from a DRBG
#: seeded from the NSM rather than from thousands of NSM round trips.
MAX_RANDOM_REQUEST = 1 << 20


@dataclass(frozen=True)
class PcrState:
    """A PCR's current value and whether it is read-only."""

    value: bytes
    locked: bool


@dataclass(frozen=True)
class NsmDescription:
    """What DescribeNSM reports."""

    module_id: str
    max_pcrs: int
    locked_pcrs: tuple[int, ...]
    digest: str
    version: tuple[int, int, int]


def check_attestation_inputs(
    user_data: bytes | None, nonce: bytes | None, public_key: bytes | None
) -> None:
    """Refuse attestation inputs the real NSM would refuse (type or size)."""
    for name, value in (("user_data", user_data), ("nonce", nonce), ("public_key", public_key)):
        if value is None:
            continue
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise NsmInvalidArgument(f"attestation {name} must be bytes or None")
        if len(value) > MAX_ATTESTATION_FIELD:
            raise NsmInputTooLarge(
                f"attestation {name} is {len(value)} bytes, the NSM limit is "
                f"{MAX_ATTESTATION_FIELD}"
            )


def check_random_length(n: int) -> int:
    """Validate the byte count asked of get_random."""
    if type(n) is not int or n < 0:
        raise NsmInvalidArgument(f"get_random needs a non-negative integer, got {n!r}")
    if n > MAX_RANDOM_REQUEST:
        raise NsmInputTooLarge(
            f"get_random({n}) asks for more than {MAX_RANDOM_REQUEST} bytes at once"
        )
    return n


@runtime_checkable
class Nsm(Protocol):
    """A Nitro Secure Module (or a stand-in). Usable as a context manager.

    Backends may subclass this protocol to inherit the context-manager methods.
    """

    def attest(
        self,
        *,
        user_data: bytes | None = None,
        nonce: bytes | None = None,
        public_key: bytes | None = None,
    ) -> bytes:
        """Return a COSE_Sign1 attestation document binding the given fields."""
        ...

    def get_random(self, n: int) -> bytes:
        """Return exactly `n` bytes of entropy from the NSM."""
        ...

    def describe_pcr(self, index: int) -> PcrState:
        """Return the value and lock state of PCR `index`."""
        ...

    def extend_pcr(self, index: int, data: bytes) -> bytes:
        """Extend PCR `index` with `data` (new = H(old || data)); return the new value."""
        ...

    def lock_pcr(self, index: int) -> None:
        """Make PCR `index` read-only."""
        ...

    def describe(self) -> NsmDescription:
        """Return the module's description (DescribeNSM)."""
        ...

    def close(self) -> None:
        """Release the module; further calls raise NsmClosed."""
        ...

    def __enter__(self) -> Nsm:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
