from enclave.errors import AttestationError, HermeticError, SealedDataError


def test_messages_are_one_line() -> None:
    err = SealedDataError("chunk 3\n  failed authentication")
    assert str(err) == "chunk 3 failed authentication"
    assert isinstance(err, HermeticError)


def test_families_are_distinct() -> None:
    assert not issubclass(AttestationError, SealedDataError)
