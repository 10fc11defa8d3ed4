"""The one exception hierarchy of Hermetic.

Every error carries a one-line message meant for people; the CLI prints `str(err)`.
Modules define narrower subclasses next to the code that raises them, always
deriving from one of the families below so callers can catch by family.

Each family has a stable wire code, `err.code`: the enclave reports a job that failed
before any data key was used as `Error(code=err.code, message=str(err))`, never with a
class name, so classes can be renamed or split without changing the protocol; after
a data key was used, every failure is one constant Error of code `runtime`
(enclave.runtime.OPENED_FAILURE).

    code          raised as
    internal      HermeticError outside any family; and, with a fixed message,
                  any exception that is not a HermeticError
    config        ConfigError: configuration, CLI argument or job spec
    attestation   AttestationError
    nsm           NsmError
    kms           KmsError (CmsError included)
    policy        PolicyError
    sealed-data   SealedDataError (sealed datasets and sealed checkpoints)
    dataset       DatasetError
    transport     TransportError: addresses, frames, connections
    protocol      ProtocolError and DatasetStreamError (enclave.transport.errors):
                  a valid message where the protocol allows none
    aborted       RemoteError (enclave.transport.errors): the peer reported an Error
    budget        BudgetExceeded (enclave.training.plan): more privacy than allowed;
                  LedgerError (enclave.ledger.store): the dataset's budget ledger is
                  spent, damaged or unreachable
    egress        EgressRefused (enclave.egress)
    certificate   CertificateError (enclave.certificate.errors); AuditLogError
                  (enclave.audit_log): the session's audit chain, whose head it holds
    runtime       RuntimeFailure: the runtime could not complete a job
"""
from __future__ import annotations

from typing import ClassVar

INTERNAL = "internal"

CODES = frozenset(
    {
        INTERNAL, "config", "attestation", "nsm", "kms", "policy", "sealed-data", "dataset",
        "transport", "protocol", "aborted", "budget", "egress", "certificate", "runtime",
    }
)


class HermeticError(Exception):
    """Base of every error Hermetic raises on purpose."""

    code: ClassVar[str] = INTERNAL

    def __init__(self, message: str) -> None:
        # One clear line: callers print it as is.
        super().__init__(" ".join(str(message).split()))


class ConfigError(HermeticError):
    """A configuration, CLI argument or job spec is invalid."""

    code = "config"


class AttestationError(HermeticError):
    """An attestation document failed to parse or verify."""

    code = "attestation"


class NsmError(HermeticError):
    """The Nitro Secure Module (or its stand-in) refused or failed a request."""

    code = "nsm"


class KmsError(HermeticError):
    """A KMS request failed or returned something unusable."""

    code = "kms"


class CmsError(KmsError):
    """A CMS EnvelopedData blob (CiphertextForRecipient) could not be opened."""


class PolicyError(HermeticError):
    """A KMS key policy is malformed or cannot be rendered."""

    code = "policy"


class SealedDataError(HermeticError):
    """A sealed dataset is malformed, tampered, truncated or mismatched."""

    code = "sealed-data"


class DatasetError(HermeticError):
    """An input dataset cannot be read."""

    code = "dataset"


class TransportError(HermeticError):
    """A transport address, frame or connection failed."""

    code = "transport"


class RuntimeFailure(HermeticError):
    """The enclave runtime could not complete a job."""

    code = "runtime"
