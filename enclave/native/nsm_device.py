"""NSM backend over the /dev/nsm character device.

The driver takes one ioctl, ``NSM_IOCTL_RAW = _IOWR(0x0A, 0, struct nsm_raw)``
(linux include/uapi/linux/nsm.h; the nsm-api's src/driver/mod.rs sends the same
request with two ``struct iovec``), where::

    struct nsm_iovec { __u64 addr; __u64 len; };
    struct nsm_raw   { struct nsm_iovec request; struct nsm_iovec response; };

The request buffer holds the CBOR request (at most 0x1000 bytes), the response
buffer is 0x3000 bytes and the driver writes the actual response length back into
``response.len``. On the 64-bit hosts Nitro supports, ``struct iovec`` and
``struct nsm_iovec`` have the same layout (two 8-byte fields).
"""
from __future__ import annotations

import ctypes
import errno
import fcntl
import logging
import os
import threading

from enclave.nsm.client import ProtocolNsm
from enclave.nsm.errors import NsmClosed, NsmInputTooLarge, NsmInternalError, NsmUnavailable
from enclave.nsm.protocol import NSM_REQUEST_MAX_SIZE, NSM_RESPONSE_MAX_SIZE

__all__ = [
    "DEFAULT_DEVICE",
    "NSM_IOCTL_MAGIC",
    "NSM_IOCTL_RAW",
    "DeviceNsm",
    "NsmIovec",
    "NsmRawMessage",
    "ioc",
    "iowr",
]

log = logging.getLogger(__name__)

DEFAULT_DEVICE = "/dev/nsm"
NSM_IOCTL_MAGIC = 0x0A

# Generic Linux ioctl number layout (asm-generic/ioctl.h), used by x86-64 and arm64,
# the architectures Nitro Enclaves run on.
_IOC_NRBITS = 8
_IOC_TYPEBITS = 8
_IOC_SIZEBITS = 14
_IOC_NRSHIFT = 0
_IOC_TYPESHIFT = _IOC_NRSHIFT + _IOC_NRBITS
_IOC_SIZESHIFT = _IOC_TYPESHIFT + _IOC_TYPEBITS
_IOC_DIRSHIFT = _IOC_SIZESHIFT + _IOC_SIZEBITS
_IOC_WRITE = 1
_IOC_READ = 2


def ioc(direction: int, kind: int, nr: int, size: int) -> int:
    """The kernel's _IOC(dir, type, nr, size)."""
    if not 0 <= size < (1 << _IOC_SIZEBITS):
        raise ValueError(f"ioctl argument size {size} does not fit in {_IOC_SIZEBITS} bits")
    return (
        (direction << _IOC_DIRSHIFT)
        | (kind << _IOC_TYPESHIFT)
        | (nr << _IOC_NRSHIFT)
        | (size << _IOC_SIZESHIFT)
    )


def iowr(kind: int, nr: int, size: int) -> int:
    """The kernel's _IOWR(type, nr, size)."""
    return ioc(_IOC_READ | _IOC_WRITE, kind, nr, size)


class NsmIovec(ctypes.Structure):
    _fields_ = [("addr", ctypes.c_uint64), ("len", ctypes.c_uint64)]


class NsmRawMessage(ctypes.Structure):
    _fields_ = [("request", NsmIovec), ("response", NsmIovec)]


NSM_IOCTL_RAW = iowr(NSM_IOCTL_MAGIC, 0, ctypes.sizeof(NsmRawMessage))


class _IoctlTransport:
    """Sends raw requests to an open /dev/nsm descriptor."""

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd
        # One exchange at a time: the buffers below are per call, but a close racing
        # an ioctl must not hand a recycled descriptor number to the driver call.
        self._lock = threading.Lock()

    def roundtrip(self, request: bytes) -> bytes:
        if len(request) > NSM_REQUEST_MAX_SIZE:
            raise NsmInputTooLarge(
                f"NSM request is {len(request)} bytes, the limit is {NSM_REQUEST_MAX_SIZE}"
            )
        request_buf = ctypes.create_string_buffer(request, len(request))
        response_buf = ctypes.create_string_buffer(NSM_RESPONSE_MAX_SIZE)
        message = NsmRawMessage()
        message.request.addr = ctypes.addressof(request_buf)
        message.request.len = len(request)
        message.response.addr = ctypes.addressof(response_buf)
        message.response.len = NSM_RESPONSE_MAX_SIZE
        with self._lock:
            if self._fd is None:
                raise NsmClosed("the NSM device is closed")
            try:
                fcntl.ioctl(self._fd, NSM_IOCTL_RAW, message, True)
            except OSError as exc:
                if exc.errno == errno.EMSGSIZE:
                    raise NsmInputTooLarge("the NSM driver refused the request size") from None
                raise NsmInternalError(
                    f"NSM ioctl failed: {os.strerror(exc.errno or 0)}"
                ) from None
        length = min(int(message.response.len), NSM_RESPONSE_MAX_SIZE)
        return response_buf.raw[:length]

    def close(self) -> None:
        with self._lock:
            fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


def _open_device(path: str) -> int:
    try:
        return os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NsmUnavailable(f"no NSM device at {path} (not inside a Nitro Enclave?)") from None
    except OSError as exc:
        raise NsmUnavailable(
            f"cannot open NSM device {path}: {os.strerror(exc.errno or 0)}"
        ) from None


class DeviceNsm(ProtocolNsm):
    """The NSM reached through ioctl on /dev/nsm."""

    def __init__(self, path: str = DEFAULT_DEVICE) -> None:
        self.path = path
        transport = _IoctlTransport(_open_device(path))
        super().__init__(transport.roundtrip, on_close=transport.close)
        log.debug("opened NSM device %s", path)
