"""What a verified document must additionally say to be accepted.

A policy is checked only after the chain and signature verified, so every field
compared here is authentic; the comparisons are still constant-time because a
caller may expose accept/refuse timing to whoever submitted the document.
"""
from __future__ import annotations

import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from enclave.attestation.document import PCR_COUNT, PCR_VALUE_SIZES
from parent.verify.errors import (
    DocumentInFuture,
    DocumentTooOld,
    ImageNotPinned,
    NonceMismatch,
    PcrMismatch,
    PublicKeyMismatch,
    UserDataMismatch,
)

if TYPE_CHECKING:
    from enclave.attestation.document import AttestationDocument

PcrSet = tuple[tuple[int, bytes], ...]

#: The measurement that names the code: PCR0 hashes the whole enclave image file (kernel,
#: init and the application). PCR1 is the same for every image one nitro-cli version
#: builds, PCR3/PCR4 name the parent's IAM role and instance (whoever runs the enclave
#: picks them) and PCR8 only the signer, so none of them alone says which code ran.
#: The key policies condition on PCR0 too (`kms:RecipientAttestation:ImageSha384`).
IMAGE_PCR = 0

# NSM and verifier clocks are both NTP-disciplined; a few minutes absorbs drift.
DEFAULT_CLOCK_SKEW = timedelta(minutes=5)


@dataclass(frozen=True)
class AttestationPolicy:
    """Requirements on a verified document; None means "not checked".

    allowed_pcrs: a set of alternatives; the document passes if, for at least one
    alternative, every (index, value) pair equals the document's PCR. An empty set
    admits nothing.
    max_age: the document timestamp must be no older than `at - max_age` and no
    later than `at + clock_skew`.
    """

    allowed_pcrs: frozenset[PcrSet] | None = None
    nonce: bytes | None = None
    user_data: bytes | None = None
    public_key: bytes | None = None
    max_age: timedelta | None = None
    clock_skew: timedelta = DEFAULT_CLOCK_SKEW

    def __post_init__(self) -> None:
        if self.allowed_pcrs is not None:
            if not isinstance(self.allowed_pcrs, frozenset):
                raise TypeError("allowed_pcrs must be a frozenset of PCR tuples")
            for alternative in self.allowed_pcrs:
                _validate_pcr_set(alternative)
        for name in ("nonce", "user_data", "public_key"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, bytes):
                raise TypeError(f"{name} must be bytes or None")
        if self.max_age is not None and self.max_age < timedelta(0):
            raise ValueError("max_age must not be negative")
        if self.clock_skew < timedelta(0):
            raise ValueError("clock_skew must not be negative")

    @classmethod
    def from_pcrs(
        cls,
        pcrs: Mapping[int, bytes],
        *alternatives: Mapping[int, bytes],
        nonce: bytes | None = None,
        user_data: bytes | None = None,
        public_key: bytes | None = None,
        max_age: timedelta | None = None,
    ) -> AttestationPolicy:
        """Policy allowing each given {index: value} mapping as one acceptable PCR set."""
        allowed = frozenset(pcr_set(mapping) for mapping in (pcrs, *alternatives))
        return cls(
            allowed_pcrs=allowed,
            nonce=nonce,
            user_data=user_data,
            public_key=public_key,
            max_age=max_age,
        )

    @property
    def pins_image(self) -> bool:
        """Whether every allowed PCR set requires PCR0, so no other image's document passes."""
        return self.allowed_pcrs is not None and all(
            any(index == IMAGE_PCR for index, _ in alternative) for alternative in self.allowed_pcrs
        )

    def check(self, document: AttestationDocument, *, at: datetime) -> None:
        """Raise the PolicyViolation subclass for the first requirement `document` misses."""
        if self.allowed_pcrs is not None and not any(
            _pcrs_match(document.pcrs, alternative) for alternative in self.allowed_pcrs
        ):
            raise PcrMismatch(_pcr_mismatch_message(document.pcrs, self.allowed_pcrs))
        _require_equal("nonce", self.nonce, document.nonce, NonceMismatch)
        _require_equal("user_data", self.user_data, document.user_data, UserDataMismatch)
        _require_equal("public_key", self.public_key, document.public_key, PublicKeyMismatch)
        if self.max_age is not None:
            stamp = document.timestamp
            if stamp < at - self.max_age:
                raise DocumentTooOld(
                    f"document from {stamp.isoformat()} is older than {self.max_age} at {at.isoformat()}"
                )
            if stamp > at + self.clock_skew:
                raise DocumentInFuture(
                    f"document from {stamp.isoformat()} is later than {at.isoformat()} plus {self.clock_skew}"
                )


def require_pinned_image(policy: AttestationPolicy | None) -> AttestationPolicy:
    """`policy` if it pins the enclave image (see `pins_image`); ImageNotPinned otherwise.

    For callers that accept a document as coming from one image: with no pin, a document
    from any enclave under the root (an attacker's image included) would pass.
    """
    if policy is None or not policy.pins_image:
        raise ImageNotPinned(
            f"image not pinned: the policy must require PCR{IMAGE_PCR} (the enclave image's measurement) "
            f"in every allowed PCR set, e.g. AttestationPolicy.from_pcrs({{{IMAGE_PCR}: pcr0}})"
        )
    return policy


def pcr_set(pcrs: Mapping[int, bytes] | Iterable[tuple[int, bytes]]) -> PcrSet:
    """Canonical (sorted, validated) tuple form of one acceptable PCR assignment."""
    items = pcrs.items() if isinstance(pcrs, Mapping) else pcrs
    result = tuple(sorted((int(index), bytes(value)) for index, value in items))
    _validate_pcr_set(result)
    return result


def _validate_pcr_set(alternative: object) -> None:
    if not isinstance(alternative, tuple) or not alternative:
        # An empty alternative would match every document: refuse to build it.
        raise ValueError("each allowed PCR set must be a non-empty tuple of (index, value) pairs")
    seen: set[int] = set()
    for pair in alternative:
        if not isinstance(pair, tuple) or len(pair) != 2:
            raise ValueError("each allowed PCR entry must be an (index, value) pair")
        index, value = pair
        if type(index) is not int or not 0 <= index < PCR_COUNT:
            raise ValueError(f"PCR index {index!r} is outside 0..{PCR_COUNT - 1}")
        if not isinstance(value, bytes) or len(value) not in PCR_VALUE_SIZES:
            raise ValueError(f"PCR{index} value must be 32, 48 or 64 bytes")
        if index in seen:
            raise ValueError(f"PCR{index} appears twice in one allowed PCR set")
        seen.add(index)


def _pcrs_match(actual: Mapping[int, bytes], required: PcrSet) -> bool:
    # Evaluate every pair (no early exit) so timing does not reveal which PCR differed.
    ok = True
    for index, value in required:
        present = actual.get(index)
        ok &= present is not None and hmac.compare_digest(present, value)
    return ok


def _require_equal(
    name: str, expected: bytes | None, actual: bytes | None, error: type[Exception]
) -> None:
    if expected is None:
        return
    if actual is None:
        raise error(f"document has no {name}, the policy requires one")
    if not hmac.compare_digest(expected, actual):
        raise error(f"document {name} differs: {_versus(expected, actual, 'document')}")


# Messages name what differs only after the constant-time decision has refused the
# document: the expected values are the caller's own, the attested ones are in the document.

_MAX_LISTED = 4  # differing PCRs named per allowed set; a message stays one readable line
_SHORT = 8  # hex digits kept at each end of a long value


def _pcr_mismatch_message(actual: Mapping[int, bytes], allowed: frozenset[PcrSet]) -> str:
    if not allowed:
        return "the policy allows no PCR set, so no document matches"
    if len(allowed) == 1:
        (alternative,) = allowed
        return _pcr_differences(actual, alternative)
    closest = min(allowed, key=lambda alt: (len(_differing(actual, alt)), alt))
    return (f"document PCRs match none of the {len(allowed)} allowed PCR sets; closest: "
            f"{_pcr_differences(actual, closest)}")


def _differing(actual: Mapping[int, bytes], required: PcrSet) -> list[tuple[int, bytes]]:
    return [(index, value) for index, value in required if actual.get(index) != value]


def _pcr_differences(actual: Mapping[int, bytes], required: PcrSet) -> str:
    differing = _differing(actual, required)
    parts = []
    for index, expected in differing[:_MAX_LISTED]:
        attested = actual.get(index)
        if attested is None:
            parts.append(f"PCR{index} is not in the document (expected {short_hex(expected)})")
        else:
            parts.append(f"PCR{index} differs: {_versus(expected, attested, 'attested')}")
    if len(differing) > _MAX_LISTED:
        parts.append(f"and {len(differing) - _MAX_LISTED} more")
    return "; ".join(parts)


def _versus(expected: bytes, actual: bytes, actual_name: str) -> str:
    """`expected X, <actual_name> Y`, both shortened yet never shortened to the same text."""
    shown_expected, shown_actual = short_hex(expected), short_hex(actual)
    if shown_expected == shown_actual:
        shown_expected, shown_actual = _around_difference(expected.hex(), actual.hex())
    text = f"expected {shown_expected}, {actual_name} {shown_actual}"
    if len(expected) != len(actual):
        text += f" ({len(expected)} vs {len(actual)} bytes)"
    return text


def short_hex(value: bytes) -> str:
    """A long value as its first and last hex digits (`6ad2...c4f1`); a short one in full."""
    text = value.hex()
    if len(text) <= 2 * _SHORT + 4:
        return text or "(empty)"
    return f"{text[:_SHORT]}...{text[-_SHORT:]}"


def _around_difference(left: str, right: str) -> tuple[str, str]:
    """Both values cut to a window at their first differing hex digit."""
    first = next((i for i, (a, b) in enumerate(zip(left, right, strict=False)) if a != b),
                 min(len(left), len(right)))
    start = max(first - 4, 0)
    end = first + _SHORT

    def window(text: str) -> str:
        return ("..." if start else "") + text[start:end] + ("..." if end < len(text) else "")

    return window(left), window(right)
