"""`hermetic verify-certificate`: check a privacy certificate offline.

Exit status: 0 valid, 1 invalid (one-line reason on stderr), 2 usage error.
The epsilons printed are the ones this verifier recomputed from the ledger, not
the ones the certificate states.
"""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

from enclave.attestation.document import PCR_COUNT
from enclave.certificate.checks import metrics_epsilon
from enclave.certificate.envelope import MAX_CERTIFICATE_SIZE
from enclave.errors import ConfigError
from enclave.privacy.accountants import NAMES as ACCOUNTANT_NAMES
from parent.inputs import load_certificate_der, parse_pcr, pcr_values, read_bounded
from parent.verify.body import body_to_json
from parent.verify.certificate import VerifiedCertificate, verify_certificate
from parent.verify.policy import AttestationPolicy


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "verify-certificate",
        help="verify a Hermetic privacy certificate offline",
        description=(
            "Verify a privacy certificate: the attestation document (chain to the pinned "
            "AWS root at the document's own time, ES384 signature), its binding to the "
            "certificate body, the attested PCRs, the body's consistency with the sealed "
            "budgets, and the epsilon recomputed from the privacy ledger."
        ),
    )
    parser.add_argument("certificate", metavar="CERT", help="certificate file; '-' for stdin")
    parser.add_argument("--root", metavar="PEM", type=Path,
                        help="trust anchor certificate (PEM or DER); default: pinned AWS Nitro Root-G1")
    parser.add_argument("--pcr", metavar="N=HEX", action="append", type=parse_pcr, default=None,
                        help="required attested PCR value; may repeat, all must match")
    parser.add_argument("--measurements", metavar="FILE", type=Path,
                        help='required attested PCRs from a nitro-cli measurements file ({"Measurements": '
                             '{"PCR0": HEX, ...}}, as `nitro-cli describe-eif`, `make eif` and `hermetic local '
                             'up` write); combines with --pcr, all must match')
    parser.add_argument("--accountant", choices=ACCOUNTANT_NAMES, default=None,
                        help="accountant whose recomputed epsilon is reported (default: the"
                             " certificate's primary); all are always checked")
    parser.add_argument("--json", action="store_true", help="print the result as a JSON object")
    parser.set_defaults(func=run, _parser=parser, json_error_extra={"valid": False})


def run(args: argparse.Namespace) -> int:
    policy = _policy(args)
    data = _read_certificate(args.certificate)
    root_der = load_certificate_der(args.root) if args.root is not None else None
    verified = verify_certificate(data, root_der=root_der, policy=policy, accountant=args.accountant)
    report = _report(verified)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_summary(report)
    return 0


# --- arguments (errors exit 2 through argparse) ------------------------------------------


def _policy(args: argparse.Namespace) -> AttestationPolicy | None:
    pcrs = pcr_values(args._parser, args.pcr)
    if args.measurements is not None:
        for index, value in load_measurements(args.measurements).items():
            if pcrs.get(index, value) != value:
                args._parser.error(f"--pcr {index} differs from PCR{index} in {args.measurements}")
            pcrs[index] = value
    return AttestationPolicy.from_pcrs(pcrs) if pcrs else None


MAX_MEASUREMENTS_SIZE = 64 * 1024
_PCR_NAME = re.compile(r"^PCR([0-9]{1,2})$")
_SHA384_HEX = re.compile(r"^[0-9a-fA-F]{96}$")


def load_measurements(path: Path) -> dict[int, bytes]:
    """{index: value} of every PCRn in a nitro-cli measurements file (or a bare {"PCR0": HEX, ...})."""
    raw = read_bounded(str(path), MAX_MEASUREMENTS_SIZE, "measurements file")
    try:
        doc = json.loads(raw)
    except ValueError as err:
        raise ConfigError(f"measurements file {path} is not valid JSON: {err}") from None
    if isinstance(doc, dict) and isinstance(doc.get("Measurements"), dict):
        doc = doc["Measurements"]
    if not isinstance(doc, dict):
        raise ConfigError(f"measurements file {path} must hold a JSON object")
    pcrs: dict[int, bytes] = {}
    for name, value in doc.items():
        match = _PCR_NAME.match(name)
        if match is None:
            if name == "HashAlgorithm":
                continue
            raise ConfigError(f"measurements file {path}: unexpected entry {name!r}")
        index = int(match.group(1))
        if index >= PCR_COUNT or not isinstance(value, str) or not _SHA384_HEX.match(value):
            raise ConfigError(f"measurements file {path}: {name} must be PCR0..PCR{PCR_COUNT - 1}, 96 hex digits")
        pcrs[index] = bytes.fromhex(value)
    if not pcrs:
        raise ConfigError(f"measurements file {path} names no PCR")
    return pcrs


# --- input ---------------------------------------------------------------------------------


def _read_certificate(name: str) -> bytes:
    return read_bounded(name, MAX_CERTIFICATE_SIZE, "certificate")


# --- output --------------------------------------------------------------------------------


def _report(verified: VerifiedCertificate) -> dict[str, Any]:
    body = verified.body
    shown = body_to_json(body)
    return {
        "valid": True,
        "job_id": body.job_id,
        "spec_sha256": body.spec_sha256,
        "epsilon": verified.epsilon,
        "epsilons": dict(verified.epsilons),
        "stated_epsilons": dict(body.epsilon),
        "metrics_epsilon": metrics_epsilon(body),
        "delta": body.delta,
        "accountant": verified.accountant,
        "budget": dict(body.budget),
        "dataset_epsilon": body.dataset_epsilon,
        "pcrs": shown["pcrs"],
        "datasets": [
            {"dataset_id": d.dataset_id, "sealed_sha256": d.sealed_sha256, "key_id": d.key_id,
             "records": d.records}
            for d in body.datasets
        ],
        "public_datasets": shown["public_datasets"],
        "model_sha256": body.model_sha256,
        "checkpoint_sha256": body.checkpoint_sha256,
        "steps": body.steps,
        "sampling_rate": body.sampling_rate,
        "noise_multiplier": body.noise_multiplier,
        "max_grad_norm": body.max_grad_norm,
        "ledger": shown["ledger"],
        "metrics": shown["metrics"],
        "started_at": body.started_at,
        "finished_at": body.finished_at,
        "attested_at": verified.attested_at.isoformat(timespec="milliseconds"),
        "module_id": verified.attestation.module_id,
        "body_sha384": verified.body_sha384.hex(),
    }


def _print_summary(report: dict[str, Any]) -> None:
    print("privacy certificate: VALID")
    print(f"  job:          {report['job_id']} (spec sha256 {report['spec_sha256']})")
    print(f"  epsilon:      {report['epsilon']:.6g} ({report['accountant']}, recomputed from the ledger;"
          f" budget {report['budget']['max_epsilon']:.6g})")
    print(f"  dataset:      epsilon {report['dataset_epsilon']:.6g} spent by every job on it, this one included"
          f" (its budget ledger, as stated by the enclave)")
    others = ", ".join(f"{name} {value:.6g}" for name, value in report["epsilons"].items()
                       if name != report["accountant"])
    if others:
        print(f"  cross-check:  {others}")
    if report["metrics_epsilon"] > 0:
        total = report["epsilons"][report["accountant"]] + report["metrics_epsilon"]
        print(f"  DP metrics:   epsilon {report['metrics_epsilon']:.6g} more (total {total:.6g})")
    print(f"  delta:        {report['delta']:.3g}")
    print(f"  training:     {report['steps']} steps, q={report['sampling_rate']:.6g}, "
          f"sigma={report['noise_multiplier']:.6g}, C={report['max_grad_norm']:.6g}")
    for dataset in report["datasets"]:
        print(f"  dataset:      {dataset['dataset_id']} ({dataset['records']} records, "
              f"sealed sha256 {dataset['sealed_sha256']})")
    print(f"  model:        sha256 {report['model_sha256']}")
    print(f"  checkpoint:   sha256 {report['checkpoint_sha256']}")
    print(f"  enclave PCR0: {report['pcrs'].get('0')}")
    print(f"  attested at:  {report['attested_at']}")
    for metric in report["metrics"]:
        print(f"  metric:       {metric['name']} = {metric['value']:.6g} ({metric['kind']}, "
              f"step {metric['step']}, epsilon cost {metric['epsilon_cost']:.3g})")
