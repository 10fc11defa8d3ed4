"""The hazmat line: every use of `cryptography.hazmat`, the chunk AEAD, the CSPRNG, CMS/BER,
COSE and the one strict CBOR decoder. Code outside this package holds no raw crypto.
"""
