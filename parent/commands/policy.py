"""`hermetic policy render`: fill a key-policy template with measurements and ARNs."""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

from enclave.errors import ConfigError, PolicyError
from parent.commands.output import add_json_flag
from parent.policy_render import render_policy
from parent.storage import write_atomic

SHIPPED_TEMPLATES = Path(__file__).resolve().parents[2] / "kms-policies"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("policy", help="KMS key policies")
    sub = parser.add_subparsers(dest="policy_command", metavar="ACTION")
    sub.required = True
    render = sub.add_parser("render", help="render a key-policy template")
    render.add_argument(
        "--template",
        required=True,
        help="template file, or a shipped name: data-owner, model-owner, ledger-bucket",
    )
    render.add_argument(
        "--measurements", required=True, type=Path, help='JSON {"PCR0": hex, ...} or nitro-cli describe-eif'
    )
    render.add_argument("--owner-arn", help="data owner principal (data-owner template)")
    render.add_argument("--parent-role-arn", required=True, help="IAM role of the parent instance")
    render.add_argument("--model-owner-arn", help="model owner principal (model-owner template)")
    render.add_argument("--ledger-bucket", help="the budget ledger's S3 bucket name (ledger-bucket template)")
    render.add_argument("--out", type=Path, help="write here (atomically) instead of stdout")
    add_json_flag(render, help="with --out, print what was written as one JSON object (the policy"
                               " itself is always JSON)")
    render.set_defaults(func=run)


def _template_path(name: str) -> Path:
    path = Path(name)
    if path.exists():
        return path
    shipped = SHIPPED_TEMPLATES / f"{name}.template.json"
    if "/" not in name and shipped.exists():
        return shipped
    raise ConfigError(f"policy template {name} not found")


def _write_atomic(path: Path, text: str) -> None:
    write_atomic(path.resolve(), text.encode("utf-8"))


def run(args: argparse.Namespace) -> int:
    try:
        measurements = json.loads(args.measurements.read_text("utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read measurements {args.measurements}: {exc.strerror}") from None
    except ValueError as exc:
        raise PolicyError(f"measurements file {args.measurements} is not valid JSON: {exc}") from None
    if not isinstance(measurements, dict):
        raise PolicyError(f"measurements file {args.measurements} must hold a JSON object")
    principals = {"PARENT_ROLE_ARN": args.parent_role_arn}
    if args.owner_arn:
        principals["OWNER_ARN"] = args.owner_arn
    if args.model_owner_arn:
        principals["MODEL_OWNER_ARN"] = args.model_owner_arn
    resources = {"LEDGER_BUCKET": args.ledger_bucket} if args.ledger_bucket else {}
    policy = render_policy(_template_path(args.template), measurements, principals, resources)
    text = json.dumps(policy, indent=2) + "\n"
    if args.out is None:
        sys.stdout.write(text)
        return 0
    _write_atomic(args.out, text)
    if args.json:
        print(json.dumps({"out": str(args.out), "bytes": len(text.encode("utf-8")),
                          "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest()}))
    return 0
