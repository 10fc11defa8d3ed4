"""Host-side verification of attestation documents and privacy certificates.

Auditors, the CLI and the KMS emulator import this; nothing here is measured into the image.
"""
