"""The local KMS emulator: a real HTTP server speaking the KMS JSON protocol.

Local stand-in only: never imported by the production enclave path.
"""
from __future__ import annotations

from parent.local.kms.config import load_principals, load_root_der
from parent.local.kms.server import KmsEmulator
from parent.local.kms.sigv4 import Principal

__all__ = ["KmsEmulator", "Principal", "load_principals", "load_root_der"]
