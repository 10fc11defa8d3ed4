"""NSM backend over libnsm.so, the C ABI of aws-nitro-enclaves-nsm-api (nsm-lib/).

Bound with cffi in ABI mode (no compiler needed). The declarations below follow
nsm-lib/src/lib.rs as cbindgen renders it: ``ErrorCode`` and ``Digest`` are
``repr(C)`` enums (C ``int``), lengths are ``uint32_t`` except ``nsm_get_random``'s
``uintptr_t`` (Rust ``usize``), and a NULL input pointer means "absent" (None).
"""
from __future__ import annotations

import ctypes.util
import functools
import logging
import threading
from typing import Any

from enclave.nsm.errors import (
    NsmClosed,
    NsmInvalidArgument,
    NsmInvalidIndex,
    NsmInvalidResponse,
    NsmUnavailable,
)
from enclave.nsm.interface import (
    Nsm,
    NsmDescription,
    PcrState,
    check_attestation_inputs,
    check_random_length,
)
from enclave.nsm.protocol import NSM_RESPONSE_MAX_SIZE, Digest, ErrorCode, error_class

__all__ = ["CDEF", "LIBRARY_NAMES", "LibNsm", "ffi"]

log = logging.getLogger(__name__)

CDEF = """
typedef enum {
    ERROR_CODE_SUCCESS,
    ERROR_CODE_INVALID_ARGUMENT,
    ERROR_CODE_INVALID_INDEX,
    ERROR_CODE_INVALID_RESPONSE,
    ERROR_CODE_READ_ONLY_INDEX,
    ERROR_CODE_INVALID_OPERATION,
    ERROR_CODE_BUFFER_TOO_SMALL,
    ERROR_CODE_INPUT_TOO_LARGE,
    ERROR_CODE_INTERNAL_ERROR
} ErrorCode;

typedef enum {
    DIGEST_SHA256,
    DIGEST_SHA384,
    DIGEST_SHA512
} Digest;

typedef struct {
    uint16_t version_major;
    uint16_t version_minor;
    uint16_t version_patch;
    uint8_t module_id[100];
    uint32_t module_id_len;
    uint16_t max_pcrs;
    uint16_t locked_pcrs[64];
    uint32_t locked_pcrs_len;
    Digest digest;
} NsmDescription;

int32_t nsm_lib_init(void);
void nsm_lib_exit(int32_t fd);
ErrorCode nsm_extend_pcr(int32_t fd, uint16_t index, const uint8_t *data,
                         uint32_t data_len, uint8_t *pcr_data, uint32_t *pcr_data_len);
ErrorCode nsm_describe_pcr(int32_t fd, uint16_t index, bool *lock,
                           uint8_t *data, uint32_t *data_len);
ErrorCode nsm_lock_pcr(int32_t fd, uint16_t index);
ErrorCode nsm_lock_pcrs(int32_t fd, uint16_t range);
ErrorCode nsm_get_description(int32_t fd, NsmDescription *nsm_description);
ErrorCode nsm_get_attestation_doc(int32_t fd,
                                  const uint8_t *user_data, uint32_t user_data_len,
                                  const uint8_t *nonce_data, uint32_t nonce_len,
                                  const uint8_t *pub_key_data, uint32_t pub_key_len,
                                  uint8_t *att_doc_data, uint32_t *att_doc_len);
ErrorCode nsm_get_random(int32_t fd, uint8_t *buf, uintptr_t *buf_len);
"""

#: Tried in order when no explicit path is given (Makefile: soname libnsm.so.0).
LIBRARY_NAMES: tuple[str, ...] = ("libnsm.so", "libnsm.so.0")

# Largest digest (SHA-512) with room to spare; a longer answer is BufferTooSmall.
_PCR_BUFFER = 64
# nsm_get_random hands out at most this much per call (nsm-lib docs: "up to 256 bytes").
_RANDOM_CHUNK = 256
_U16_MAX = 0xFFFF


@functools.lru_cache(maxsize=1)
def ffi() -> Any:
    """The parsed cffi FFI for libnsm (cached; parsing needs no compiler)."""
    import cffi

    instance = cffi.FFI()
    instance.cdef(CDEF)
    return instance


def _candidates(library: str | None) -> list[str]:
    if library is not None:
        return [library]
    names = list(LIBRARY_NAMES)
    found = ctypes.util.find_library("nsm")
    if found and found not in names:
        names.append(found)
    return names


def _dlopen(library: str | None) -> Any:
    tried = _candidates(library)
    for name in tried:
        try:
            return ffi().dlopen(name)
        except OSError as exc:
            log.debug("cannot load %s: %s", name, exc)
    raise NsmUnavailable(f"cannot load libnsm (tried {', '.join(tried)})")


def _u16(value: int, what: str) -> int:
    if type(value) is not int or not 0 <= value <= _U16_MAX:
        raise NsmInvalidIndex(f"NSM {what} must be an integer in 0..65535, got {value!r}")
    return value


def _check(status: int, operation: str) -> None:
    if status == ErrorCode.Success:
        return
    try:
        code = ErrorCode(status)
    except ValueError:
        raise NsmInvalidResponse(f"libnsm {operation} returned unknown status {status}") from None
    raise error_class(code)(f"NSM refused {operation}: {code.name}")


class LibNsm(Nsm):
    """The NSM reached through libnsm.so."""

    def __init__(self, library: str | None = None) -> None:
        self._lib = _dlopen(library)
        fd = int(self._lib.nsm_lib_init())
        if fd < 0:
            raise NsmUnavailable("libnsm could not open the NSM device (nsm_lib_init failed)")
        self._fd: int | None = fd
        self._lock = threading.Lock()
        log.debug("opened NSM through libnsm")

    def _handle(self) -> int:
        if self._fd is None:
            raise NsmClosed("the NSM handle is closed")
        return self._fd

    def attest(
        self,
        *,
        user_data: bytes | None = None,
        nonce: bytes | None = None,
        public_key: bytes | None = None,
    ) -> bytes:
        check_attestation_inputs(user_data, nonce, public_key)
        f = ffi()
        args: list[Any] = []
        for value in (user_data, nonce, public_key):
            if value is None:
                args += [f.NULL, 0]
            else:
                # new[] always yields a non-NULL pointer, so b"" stays "present but empty".
                buf = f.new("uint8_t[]", max(len(value), 1))
                f.memmove(buf, bytes(value), len(value))
                args += [buf, len(value)]
        out = f.new("uint8_t[]", NSM_RESPONSE_MAX_SIZE)
        out_len = f.new("uint32_t *", NSM_RESPONSE_MAX_SIZE)
        with self._lock:
            status = self._lib.nsm_get_attestation_doc(self._handle(), *args, out, out_len)
        _check(status, "Attestation")
        if out_len[0] == 0:
            raise NsmInvalidResponse("NSM returned an empty attestation document")
        return bytes(f.buffer(out, out_len[0]))

    def get_random(self, n: int) -> bytes:
        check_random_length(n)
        f = ffi()
        chunks: list[bytes] = []
        have = 0
        buf = f.new("uint8_t[]", _RANDOM_CHUNK)
        size = f.new("uintptr_t *")
        while have < n:
            size[0] = _RANDOM_CHUNK
            with self._lock:
                status = self._lib.nsm_get_random(self._handle(), buf, size)
            _check(status, "GetRandom")
            got = min(int(size[0]), _RANDOM_CHUNK)
            if got == 0:
                raise NsmInvalidResponse("NSM GetRandom returned no bytes")
            chunks.append(bytes(f.buffer(buf, got)))
            have += got
        return b"".join(chunks)[:n]

    def describe_pcr(self, index: int) -> PcrState:
        f = ffi()
        lock = f.new("bool *")
        data = f.new("uint8_t[]", _PCR_BUFFER)
        size = f.new("uint32_t *", _PCR_BUFFER)
        with self._lock:
            status = self._lib.nsm_describe_pcr(
                self._handle(), _u16(index, "PCR index"), lock, data, size
            )
        _check(status, "DescribePCR")
        return PcrState(value=bytes(f.buffer(data, size[0])), locked=bool(lock[0]))

    def extend_pcr(self, index: int, data: bytes) -> bytes:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise NsmInvalidArgument("PCR extend data must be bytes")
        f = ffi()
        raw = bytes(data)
        src = f.new("uint8_t[]", max(len(raw), 1))
        f.memmove(src, raw, len(raw))
        out = f.new("uint8_t[]", _PCR_BUFFER)
        size = f.new("uint32_t *", _PCR_BUFFER)
        with self._lock:
            status = self._lib.nsm_extend_pcr(
                self._handle(), _u16(index, "PCR index"), src, len(raw), out, size
            )
        _check(status, "ExtendPCR")
        return bytes(f.buffer(out, size[0]))

    def lock_pcr(self, index: int) -> None:
        with self._lock:
            status = self._lib.nsm_lock_pcr(self._handle(), _u16(index, "PCR index"))
        _check(status, "LockPCR")

    def describe(self) -> NsmDescription:
        f = ffi()
        desc = f.new("NsmDescription *")
        with self._lock:
            status = self._lib.nsm_get_description(self._handle(), desc)
        _check(status, "DescribeNSM")
        module_len = min(int(desc.module_id_len), 100)
        locked_len = min(int(desc.locked_pcrs_len), 64)
        try:
            digest = Digest(int(desc.digest)).name
        except ValueError:
            raise NsmInvalidResponse(f"libnsm reported unknown digest {int(desc.digest)}") from None
        return NsmDescription(
            module_id=bytes(f.buffer(desc.module_id, module_len)).decode("utf-8", "replace"),
            max_pcrs=int(desc.max_pcrs),
            locked_pcrs=tuple(sorted({int(desc.locked_pcrs[i]) for i in range(locked_len)})),
            digest=digest,
            version=(int(desc.version_major), int(desc.version_minor), int(desc.version_patch)),
        )

    def close(self) -> None:
        with self._lock:
            fd, self._fd = self._fd, None
        if fd is not None:
            self._lib.nsm_lib_exit(fd)
