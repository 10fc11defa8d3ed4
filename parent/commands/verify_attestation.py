"""`hermetic verify-attestation`: check an AWS Nitro attestation document offline.

Exit status: 0 valid, 1 invalid (one-line reason on stderr; with --json also
{"valid": false, "error", "error_type", "code"} on stdout), 2 usage error.

The image must be pinned (--measurements or --pcr 0=HEX), as for certificates: the
root signs documents for every enclave, so a chain and a signature alone say nothing
about which code produced the document; PCR0 is the measurement of that code.
"""
from __future__ import annotations

import argparse
import base64
import binascii
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509

from enclave.attestation.document import AttestationDocument, parse_attestation
from enclave.hazmat.cose import MAX_DOCUMENT_SIZE
from parent.commands.output import add_json_flag
from parent.inputs import HEX_RE, load_certificate_der, parse_hex, parse_pcr, pinned_pcrs, read_bounded
from parent.verify.attestation import verify_attestation
from parent.verify.policy import AttestationPolicy, require_pinned_image

AT_DOCUMENT = "document"
SUMMARY_PCRS = (0, 1, 2, 8)
# base64 of the largest accepted document plus line breaks; anything bigger is refused unread.
_MAX_INPUT = MAX_DOCUMENT_SIZE * 2


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "verify-attestation",
        help="verify an AWS Nitro attestation document",
        description=(
            "Verify an AWS Nitro Enclaves attestation document (COSE_Sign1): certificate "
            "chain to the pinned AWS root at a given time, ES384 signature, the enclave image's "
            "PCRs (PCR0 required, from --pcr or --measurements), and optional nonce / user-data / "
            "public-key / freshness requirements."
        ),
    )
    parser.add_argument("document", metavar="DOC",
                        help="raw CBOR document, or a file holding its base64 or hex; '-' for stdin")
    parser.add_argument("--root", metavar="PEM", type=Path,
                        help="trust anchor certificate (PEM or DER); default: pinned AWS Nitro Root-G1")
    parser.add_argument("--at", metavar="TIME", type=_parse_at,
                        help="verification time, ISO-8601 (UTC if no offset) or 'document' for the"
                             " document's own timestamp; default: now")
    parser.add_argument("--pcr", metavar="N=HEX", action="append", type=parse_pcr, default=None,
                        help="required PCR value; may repeat, all must match; PCR0 (here or in "
                             "--measurements) is required")
    parser.add_argument("--measurements", metavar="FILE", type=Path,
                        help='required PCRs from a nitro-cli measurements file ({"Measurements": {"PCR0": '
                             'HEX, ...}}); combines with --pcr, all must match')
    parser.add_argument("--nonce", metavar="HEX", type=parse_hex, help="required nonce")
    parser.add_argument("--user-data", metavar="HEX", type=parse_hex, help="required user_data")
    parser.add_argument("--public-key", metavar="HEX", type=parse_hex, help="required public_key")
    parser.add_argument("--max-age", metavar="SECONDS", type=_parse_max_age,
                        help="refuse documents older than this at the verification time")
    add_json_flag(parser)
    parser.set_defaults(func=run, _parser=parser, json_error_extra={"valid": False})


def run(args: argparse.Namespace) -> int:
    # The pin is checked before the document is read: without PCR0 no verdict would mean anything.
    pcrs = pinned_pcrs(args._parser, args.pcr, args.measurements)
    policy = AttestationPolicy.from_pcrs(pcrs, nonce=args.nonce, user_data=args.user_data,
                                         public_key=args.public_key, max_age=args.max_age)
    data = _read_document(args.document)
    root_der = load_certificate_der(args.root) if args.root is not None else None

    at: datetime
    if args.at == AT_DOCUMENT:
        at = parse_attestation(data).timestamp
    else:
        at = args.at or datetime.now(UTC)

    document = verify_attestation(data, root_der=root_der, at=at, policy=require_pinned_image(policy))

    report = _report(document, at, sorted(pcrs))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_summary(report)
    return 0


# --- argument parsing (errors here exit 2 through argparse) ---------------------------


def _parse_at(text: str) -> datetime | str:
    if text.strip().lower() == AT_DOCUMENT:
        return AT_DOCUMENT
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"not an ISO-8601 time or 'document': {text!r}") from err
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _parse_max_age(text: str) -> timedelta:
    try:
        seconds = float(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from err
    if not seconds >= 0 or seconds == float("inf"):
        raise argparse.ArgumentTypeError(f"max age must be a finite, non-negative number: {text!r}")
    return timedelta(seconds=seconds)


# --- input ---------------------------------------------------------------------------


def _read_document(name: str) -> bytes:
    return decode_document_text(read_bounded(name, _MAX_INPUT, "attestation document"))


def _looks_like_cose(data: bytes) -> bool:
    # 0x84: untagged 4-element array; 0xD2: tag 18 (COSE_Sign1).
    return bool(data) and data[0] in (0x84, 0xD2)


def decode_document_text(raw: bytes) -> bytes:
    """Raw CBOR as is; otherwise try hex, then base64 (standard or URL-safe) of it."""
    if _looks_like_cose(raw):
        return raw
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        return raw
    compact = "".join(text.split())
    if compact and HEX_RE.fullmatch(compact) and len(compact) % 2 == 0:
        decoded = bytes.fromhex(compact)
        if _looks_like_cose(decoded):
            return decoded
    for altchars in (None, b"-_"):
        try:
            padded = compact + "=" * (-len(compact) % 4)
            decoded = base64.b64decode(padded, altchars=altchars, validate=True)
        except (binascii.Error, ValueError):
            continue
        if _looks_like_cose(decoded):
            return decoded
    return raw  # let the parser explain what is wrong with it


# --- output --------------------------------------------------------------------------


def _subject(der: bytes) -> str:
    return x509.load_der_x509_certificate(der).subject.rfc4514_string()


def _common_name(der: bytes) -> str:
    cert = x509.load_der_x509_certificate(der)
    names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    value = names[0].value if names else cert.subject.rfc4514_string()
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def _hex(value: bytes | None) -> str | None:
    return None if value is None else value.hex()


def _report(document: AttestationDocument, at: datetime, pinned: list[int]) -> dict[str, Any]:
    leaf = x509.load_der_x509_certificate(document.certificate)
    chain = [*document.cabundle, document.certificate]  # root first, leaf last
    return {
        "valid": True,
        "module_id": document.module_id,
        "timestamp": document.timestamp.isoformat(timespec="milliseconds"),
        "timestamp_ms": document.timestamp_ms,
        "digest": document.digest,
        "debug_mode": document.is_debug_mode,
        "pcrs": {str(index): value.hex() for index, value in document.pcrs.items()},
        "user_data": _hex(document.user_data),
        "nonce": _hex(document.nonce),
        "public_key": _hex(document.public_key),
        "certificate": {
            "subject": leaf.subject.rfc4514_string(),
            "not_before": leaf.not_valid_before_utc.isoformat(),
            "not_after": leaf.not_valid_after_utc.isoformat(),
        },
        "chain": [_subject(der) for der in chain],
        "chain_common_names": [_common_name(der) for der in chain],
        "verified_at": at.isoformat(),
        "pinned_pcrs": pinned,
    }


def _print_summary(report: dict[str, Any]) -> None:
    print("attestation document: VALID")
    print(f"  module id:   {report['module_id']}")
    print(f"  timestamp:   {report['timestamp']}")
    print(f"  verified at: {report['verified_at']}")
    print(f"  pinned:      {', '.join(f'PCR{index}' for index in report['pinned_pcrs'])}")
    for index in SUMMARY_PCRS:
        value = report["pcrs"].get(str(index))
        print(f"  PCR{index}:{' ' * (8 - len(str(index)))}{value if value is not None else '(absent)'}")
    if report["debug_mode"]:
        print("  note:        PCR0/1/2 are zero: the enclave ran in debug mode")
    print(f"  chain:       {' -> '.join(report['chain_common_names'])}")
    fields = []
    for name in ("user_data", "nonce", "public_key"):
        value = report[name]
        fields.append(f"{name} ({len(value) // 2} bytes)" if value is not None else f"{name} absent")
    print(f"  fields:      {', '.join(fields)}")

