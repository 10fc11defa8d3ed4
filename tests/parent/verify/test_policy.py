from __future__ import annotations

from datetime import timedelta

import pytest

from enclave.attestation.document import parse_attestation
from parent.verify.attestation import verify_attestation
from parent.verify.errors import (
    DocumentInFuture,
    DocumentTooOld,
    NonceMismatch,
    PcrMismatch,
    PolicyViolation,
    PublicKeyMismatch,
    UserDataMismatch,
)
from parent.verify.policy import AttestationPolicy, pcr_set
from tests.support.attestation_chain import AT, TestChain, default_pcrs, make_document

PCRS = default_pcrs()


@pytest.fixture(scope="module")
def doc(chain: TestChain):
    return parse_attestation(
        make_document(chain, public_key=b"pk", user_data=b"user-data", nonce=b"nonce-0123")
    )


def test_empty_policy_accepts(doc) -> None:
    AttestationPolicy().check(doc, at=AT)


def test_single_pcr_set_all_pairs_must_match(doc) -> None:
    AttestationPolicy.from_pcrs({0: PCRS[0], 1: PCRS[1], 2: PCRS[2], 8: PCRS[8]}).check(doc, at=AT)
    with pytest.raises(PcrMismatch):
        AttestationPolicy.from_pcrs({0: PCRS[0], 1: PCRS[2]}).check(doc, at=AT)


def test_any_of_several_pcr_sets(doc) -> None:
    old_release = {0: b"\xaa" * 48}
    current = {0: PCRS[0], 2: PCRS[2]}
    AttestationPolicy.from_pcrs(old_release, current).check(doc, at=AT)
    with pytest.raises(PcrMismatch, match="2 allowed"):
        AttestationPolicy.from_pcrs(old_release, {0: b"\xbb" * 48}).check(doc, at=AT)


def test_raw_frozenset_form(doc) -> None:
    policy = AttestationPolicy(allowed_pcrs=frozenset({((0, PCRS[0]), (4, PCRS[4]))}))
    policy.check(doc, at=AT)


def test_pcr_absent_from_document_does_not_match(doc) -> None:
    with pytest.raises(PcrMismatch):
        AttestationPolicy.from_pcrs({20: b"\x00" * 48}).check(doc, at=AT)


def test_empty_allowed_set_admits_nothing(doc) -> None:
    with pytest.raises(PcrMismatch):
        AttestationPolicy(allowed_pcrs=frozenset()).check(doc, at=AT)


@pytest.mark.parametrize(
    "bad",
    [
        frozenset({()}),  # an empty alternative would match everything
        frozenset({((0, b"\x00" * 47),)}),
        frozenset({((32, b"\x00" * 48),)}),
        frozenset({((0, "00" * 48),)}),
        frozenset({((0, b"\x00" * 48), (0, b"\x01" * 48))}),
        frozenset({(0, b"\x00" * 48)}),
    ],
)
def test_invalid_pcr_sets_are_refused(bad: frozenset) -> None:
    with pytest.raises((ValueError, TypeError)):
        AttestationPolicy(allowed_pcrs=bad)


def test_allowed_pcrs_must_be_frozenset() -> None:
    with pytest.raises(TypeError):
        AttestationPolicy(allowed_pcrs={((0, b"\x00" * 48),)})  # type: ignore[arg-type]


def test_pcr_set_is_canonical() -> None:
    assert pcr_set({2: b"\x02" * 48, 0: b"\x00" * 48}) == ((0, b"\x00" * 48), (2, b"\x02" * 48))
    assert AttestationPolicy.from_pcrs({2: b"\x02" * 48, 0: b"\x00" * 48}) == AttestationPolicy.from_pcrs(
        {0: b"\x00" * 48, 2: b"\x02" * 48}
    )


@pytest.mark.parametrize(
    "field,error",
    [("nonce", NonceMismatch), ("user_data", UserDataMismatch), ("public_key", PublicKeyMismatch)],
)
def test_byte_fields(doc, field: str, error: type[Exception]) -> None:
    AttestationPolicy(**{field: getattr(doc, field)}).check(doc, at=AT)
    with pytest.raises(error, match="differs"):
        AttestationPolicy(**{field: getattr(doc, field) + b"x"}).check(doc, at=AT)
    with pytest.raises(error, match="differs"):
        AttestationPolicy(**{field: b""}).check(doc, at=AT)


@pytest.mark.parametrize(
    "field,error",
    [("nonce", NonceMismatch), ("user_data", UserDataMismatch), ("public_key", PublicKeyMismatch)],
)
def test_required_field_absent(chain: TestChain, field: str, error: type[Exception]) -> None:
    bare = parse_attestation(make_document(chain))
    with pytest.raises(error, match="no "):
        AttestationPolicy(**{field: b"expected"}).check(bare, at=AT)


def test_max_age(doc) -> None:
    policy = AttestationPolicy(max_age=timedelta(minutes=5))
    policy.check(doc, at=AT)
    policy.check(doc, at=AT + timedelta(minutes=5))
    with pytest.raises(DocumentTooOld):
        policy.check(doc, at=AT + timedelta(minutes=5, milliseconds=1))
    policy.check(doc, at=AT - timedelta(minutes=5))  # within clock skew
    with pytest.raises(DocumentInFuture):
        policy.check(doc, at=AT - timedelta(minutes=6))
    strict = AttestationPolicy(max_age=timedelta(minutes=5), clock_skew=timedelta(0))
    with pytest.raises(DocumentInFuture):
        strict.check(doc, at=AT - timedelta(milliseconds=1))


def test_invalid_durations() -> None:
    with pytest.raises(ValueError):
        AttestationPolicy(max_age=timedelta(seconds=-1))
    with pytest.raises(ValueError):
        AttestationPolicy(clock_skew=timedelta(seconds=-1))
    with pytest.raises(TypeError):
        AttestationPolicy(nonce="text")  # type: ignore[arg-type]


def test_policy_errors_share_a_family(chain: TestChain) -> None:
    data = make_document(chain, nonce=b"a")
    with pytest.raises(PolicyViolation):
        verify_attestation(data, root_der=chain.root_der, at=AT, policy=AttestationPolicy(nonce=b"b"))


def test_policy_is_frozen_and_hashable() -> None:
    policy = AttestationPolicy.from_pcrs({0: b"\x00" * 48}, nonce=b"n", max_age=timedelta(seconds=1))
    assert hash(policy) == hash(AttestationPolicy.from_pcrs({0: b"\x00" * 48}, nonce=b"n",
                                                              max_age=timedelta(seconds=1)))
    with pytest.raises(AttributeError):
        policy.nonce = b"x"  # type: ignore[misc]


# --- messages name what differs ------------------------------------------------------------------


def test_pcr_mismatch_names_the_index_and_both_values(doc) -> None:
    wrong = b"\xab" * 48
    with pytest.raises(PcrMismatch) as info:
        AttestationPolicy.from_pcrs({0: PCRS[0], 1: wrong, 2: PCRS[2]}).check(doc, at=AT)
    message = str(info.value)
    assert message == (f"PCR1 differs: expected {'ab' * 4}...{'ab' * 4}, "
                       f"attested {PCRS[1].hex()[:8]}...{PCRS[1].hex()[-8:]}")
    assert "PCR0" not in message and "PCR2" not in message


def test_pcr_mismatch_shows_where_values_differ_in_the_middle(doc) -> None:
    wrong = bytearray(PCRS[0])
    wrong[24] ^= 0x01
    with pytest.raises(PcrMismatch) as info:
        AttestationPolicy.from_pcrs({0: bytes(wrong)}).check(doc, at=AT)
    # Both would shorten to the same ends; the window starts 4 digits before the differing digit 49.
    assert str(info.value) == (f"PCR0 differs: expected ...{bytes(wrong).hex()[45:57]}..., "
                               f"attested ...{PCRS[0].hex()[45:57]}...")


def test_pcr_absent_is_named(doc) -> None:
    with pytest.raises(PcrMismatch, match=r"^PCR20 is not in the document \(expected 00000000\.\.\.00000000\)$"):
        AttestationPolicy.from_pcrs({20: b"\x00" * 48}).check(doc, at=AT)


def test_several_sets_report_the_closest(doc) -> None:
    far = {0: b"\xaa" * 48, 1: b"\xaa" * 48}
    near = {0: PCRS[0], 1: b"\xbb" * 48}
    with pytest.raises(PcrMismatch) as info:
        AttestationPolicy.from_pcrs(far, near).check(doc, at=AT)
    assert str(info.value).startswith("document PCRs match none of the 2 allowed PCR sets; closest: PCR1 differs: "
                                      "expected bbbbbbbb...bbbbbbbb")


def test_field_mismatch_shows_both_values(doc) -> None:
    with pytest.raises(NonceMismatch) as info:
        AttestationPolicy(nonce=b"other").check(doc, at=AT)
    assert str(info.value) == f"document nonce differs: expected {b'other'.hex()}, document {b'nonce-0123'.hex()} (5 vs 10 bytes)"
