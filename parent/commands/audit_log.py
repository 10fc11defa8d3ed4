"""`hermetic audit-log verify`: check a session's audit log against its certificate.

Exit status: 0 the chain holds and its head and event count are the certificate's
(a summary of the events by type is printed), 1 otherwise (one line naming the first
bad event), 2 usage error.

The certificate is the trust anchor: its attested body states the head. By default the
certificate is only decoded here, so it must have been verified with
`hermetic verify-certificate` first (which pins PCR0); given --measurements or --pcr,
this command runs the same verification itself, with the same options, before the log.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from enclave.audit_log import MAX_LOG_SIZE, ChainSummary
from enclave.certificate.body import CertificateBody
from enclave.certificate.envelope import MAX_CERTIFICATE_SIZE
from parent.inputs import load_certificate_der, parse_pcr, pinned_pcrs, read_bounded
from parent.verify.audit import verify_audit_log
from parent.verify.body import decode_body
from parent.verify.certificate import verify_certificate
from parent.verify.envelope import decode_envelope
from parent.verify.policy import AttestationPolicy

_TWO_STEP = ("the certificate itself was not verified here: verify it with `hermetic verify-certificate` "
             "(or pass --measurements/--pcr)")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "audit-log",
        help="check a job's audit log (audit-log.cbor) against its privacy certificate",
        description="The tamper-evident record of an enclave session, released beside its certificate.",
    )
    sub = parser.add_subparsers(dest="audit_log_command", metavar="ACTION")
    sub.required = True
    verify = sub.add_parser(
        "verify",
        help="recompute the chain and compare its head and count with the certificate's",
        description=(
            "Recompute the audit chain of LOG (every event's link to the one before it, sequence "
            "numbers from 0 without a gap) and check that its head and event count are the ones the "
            "certificate CERT states. The certificate is the trust anchor and must be verified with "
            "`hermetic verify-certificate` first (it pins PCR0); or pass --measurements or --pcr, and "
            "--root, to have this command verify it the same way before the log."
        ),
    )
    verify.add_argument("log", metavar="LOG", type=Path, help="the audit log (audit-log.cbor)")
    verify.add_argument("--certificate", metavar="CERT", required=True,
                        help="the certificate of the same job (certificate.cbor); '-' for stdin")
    verify.add_argument("--root", metavar="PEM", type=Path,
                        help="as verify-certificate: trust anchor; default: pinned AWS Nitro Root-G1")
    verify.add_argument("--pcr", metavar="N=HEX", action="append", type=parse_pcr, default=None,
                        help="as verify-certificate: verify the certificate too, requiring this PCR")
    verify.add_argument("--measurements", metavar="FILE", type=Path,
                        help="as verify-certificate: verify the certificate too, requiring these PCRs")
    verify.add_argument("--json", action="store_true", help="print the result as a JSON object")
    verify.set_defaults(func=_verify, _parser=verify, json_error_extra={"valid": False})


def _verify(args: argparse.Namespace) -> int:
    certificate = read_bounded(args.certificate, MAX_CERTIFICATE_SIZE, "certificate")
    body, certificate_verified = _body(args, certificate)
    summary = verify_audit_log(read_bounded(str(args.log), MAX_LOG_SIZE, "audit log"), body)
    report = _report(summary, certificate_verified)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"audit log: VALID ({summary.count} events of job {summary.job_id}, head {report['head']})")
        for kind, count in report["events"].items():
            print(f"  {kind:<20} {count}")
        if not certificate_verified:
            print(f"  note: {_TWO_STEP}")
    return 0


def _body(args: argparse.Namespace, certificate: bytes) -> tuple[CertificateBody, bool]:
    if args.pcr is None and args.measurements is None:
        if args.root is not None:
            args._parser.error("--root verifies the certificate, which needs --measurements or --pcr")
        return decode_body(decode_envelope(certificate)[0]), False
    policy = AttestationPolicy.from_pcrs(pinned_pcrs(args._parser, args.pcr, args.measurements))
    root_der = load_certificate_der(args.root) if args.root is not None else None
    return verify_certificate(certificate, root_der=root_der, policy=policy).body, True


def _report(summary: ChainSummary, certificate_verified: bool) -> dict[str, Any]:
    return {
        "valid": True,
        "job_id": summary.job_id,
        "head": summary.head.hex(),
        "count": summary.count,
        "events": dict(sorted(summary.by_type.items())),
        "certificate_verified": certificate_verified,
    } | ({} if certificate_verified else {"note": _TWO_STEP})
