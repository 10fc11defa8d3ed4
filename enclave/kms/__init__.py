"""KMS from inside the enclave: requests carrying a `Recipient` attestation document."""
