"""The libnsm.so backend: declarations parse, a missing library is a clean error,
and (where a C compiler exists) every call marshals its arguments correctly against
a small stub library exporting the nsm-lib C ABI."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from enclave.nsm import LibNsm, Nsm, NsmUnavailable
from enclave.nsm.errors import (
    NsmClosed,
    NsmInputTooLarge,
    NsmInvalidIndex,
    NsmInvalidResponse,
    NsmReadOnlyIndex,
)
from enclave.nsm.libnsm import ffi


def test_cdef_parses_and_declares_the_nsm_lib_abi() -> None:
    f = ffi()
    declared = set(f._parser._declarations)  # noqa: SLF001 - cffi keeps parsed names here
    for name in (
        "nsm_lib_init", "nsm_lib_exit", "nsm_get_attestation_doc", "nsm_get_random",
        "nsm_describe_pcr", "nsm_extend_pcr", "nsm_lock_pcr", "nsm_lock_pcrs",
        "nsm_get_description",
    ):
        assert f"function {name}" in declared
    assert f.typeof("ErrorCode").kind == "enum"
    assert f.sizeof("ErrorCode") == 4
    # u16 x3, u8[100], (pad 2) u32, u16, u16[64], (pad 2) u32, int enum.
    assert f.sizeof("NsmDescription") == 6 + 100 + 2 + 4 + 2 + 128 + 2 + 4 + 4
    assert f.offsetof("NsmDescription", "module_id_len") == 108
    assert f.offsetof("NsmDescription", "locked_pcrs") == 114
    assert f.offsetof("NsmDescription", "digest") == 248
    assert f.typeof("uintptr_t").cname == "uintptr_t"
    assert f.sizeof("uintptr_t") == f.sizeof("void *")


def test_missing_library_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(NsmUnavailable, match="cannot load libnsm"):
        LibNsm(str(tmp_path / "libnsm.so"))


STUB_C = r"""
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

typedef enum { OK, INVALID_ARGUMENT, INVALID_INDEX, INVALID_RESPONSE, READ_ONLY_INDEX,
               INVALID_OPERATION, BUFFER_TOO_SMALL, INPUT_TOO_LARGE, INTERNAL_ERROR } ErrorCode;
typedef enum { SHA256, SHA384, SHA512 } Digest;
typedef struct {
    uint16_t version_major, version_minor, version_patch;
    uint8_t module_id[100]; uint32_t module_id_len;
    uint16_t max_pcrs; uint16_t locked_pcrs[64]; uint32_t locked_pcrs_len;
    Digest digest;
} NsmDescription;

static int init_fails = 0;
static int exits = 0;
static uint8_t counter = 0;

int32_t stub_exits(void) { return exits; }
void stub_fail_init(int v) { init_fails = v; }

int32_t nsm_lib_init(void) { return init_fails ? -1 : 7; }
void nsm_lib_exit(int32_t fd) { if (fd == 7) exits++; }

static ErrorCode put(const uint8_t *src, uint32_t n, uint8_t *dst, uint32_t *cap) {
    ErrorCode r = *cap >= n ? OK : BUFFER_TOO_SMALL;
    if (*cap > n) *cap = n;
    memcpy(dst, src, *cap);
    return r;
}

/* Document = for each field: '-' if NULL, else tag letter, u8 length, bytes. */
ErrorCode nsm_get_attestation_doc(int32_t fd, const uint8_t *u, uint32_t ul,
        const uint8_t *n, uint32_t nl, const uint8_t *p, uint32_t pl,
        uint8_t *out, uint32_t *out_len) {
    uint8_t doc[4096]; uint32_t k = 0;
    const uint8_t *src[3] = {u, n, p}; uint32_t len[3] = {ul, nl, pl};
    const char tag[3] = {'U', 'N', 'P'};
    if (fd != 7) return INVALID_ARGUMENT;
    for (int i = 0; i < 3; i++) {
        if (!src[i]) { doc[k++] = '-'; continue; }
        doc[k++] = tag[i]; doc[k++] = (uint8_t)len[i];
        memcpy(doc + k, src[i], len[i]); k += len[i];
    }
    return put(doc, k, out, out_len);
}

ErrorCode nsm_get_random(int32_t fd, uint8_t *buf, uintptr_t *buf_len) {
    if (fd != 7 || !buf || !*buf_len) return INVALID_ARGUMENT;
    if (*buf_len > 100) *buf_len = 100;  /* short answers: the caller must loop */
    for (uintptr_t i = 0; i < *buf_len; i++) buf[i] = counter++;
    return OK;
}

ErrorCode nsm_describe_pcr(int32_t fd, uint16_t index, bool *lock, uint8_t *data,
        uint32_t *data_len) {
    uint8_t v[48];
    if (index >= 32) return INVALID_INDEX;
    memset(v, index, sizeof v);
    *lock = index < 16;
    return put(v, sizeof v, data, data_len);
}

ErrorCode nsm_extend_pcr(int32_t fd, uint16_t index, const uint8_t *data, uint32_t data_len,
        uint8_t *pcr, uint32_t *pcr_len) {
    uint8_t v[48];
    if (index >= 32) return INVALID_INDEX;
    if (index < 16) return READ_ONLY_INDEX;
    if (data_len > 1000) return INPUT_TOO_LARGE;
    memset(v, 0, sizeof v);
    v[0] = (uint8_t)index; v[1] = (uint8_t)data_len;
    if (data_len) v[2] = data[data_len - 1];
    return put(v, sizeof v, pcr, pcr_len);
}

ErrorCode nsm_lock_pcr(int32_t fd, uint16_t index) { return index < 16 ? READ_ONLY_INDEX : OK; }
ErrorCode nsm_lock_pcrs(int32_t fd, uint16_t range) { return range > 32 ? INVALID_INDEX : OK; }

ErrorCode nsm_get_description(int32_t fd, NsmDescription *d) {
    d->version_major = 1; d->version_minor = 2; d->version_patch = 3;
    memcpy(d->module_id, "i-stub-enc01", 12); d->module_id[12] = 0; d->module_id_len = 12;
    d->max_pcrs = 32;
    for (int i = 0; i < 16; i++) d->locked_pcrs[i] = (uint16_t)(15 - i);
    d->locked_pcrs_len = 16;
    d->digest = SHA384;
    return OK;
}
"""


@pytest.fixture(scope="module")
def stub_library(tmp_path_factory: pytest.TempPathFactory) -> str:
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler to build the libnsm stub")
    directory = tmp_path_factory.mktemp("libnsm")
    source = directory / "stub.c"
    source.write_text(STUB_C)
    library = directory / "libnsm.so"
    subprocess.run(
        [compiler, "-shared", "-fPIC", "-O1", "-o", str(library), str(source)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return str(library)


def test_stub_attest_passes_null_for_absent_and_empty_for_empty(stub_library: str) -> None:
    with LibNsm(stub_library) as nsm:
        assert isinstance(nsm, Nsm)
        assert nsm.attest() == b"---"
        assert nsm.attest(user_data=b"", nonce=b"ab") == b"U\x00N\x02ab-"
        assert nsm.attest(public_key=b"\x00\x01") == b"--P\x02\x00\x01"
        with pytest.raises(NsmInputTooLarge):
            nsm.attest(nonce=bytes(1025))


def test_stub_random_loops_over_short_answers(stub_library: str) -> None:
    with LibNsm(stub_library) as nsm:
        data = nsm.get_random(250)
        assert len(data) == 250
        # The stub counts up across calls: consecutive chunks continue the sequence.
        assert all((data[i + 1] - data[i]) % 256 == 1 for i in range(249))


def test_stub_pcr_calls(stub_library: str) -> None:
    with LibNsm(stub_library) as nsm:
        state = nsm.describe_pcr(5)
        assert state.value == bytes([5]) * 48 and state.locked
        assert not nsm.describe_pcr(20).locked
        with pytest.raises(NsmInvalidIndex):
            nsm.describe_pcr(32)
        value = nsm.extend_pcr(17, b"xyz")
        assert value[:3] == bytes([17, 3, ord("z")]) and len(value) == 48
        with pytest.raises(NsmReadOnlyIndex):
            nsm.extend_pcr(3, b"x")
        with pytest.raises(NsmInvalidIndex):
            nsm.extend_pcr(70000, b"x")
        nsm.lock_pcr(16)
        with pytest.raises(NsmReadOnlyIndex):
            nsm.lock_pcr(1)


def test_stub_describe(stub_library: str) -> None:
    with LibNsm(stub_library) as nsm:
        d = nsm.describe()
    assert d.module_id == "i-stub-enc01"
    assert d.version == (1, 2, 3)
    assert d.max_pcrs == 32
    assert d.locked_pcrs == tuple(range(16))
    assert d.digest == "SHA384"


def test_stub_close_calls_exit_once_and_is_final(stub_library: str) -> None:
    nsm = LibNsm(stub_library)
    before = _exits(stub_library)
    nsm.close()
    nsm.close()
    assert _exits(stub_library) == before + 1
    with pytest.raises(NsmClosed):
        nsm.get_random(1)


def test_stub_failed_init_is_unavailable(stub_library: str) -> None:
    _stub(stub_library).stub_fail_init(1)
    try:
        with pytest.raises(NsmUnavailable, match="nsm_lib_init"):
            LibNsm(stub_library)
    finally:
        _stub(stub_library).stub_fail_init(0)


def _stub(path: str):  # type: ignore[no-untyped-def]
    import cffi

    stub_ffi = cffi.FFI()
    stub_ffi.cdef("int32_t stub_exits(void); void stub_fail_init(int v);")
    return stub_ffi.dlopen(path)


def _exits(path: str) -> int:
    return int(_stub(path).stub_exits())


def test_unknown_status_is_invalid_response() -> None:
    from enclave.nsm import libnsm

    with pytest.raises(NsmInvalidResponse):
        libnsm._check(99, "Test")  # noqa: SLF001
