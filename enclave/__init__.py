"""Hermetic's enclave runtime: everything here is measured into the EIF.

This package never imports `parent` and never imports local stand-ins (mock NSM,
KMS emulator); those live in `parent.local` and are injected by the local launcher.
"""
