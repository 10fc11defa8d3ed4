"""`hermetic checkpoint decrypt|inspect`: the model owner's view of sealed checkpoints."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from enclave.errors import ConfigError
from parent.appliance import MODEL_OWNER
from parent.commands.kms_args import add_kms_arguments, kms_client
from parent.commands.local_args import add_local_argument, local_kms
from parent.commands.output import UsageError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "checkpoint",
        help="inspect or decrypt a sealed training checkpoint",
        description=(
            "Sealed checkpoints are encrypted by the enclave under the model owner's KMS key. "
            "`inspect` reads the header only; `decrypt` asks KMS (as the model owner) for the "
            "data key and writes the model and optimizer state as a torch file (--out), or a model "
            "directory of safetensors weights and model.json (--model-dir, see `hermetic model`)."
        ),
    )
    p.set_defaults(func=run)
    sub = p.add_subparsers(dest="checkpoint_command", metavar="ACTION")
    sub.required = True

    dec = sub.add_parser("decrypt", help="decrypt a checkpoint with the model owner's KMS credentials")
    dec.add_argument("checkpoint", metavar="CKPT", help="sealed checkpoint file")
    dec.add_argument("--out", default=None, metavar="FILE.pt", help="torch file to write (mode 0600)")
    dec.add_argument("--model-dir", default=None, type=Path, metavar="DIR",
                     help="write DIR/model.safetensors and DIR/model.json (needs --spec and --sealed)")
    dec.add_argument("--spec", default=None, type=Path, metavar="JOB.toml",
                     help="the job spec the checkpoint was trained under (its hash must match)")
    dec.add_argument("--sealed", default=None, metavar="FILE.sealed",
                     help="the sealed dataset (path or s3:// URI) whose public schema gives the input layout")
    dec.add_argument("--job-id", default=None, help="refuse a checkpoint of any other job")
    dec.add_argument("--spec-sha256", default=None, help="refuse a checkpoint made under any other job spec")
    add_kms_arguments(dec)
    add_local_argument(dec, "model-owner")
    dec.add_argument("--json", action="store_true", help="print the result as one JSON object")
    dec.set_defaults(func=run)

    ins = sub.add_parser("inspect", help="show a checkpoint's header (no KMS call)")
    ins.add_argument("checkpoint", metavar="CKPT", help="sealed checkpoint file")
    ins.add_argument("--json", action="store_true", help="print the header as one JSON object")
    ins.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # parent.checkpoints (and torch with it) is imported per action: `hermetic --help` stays fast.
    if args.checkpoint_command == "inspect":
        return _inspect(args)
    return _decrypt(args)


def _inspect(args: argparse.Namespace) -> int:
    from parent.checkpoints import inspect_checkpoint

    info = inspect_checkpoint(args.checkpoint)
    if args.json:
        print(json.dumps(info.to_json(), sort_keys=True))
        return 0
    print(f"sealed checkpoint {info.path} ({info.size} bytes)")
    print(f"  job_id       {info.job_id}")
    print(f"  step         {info.step}")
    print(f"  spec_sha256  {info.spec_sha256}")
    print(f"  key_id       {info.key_id}")
    print(f"  payload      {info.payload} (chunks of {info.chunk_size} bytes)")
    for key in sorted(info.encryption_context):
        print(f"  context      {key}={info.encryption_context[key]}")
    return 0


def _client(args: argparse.Namespace) -> Any:
    if args.local is None:
        return kms_client(args)
    return local_kms(args, MODEL_OWNER)[2]


def _decrypt(args: argparse.Namespace) -> int:
    if args.out is None and args.model_dir is None:
        raise UsageError("give --out FILE.pt, --model-dir DIR or both", "hermetic checkpoint decrypt")
    if args.model_dir is not None and (args.spec is None or args.sealed is None):
        raise UsageError("--model-dir needs --spec JOB.toml and --sealed FILE.sealed", "hermetic checkpoint decrypt")
    spec_toml = _read_spec(args.spec) if args.model_dir is not None else None
    from parent.checkpoints import decrypt_checkpoint, inspect_checkpoint, write_plain_checkpoint

    expected = args.spec_sha256
    if spec_toml is not None:
        from enclave.training.spec import JobSpec

        # Refused before any KMS call: the spec must be the checkpoint's own.
        given = JobSpec.from_toml(spec_toml).sha256
        if expected is not None and expected != given:
            raise ConfigError(f"--spec hashes to {given}, not the --spec-sha256 given")
        sealed_under = inspect_checkpoint(args.checkpoint).spec_sha256
        if sealed_under != given:
            raise ConfigError(f"the checkpoint was made under spec {sealed_under}, --spec hashes to {given}")
        expected = given
    info, state = decrypt_checkpoint(
        args.checkpoint,
        kms_client=_client(args),
        expected_job_id=args.job_id,
        expected_spec_sha256=expected,
    )
    out: dict[str, Any] = {}
    if args.model_dir is not None:
        from parent.model_out import sealed_arrow_schema, write_model_dir

        assert spec_toml is not None
        model = write_model_dir(state, spec_toml, sealed_arrow_schema(args.sealed), args.model_dir)
        out["model"] = model.to_json()
    if args.out is None:
        if args.json:
            print(json.dumps(out["model"], sort_keys=True))
            return 0
        _print_model(out["model"])
        return 0
    result = write_plain_checkpoint(info, state, args.out)
    if args.json:
        print(json.dumps(result.to_json() | out, sort_keys=True))
        return 0
    if "model" in out:
        _print_model(out["model"])
    print(f"decrypted checkpoint -> {result.out_path}")
    print(f"  job_id        {result.job_id}")
    print(f"  step          {result.step}")
    print(f"  spec_sha256   {result.spec_sha256}")
    print(f"  model_sha256  {result.model_sha256}")
    print(f"  key_id        {result.key_id}")
    print(f"  tensors       {result.tensors} ({result.parameters} parameters)")
    print(f"  metrics       {result.metrics} released")
    return 0


def _read_spec(path: Path) -> str:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read job spec {path}: {getattr(err, 'strerror', None) or err}") from None


def _print_model(model: dict[str, Any]) -> None:
    print(f"model directory -> {model['model_dir']}")
    print(f"  job_id             {model['job_id']}")
    print(f"  step               {model['step']}")
    print(f"  spec_sha256        {model['spec_sha256']}")
    print(f"  model_spec_sha256  {model['model_spec_sha256']}")
    print(f"  tensors            {model['tensors']} ({model['parameters']} parameters)")
