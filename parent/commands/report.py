"""`hermetic report`: a compliance report (HTML, PDF and JSON) from a verified certificate.

Exit status: 0 the report was written, 1 an input did not verify or could not be read
(one-line reason on stderr; nothing is written), 2 usage error.

The certificate is verified exactly as `hermetic verify-certificate` verifies it (the
same pins: --measurements or --pcr 0=HEX, --root, --sealed, --spec); an unverified
certificate gets no report. The audit log (--audit-log) is checked against the head
the certificate states, as `hermetic audit-log verify` checks it, and the budget ledger
(--ledger) with the ledger key the certificate's datasets carry, as `hermetic budget
show` reads it. The empirical audit (--audit) is the operator's own, unattested, and
the report says so.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from enclave.audit_log import MAX_LOG_SIZE
from enclave.certificate.envelope import MAX_CERTIFICATE_SIZE
from parent.commands.budget import add_s3_arguments, s3_client
from parent.commands.pin_args import add_pin_arguments
from parent.inputs import load_certificate_der, pinned_pcrs, read_bounded


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "report",
        help="write a compliance report (HTML, PDF, JSON) for a verified privacy certificate",
        description=(
            "Verify a privacy certificate as verify-certificate does (the image must be pinned with "
            "--measurements or --pcr 0=HEX) and write DIR/report.html (self-contained), DIR/report.pdf and "
            "DIR/report.json: the guarantee in plain words, the evidence chain (measurements, attestation, key "
            "policy, budget ledger, audit trail, empirical audit), figures, and tables for NIST SP 800-226, GDPR, "
            "HIPAA Expert Determination and CCPA. An input that does not verify writes nothing."
        ),
    )
    parser.add_argument("certificate", metavar="CERT", help="certificate file (certificate.cbor); '-' for stdin")
    add_pin_arguments(parser)
    parser.add_argument("--ledger", metavar="LOCATION",
                        help="the datasets' budget ledger: a directory holding one sub-directory per dataset id "
                             "(a local appliance's STATE/ledger), local:/DIR or s3://BUCKET/PREFIX?owner=ACCOUNT; "
                             "verified with the ledger key the certificate carries; it must hold this job's entry")
    add_s3_arguments(parser)
    parser.add_argument("--audit-log", metavar="LOG", type=Path,
                        help="the session's audit log (audit-log.cbor beside the certificate), checked against the "
                             "head and event count the certificate states")
    parser.add_argument("--audit", metavar="RESULT.json", type=Path, action="append",
                        help="an empirical audit result (`hermetic audit JOB.toml --local --json`), repeatable: a "
                             "noised run and its --control-no-noise control; shown as the operator's own, unattested")
    parser.add_argument("--out", metavar="DIR", type=Path, required=True,
                        help="folder for report.html, report.pdf and report.json (created if missing)")
    parser.add_argument("--json", action="store_true", help="print the written files and the key facts as JSON")
    parser.set_defaults(func=run, _parser=parser)


def run(args: argparse.Namespace) -> int:
    # Imported here: matplotlib and reportlab load only when a report is written.
    from parent.audit.result import read_audit_result
    from parent.report.facts import SpecPin, gather_facts
    from parent.report.writer import write_report
    from parent.verify.subject import read_sealed_file, read_spec

    pcrs = pinned_pcrs(args._parser, args.pcr, args.measurements)  # before anything is read, as verify-certificate
    sealed = [read_sealed_file(path) for path in args.sealed or ()]
    spec = None
    if args.spec is not None:
        job = read_spec(args.spec)
        spec = SpecPin(str(args.spec), job.sha256, job.model_sha256)
    empirical = tuple(read_audit_result(path) for path in args.audit or ())
    certificate = read_bounded(args.certificate, MAX_CERTIFICATE_SIZE, "certificate")
    root_der = load_certificate_der(args.root) if args.root is not None else None
    audit_log = read_bounded(str(args.audit_log), MAX_LOG_SIZE, "audit log") if args.audit_log is not None else None
    s3 = s3_client(args) if args.ledger is not None and args.ledger.startswith("s3://") else None
    facts = gather_facts(
        certificate,
        certificate_name=args.certificate,
        pcrs=pcrs,
        root_der=root_der,
        root_name=None if args.root is None else str(args.root),
        measurements_name=None if args.measurements is None else str(args.measurements),
        sealed=sealed,
        spec=spec,
        accountant=args.accountant,
        ledger=args.ledger,
        s3_client=s3,
        audit_log=audit_log,
        audit_log_name=None if args.audit_log is None else str(args.audit_log),
        empirical=empirical,
    )
    files = write_report(facts, args.out)
    if args.json:
        print(json.dumps({"html": str(files.html), "pdf": str(files.pdf), "json": str(files.json),
                          "job_id": facts.job_id, "epsilon": facts.total_epsilon, "delta": facts.delta,
                          "accountant": facts.accountant, "verdict": "certificate verified"}, indent=2))
    else:
        print(f"privacy certificate: VALID; report for job {facts.job_id} (epsilon {facts.total_epsilon:.6g}, "
              f"delta {facts.delta:.3g})")
        print(f"  html: {files.html}")
        print(f"  pdf:  {files.pdf}")
        print(f"  json: {files.json}")
    return 0
