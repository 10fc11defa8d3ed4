"""`hermetic verify-certificate`: check a privacy certificate offline.

Exit status: 0 valid, 1 invalid (one-line reason on stderr), 2 usage error.
The epsilons printed are the ones this verifier recomputed from the ledger, not
the ones the certificate states.

The image must be pinned (--measurements or --pcr 0=HEX): the Nitro root signs
documents for every enclave, so without PCR0 an attacker's own image could issue a
certificate claiming any noise and any epsilon, and it would verify. PCR0 and not
just any PCR: it is the one that hashes the image's code (`parent.verify.policy.IMAGE_PCR`).
--sealed and --spec then tie the certificate to the verifier's own dataset and job.
"""
from __future__ import annotations

import argparse
import json
from typing import Any

from enclave.certificate.checks import metrics_epsilon
from enclave.certificate.envelope import MAX_CERTIFICATE_SIZE
from parent.commands.pin_args import add_pin_arguments
from parent.inputs import load_certificate_der, pinned_pcrs, read_bounded
from parent.verify.body import body_to_json
from parent.verify.certificate import VerifiedCertificate, verify_certificate
from parent.verify.policy import AttestationPolicy
from parent.verify.subject import SealedFile, check_sealed, check_spec, read_sealed_file, read_spec


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "verify-certificate",
        help="verify a Hermetic privacy certificate offline",
        description=(
            "Verify a privacy certificate: the attestation document (chain to the pinned "
            "AWS root at the document's own time, ES384 signature), its binding to the "
            "certificate body, the attested PCRs, the body's consistency with the sealed "
            "budgets, and the epsilon recomputed from the privacy ledger. The enclave image must "
            "be pinned (--measurements or --pcr 0=HEX): without PCR0 any image's certificate would "
            "verify, so none is called valid."
        ),
    )
    parser.add_argument("certificate", metavar="CERT", help="certificate file; '-' for stdin")
    add_pin_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the result as a JSON object")
    parser.set_defaults(func=run, _parser=parser, json_error_extra={"valid": False})


def run(args: argparse.Namespace) -> int:
    # The pin is checked before anything is read: without one no verdict would mean anything.
    pcrs = pinned_pcrs(args._parser, args.pcr, args.measurements)
    policy = AttestationPolicy.from_pcrs(pcrs)
    sealed = [read_sealed_file(path) for path in args.sealed or ()]
    spec = read_spec(args.spec) if args.spec is not None else None
    data = _read_certificate(args.certificate)
    root_der = load_certificate_der(args.root) if args.root is not None else None
    verified = verify_certificate(data, root_der=root_der, policy=policy, accountant=args.accountant)
    check_sealed(verified.body, sealed)
    if spec is not None:
        check_spec(verified.body, spec.sha256, str(args.spec), model_spec_sha256=spec.model_sha256)
    report = _report(verified, sorted(pcrs), sealed, spec is not None)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_summary(report)
    return 0


# --- input ---------------------------------------------------------------------------------


def _read_certificate(name: str) -> bytes:
    return read_bounded(name, MAX_CERTIFICATE_SIZE, "certificate")


# --- output --------------------------------------------------------------------------------


def _report(verified: VerifiedCertificate, pinned: list[int], sealed: list[SealedFile],
            spec_checked: bool) -> dict[str, Any]:
    body = verified.body
    shown = body_to_json(body)
    return {
        "valid": True,
        "job_id": body.job_id,
        "spec_sha256": body.spec_sha256,
        "model_spec_sha256": body.model_spec_sha256,
        "epsilon": verified.epsilon,
        "epsilons": dict(verified.epsilons),
        "stated_epsilons": dict(body.epsilon),
        "metrics_epsilon": metrics_epsilon(body),
        "delta": body.delta,
        "accountant": verified.accountant,
        "budget": dict(body.budget),
        "privacy_unit": body.privacy_unit,
        "neighbouring": body.neighbouring,
        "pcrs": shown["pcrs"],
        "datasets": [
            {"dataset_id": d.dataset_id, "sealed_sha256": d.sealed_sha256, "key_id": d.key_id,
             "records": d.records, "epsilon": d.epsilon, "dataset_epsilon": d.dataset_epsilon,
             "max_epsilon": float(d.encryption_context["max_epsilon"]), "delta": float(d.encryption_context["delta"])}
            for d in body.datasets
        ],
        "public_datasets": shown["public_datasets"],
        "model_sha256": body.model_sha256,
        "checkpoint_sha256": body.checkpoint_sha256,
        "resumed_from": shown["resumed_from"],
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
        "pinned_pcrs": pinned,
        "sealed_checked": [{"file": f.name, "dataset_id": f.dataset_id} for f in sealed],
        "spec_checked": spec_checked,
    } | ({} if body.search is None else {"search": shown["search"]}) | (
        {} if body.audit_log_sha256 is None else
        {"audit_log": {"sha256": body.audit_log_sha256, "events": body.audit_log_events}})


def _print_summary(report: dict[str, Any]) -> None:
    print("privacy certificate: VALID")
    print(f"  job:          {report['job_id']} (spec sha256 {report['spec_sha256']})")
    print(f"  epsilon:      {report['epsilon']:.6g} ({report['accountant']}, recomputed from the ledger;"
          f" budget {report['budget']['max_epsilon']:.6g})")
    others = ", ".join(f"{name} {value:.6g}" for name, value in report["epsilons"].items()
                       if name != report["accountant"])
    if others:
        print(f"  cross-check:  {others}")
    if report["metrics_epsilon"] > 0:
        total = report["epsilons"][report["accountant"]] + report["metrics_epsilon"]
        print(f"  DP metrics:   epsilon {report['metrics_epsilon']:.6g} more (total {total:.6g})")
    print(f"  delta:        {report['delta']:.3g}")
    print(f"  privacy unit: one {report['privacy_unit']}; {report['neighbouring']} neighbours (one record replaced "
          "by a null record; the record count is public)")
    print(f"  training:     {report['steps']} steps, q={report['sampling_rate']:.6g}, "
          f"sigma={report['noise_multiplier']:.6g}, C={report['max_grad_norm']:.6g}")
    search = report.get("search")
    if search is not None:
        selected = ", ".join(f"{k}={v:g}" for k, v in search["selected"].items()) or "none (no trial ran)"
        print(f"  search:       {search['trials']} trials ({search['distribution']}, mean {search['mean']:g}) over "
              f"the grid {search['grid']}; selected {selected} on {search['metric']}; the epsilon above is the "
              "whole search's, recomputed from it")
    for dataset in report["datasets"]:
        print(f"  dataset:      {dataset['dataset_id']} ({dataset['records']} records, "
              f"sealed sha256 {dataset['sealed_sha256']})")
        print(f"                epsilon {dataset['epsilon']:.6g} for this job at its delta {dataset['delta']:.3g}; "
              f"{dataset['dataset_epsilon']:.6g} of its {dataset['max_epsilon']:.6g} spent by every job on it, "
              "this one included (its budget ledger, as stated by the enclave)")
    print(f"  model:        architecture sha256 {report['model_spec_sha256']} (the job's model format)")
    print(f"                weights sha256 {report['model_sha256']}")
    print(f"  checkpoint:   sha256 {report['checkpoint_sha256']}")
    resumed = report["resumed_from"]
    if resumed is None:
        print("  resumed from: nothing (trained from step 0)")
    else:
        print(f"  resumed from: the checkpoint at step {resumed['step']}, sealed sha256 {resumed['sealed_sha256']}")
    print(f"  enclave PCR0: {report['pcrs'].get('0')} (pinned: "
          f"{', '.join(f'PCR{index}' for index in report['pinned_pcrs'])})")
    for checked in report["sealed_checked"]:
        print(f"  sealed file:  {checked['file']} is dataset {checked['dataset_id']}, as certified")
    if report["spec_checked"]:
        print("  job spec:     matches the certificate's spec sha256 and model architecture sha256")
    audit = report.get("audit_log")
    if audit is not None:
        print(f"  audit log:    {audit['events']} events, head {audit['sha256']} "
              "(check the log with `hermetic audit-log verify`)")
    print(f"  attested at:  {report['attested_at']}")
    for metric in report["metrics"]:
        print(f"  metric:       {metric['name']} = {metric['value']:.6g} ({metric['kind']}, "
              f"step {metric['step']}, epsilon cost {metric['epsilon_cost']:.3g})")
