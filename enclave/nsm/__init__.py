"""Access to the Nitro Secure Module behind one interface (`Nsm`).

`open_default_nsm()` picks the backend available in this environment: the /dev/nsm
ioctl backend, else libnsm.so, else `NsmUnavailable`. Local stand-ins (the mock NSM)
live in `parent.local` and are injected by the local launcher; this package never
imports them.
"""
from __future__ import annotations

import logging
import os

from enclave.nsm.device import DEFAULT_DEVICE, DeviceNsm
from enclave.nsm.errors import (
    NsmBufferTooSmall,
    NsmClosed,
    NsmInputTooLarge,
    NsmInternalError,
    NsmInvalidArgument,
    NsmInvalidIndex,
    NsmInvalidOperation,
    NsmInvalidResponse,
    NsmMalformedResponse,
    NsmReadOnlyIndex,
    NsmRequestError,
    NsmUnavailable,
)
from enclave.nsm.interface import (
    MAX_ATTESTATION_FIELD,
    Nsm,
    NsmDescription,
    PcrState,
)
from enclave.nsm.libnsm import LibNsm

__all__ = [
    "MAX_ATTESTATION_FIELD",
    "DeviceNsm",
    "LibNsm",
    "Nsm",
    "NsmBufferTooSmall",
    "NsmClosed",
    "NsmDescription",
    "NsmInputTooLarge",
    "NsmInternalError",
    "NsmInvalidArgument",
    "NsmInvalidIndex",
    "NsmInvalidOperation",
    "NsmInvalidResponse",
    "NsmMalformedResponse",
    "NsmReadOnlyIndex",
    "NsmRequestError",
    "NsmUnavailable",
    "PcrState",
    "open_default_nsm",
]

log = logging.getLogger(__name__)


def open_default_nsm(*, device: str = DEFAULT_DEVICE, library: str | None = None) -> Nsm:
    """Open the NSM: the ioctl device if present, else libnsm.so, else NsmUnavailable."""
    if os.path.exists(device):
        return DeviceNsm(device)
    try:
        return LibNsm(library)
    except NsmUnavailable as exc:
        raise NsmUnavailable(f"no NSM available: no {device} and {exc}") from None
