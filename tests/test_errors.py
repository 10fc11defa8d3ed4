from __future__ import annotations

import importlib
import pkgutil

import enclave
import enclave.errors
from enclave.errors import CODES, AttestationError, HermeticError, SealedDataError


def test_messages_are_one_line() -> None:
    err = SealedDataError("chunk 3\n  failed authentication")
    assert str(err) == "chunk 3 failed authentication"
    assert isinstance(err, HermeticError)


def test_families_are_distinct() -> None:
    assert not issubclass(AttestationError, SealedDataError)


def _subclasses(cls: type) -> set[type]:
    found = set(cls.__subclasses__())
    for sub in list(found):
        found |= _subclasses(sub)
    return found


def test_every_enclave_error_has_a_documented_wire_code() -> None:
    # The codes are the protocol: a typo or an undocumented new one must fail here.
    for info in pkgutil.walk_packages(enclave.__path__, "enclave."):
        importlib.import_module(info.name)
    classes = {c for c in _subclasses(HermeticError) if c.__module__.startswith("enclave.")}
    assert len(classes) > 50
    unknown = {f"{c.__module__}.{c.__qualname__}": c.code for c in classes if c.code not in CODES}
    assert not unknown
    doc = enclave.errors.__doc__ or ""
    assert not [code for code in CODES if f"\n    {code} " not in doc]
