"""The one exception hierarchy of Hermetic.

Every error carries a one-line message meant for people; the CLI prints `str(err)`.
Modules define narrower subclasses next to the code that raises them, always
deriving from one of the families below so callers can catch by family.
"""
from __future__ import annotations


class HermeticError(Exception):
    """Base of every error Hermetic raises on purpose."""

    def __init__(self, message: str) -> None:
        # One clear line: callers print it as is.
        super().__init__(" ".join(str(message).split()))


class ConfigError(HermeticError):
    """A configuration, CLI argument or job spec is invalid."""


class AttestationError(HermeticError):
    """An attestation document failed to parse or verify."""


class NsmError(HermeticError):
    """The Nitro Secure Module (or its stand-in) refused or failed a request."""


class KmsError(HermeticError):
    """A KMS request failed or returned something unusable."""


class CmsError(KmsError):
    """A CMS EnvelopedData blob (CiphertextForRecipient) could not be opened."""


class PolicyError(HermeticError):
    """A KMS key policy is malformed or cannot be rendered."""


class SealedDataError(HermeticError):
    """A sealed dataset is malformed, tampered, truncated or mismatched."""


class DatasetError(HermeticError):
    """An input dataset cannot be read."""


class TransportError(HermeticError):
    """A transport address, frame or connection failed."""


class RuntimeFailure(HermeticError):
    """The enclave runtime could not complete a job."""
