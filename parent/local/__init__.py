"""Local stand-ins for Nitro hardware and AWS (mock NSM, KMS emulator, mock enclave).

Never importable by the production enclave path: `enclave` does not import `parent`,
and the EIF contains only the `enclave` package.
"""
