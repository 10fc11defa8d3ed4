"""Privacy certificates, issued inside the enclave.

A certificate file is canonical CBOR `{"format": "hermetic-privacy-certificate-v1",
"body": <canonical body bytes>, "attestation": <NSM COSE_Sign1>}` where the
attestation's user_data is SHA-384 of the body bytes. Verification lives on the host
(`parent.verify`).
"""
