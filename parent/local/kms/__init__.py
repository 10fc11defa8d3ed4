"""The local KMS emulator: a real HTTP server speaking the KMS JSON protocol.

Local stand-in only: never imported by the production enclave path.
"""
from __future__ import annotations

from parent.local.kms.config import load_principals, load_root_der
from parent.local.kms.server import KmsEmulator
from parent.local.kms.sigv4 import Principal
from parent.local.kms.sts import SessionCredentials

__all__ = ["KmsEmulator", "Principal", "SessionCredentials", "load_principals", "load_root_der"]
