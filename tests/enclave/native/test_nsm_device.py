"""The /dev/nsm backend: ioctl number, message layout, and a clean failure without
the device (there is no /dev/nsm outside a Nitro Enclave)."""
from __future__ import annotations

import ctypes
from pathlib import Path

import pytest

from enclave.native.nsm_device import (
    NSM_IOCTL_MAGIC,
    NSM_IOCTL_RAW,
    DeviceNsm,
    NsmIovec,
    NsmRawMessage,
    ioc,
    iowr,
)
from enclave.nsm.errors import NsmUnavailable


def test_ioctl_number_is_iowr_0x0a_0_nsm_raw() -> None:
    # _IOWR(0x0A, 0, 32): dir READ|WRITE=3 << 30, size 32 << 16, type 0x0A << 8, nr 0.
    assert NSM_IOCTL_MAGIC == 0x0A
    assert NSM_IOCTL_RAW == 0xC0200A00
    assert NSM_IOCTL_RAW == (3 << 30) | (32 << 16) | (0x0A << 8) | 0


def test_ioc_layout_matches_known_linux_ioctls() -> None:
    # Known values from Linux headers: _IOWR('V', 9, struct v4l2_buffer{88}) on x86-64
    # is 0xC0585609; _IOR('T', 0x30, unsigned int) (TIOCGPTN) is 0x80045430.
    assert iowr(ord("V"), 9, 88) == 0xC0585609
    assert ioc(2, ord("T"), 0x30, 4) == 0x80045430
    with pytest.raises(ValueError):
        ioc(3, 0x0A, 0, 1 << 14)


def test_message_layout_is_two_u64_iovecs() -> None:
    assert ctypes.sizeof(NsmIovec) == 16
    assert ctypes.sizeof(NsmRawMessage) == 32
    assert NsmRawMessage.request.offset == 0
    assert NsmRawMessage.response.offset == 16
    assert NsmIovec.addr.offset == 0
    assert NsmIovec.len.offset == 8
    # Same layout as the struct iovec the nsm-api driver passes on 64-bit hosts.
    class Iovec(ctypes.Structure):
        _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]

    assert ctypes.sizeof(Iovec) * 2 == ctypes.sizeof(NsmRawMessage)


def test_missing_device_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(NsmUnavailable, match="no NSM device"):
        DeviceNsm(str(tmp_path / "nsm"))


def test_unopenable_device_is_unavailable(tmp_path: Path) -> None:
    # A directory cannot be opened read-write: a different OSError, same clean type.
    with pytest.raises(NsmUnavailable, match="cannot open NSM device"):
        DeviceNsm(str(tmp_path))


def test_ioctl_path_marshals_and_maps_driver_errors() -> None:
    # /dev/null rejects the NSM ioctl (ENOTTY): this runs the real buffer setup and
    # fcntl call without Nitro hardware and checks the failure is a clean NSM error.
    import os

    from enclave.native.nsm_device import _IoctlTransport
    from enclave.nsm.errors import NsmClosed, NsmInternalError

    transport = _IoctlTransport(os.open(os.devnull, os.O_RDWR))
    with pytest.raises(NsmInternalError, match="ioctl failed"):
        transport.roundtrip(b"\x69GetRandom")
    transport.close()
    transport.close()
    with pytest.raises(NsmClosed):
        transport.roundtrip(b"\x69GetRandom")
