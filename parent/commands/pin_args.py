"""The pins a certificate is verified against: one set of options for every command that verifies one."""
from __future__ import annotations

import argparse
from pathlib import Path

from enclave.privacy.accountants import NAMES as ACCOUNTANT_NAMES
from parent.inputs import parse_pcr

__all__ = ["add_pin_arguments"]


def add_pin_arguments(parser: argparse.ArgumentParser) -> None:
    """--root, --pcr, --measurements, --sealed, --spec and --accountant, as verify-certificate takes them."""
    parser.add_argument("--root", metavar="PEM", type=Path,
                        help="trust anchor certificate (PEM or DER); default: pinned AWS Nitro Root-G1")
    parser.add_argument("--pcr", metavar="N=HEX", action="append", type=parse_pcr, default=None,
                        help="required attested PCR value; may repeat, all must match; PCR0 (here or in "
                             "--measurements) is required")
    parser.add_argument("--measurements", metavar="FILE", type=Path,
                        help='required attested PCRs from a nitro-cli measurements file ({"Measurements": '
                             '{"PCR0": HEX, ...}}, as `nitro-cli describe-eif`, `make eif` and `hermetic local '
                             'up` write); combines with --pcr, all must match')
    parser.add_argument("--sealed", metavar="FILE", action="append", type=Path, default=None,
                        help="a sealed dataset (local file) the certificate must be about: its dataset id, "
                             "SHA-256, KMS key and encryption context (budget, records, schema) as the "
                             "certificate records them; may repeat")
    parser.add_argument("--spec", metavar="FILE", type=Path,
                        help="the job spec (TOML) the certificate must be about: its canonical SHA-256 "
                             "equals the certificate's spec_sha256, its model's the model_spec_sha256")
    parser.add_argument("--accountant", choices=ACCOUNTANT_NAMES, default=None,
                        help="accountant whose recomputed epsilon is reported (default: the"
                             " certificate's primary); all are always checked")
