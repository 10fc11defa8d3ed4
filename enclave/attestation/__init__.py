"""Nitro attestation documents as the enclave reads its own: structure and fields, no chain checks."""
