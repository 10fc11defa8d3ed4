"""KMS from inside the enclave: attested requests and CiphertextForRecipient unwrapping."""
from __future__ import annotations

from enclave.kms.attested import AttestedKms, kms_error_from_client_error
from enclave.kms.cms import EnvelopedParts, open_recipient_ciphertext, parse_enveloped_data

__all__ = [
    "AttestedKms",
    "EnvelopedParts",
    "kms_error_from_client_error",
    "open_recipient_ciphertext",
    "parse_enveloped_data",
]
