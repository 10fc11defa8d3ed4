"""Where the known-answer vectors live: tests/vectors/<source>/, each with a README."""
from __future__ import annotations

from pathlib import Path

VECTORS = Path(__file__).resolve().parent.parent / "vectors"
AWS_ATTESTATION = VECTORS / "aws-attestation"
OPENSSL_CMS = VECTORS / "openssl-cms"
DP_ACCOUNTING = VECTORS / "dp-accounting"
