"""`hermetic seal`: encrypt a dataset under a KMS key with its privacy budget bound in."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from enclave.ledger.location import local_location
from enclave.sealed.format import DEFAULT_CHUNK_SIZE
from parent.appliance import DATA_OWNER, ApplianceState
from parent.commands.kms_args import add_kms_arguments, kms_client
from parent.commands.local_args import add_local_argument, local_kms
from parent.datasets import open_dataset
from parent.datasets.schema import declaration_from_flags
from parent.seal import SealResult, seal_dataset
from parent.storage import write_atomic

# Below this many records sealing takes well under a second: no progress bar.
PROGRESS_MIN_RECORDS = 10_000


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "seal",
        help="seal a dataset for the enclave",
        description=(
            "Encrypt a dataset (Parquet, Arrow IPC/Feather, CSV, NPZ, IDX[.gz]) into a sealed "
            "file under a fresh KMS data key whose encryption context binds the privacy budget."
        ),
    )
    p.add_argument("input", metavar="INPUT", help="dataset file, IDX images file, IDX prefix or directory")
    p.add_argument("--key-id", default=None,
                   help="KMS key id, ARN or alias (default under --local: the data-owner key)")
    p.add_argument("--out", required=True, metavar="FILE.sealed", help="sealed output file")
    p.add_argument("--max-epsilon", required=True, type=float, help="privacy budget epsilon")
    p.add_argument("--delta", required=True, type=float, help="privacy budget delta, in (0, 1)")
    p.add_argument("--owner", default=None,
                   help="data owner name, bound into the encryption context (required, except under --local: "
                        "the data-owner identity's name)")
    p.add_argument("--dataset-id", default=None,
                   help="dataset id (default: file stem + 8 hex of a hash of owner and path, never of the content)")
    p.add_argument("--num-classes", type=int, default=None, metavar="K",
                   help="labels are integers in [0, K); K is public, in the sealed file's schema "
                        "(default: the largest label + 1, printed)")
    p.add_argument("--label", "--label-column", default=None, metavar="COL", dest="label_column",
                   help="the column holding the labels (default: 'label', when the dataset has one)")
    schema = p.add_argument_group(
        "public schema",
        "What each column holds becomes public (in the sealed file's header) and every row is checked "
        "against it. Integer and float columns, and NPZ/IDX arrays, are inferred from their type; "
        "string columns must be declared. See also --num-classes and --label.")
    schema.add_argument("--classes", default=None, metavar="A,B,C",
                        help="the label's class names in index order (required for string labels; "
                             "never read from the data)")
    schema.add_argument("--task", choices=("classification", "regression"), default=None,
                        help="what the label is (default: classification)")
    schema.add_argument("--target", default=None, metavar="COL[:LO:HI]",
                        help="a numeric regression target, optionally bounded (--label COL --task regression)")
    schema.add_argument("--numeric", action="append", default=[], metavar="COL[:LO:HI]",
                        help="a number column with public bounds (either may be empty); repeatable")
    schema.add_argument("--categorical", action="append", default=[], metavar="COL=A|B|C or COL#BUCKETS",
                        help="a category column: a declared vocabulary, or SHA-256 hashing into BUCKETS; repeatable")
    schema.add_argument("--tensor", action="append", default=[], metavar="COL=SHAPE",
                        help="a fixed-shape array column, e.g. image=32x32x3; repeatable")
    schema.add_argument("--sequence", action="append", default=[], metavar="COL:VOCAB:MAXLEN[:PAD]",
                        help="token ids in [0, VOCAB), at most MAXLEN, padded with PAD (default 0); repeatable")
    schema.add_argument("--drop", action="append", default=[], metavar="COL",
                        help="leave a column out of the sealed file; repeatable")
    schema.add_argument("--schema", default=None, metavar="FILE.toml", dest="schema_file",
                        help="declarations in a TOML file (label, columns.NAME tables, drop)")
    p.add_argument("--ledger", default=None, metavar="URI",
                   help="where the dataset's budget ledger lives, bound into the encryption context: "
                        "s3://BUCKET/PREFIX?owner=ACCOUNT (Object Lock) on AWS (required, except under --local: "
                        "the local appliance's ledger directory)")
    p.add_argument("--model-owner-key", action="append", default=None, metavar="KEY", dest="model_owner_keys",
                   help="a KMS key the model may be sealed under (checkpoints), bound into the encryption context; "
                        "repeatable; on AWS a key ARN (required, except under --local: the local model-owner key)")
    add_kms_arguments(p)
    add_local_argument(p, "data-owner")
    p.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE, help=argparse.SUPPRESS)
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.set_defaults(func=run, _parser=p)


def _model_owner_keys(args: argparse.Namespace, state: ApplianceState | None) -> list[str]:
    if args.model_owner_keys:
        if state is None:
            for key in args.model_owner_keys:
                # An alias name resolves in the caller's account, and the enclave's KMS caller is the
                # parent: it could create that alias over a key of its own.
                if key.startswith("alias/"):
                    args._parser.error(f"--model-owner-key {key}: an alias name resolves in the parent's account; "
                                       "give the key ARN (or the alias ARN)")
        return list(args.model_owner_keys)
    if state is not None:
        # The local model-owner key by its alias (as the README's job spec names it) and its id
        # (as `hermetic local up --json` reports it): one account, so both mean the same key.
        return [state.model_owner_alias, state.model_owner_key]
    args._parser.error("--model-owner-key is required: the data owner decides which KMS key receives the model")
    raise AssertionError("argparse's error() exits")


def _kms(args: argparse.Namespace) -> tuple[Any, str, str, str, ApplianceState | None]:
    """The KMS client, key id, owner name, ledger location and local state (None on AWS)."""
    if args.local is not None:
        state, identity, client = local_kms(args, DATA_OWNER)
        ledger = args.ledger or local_location(str(state.ledger_dir))
        return client, args.key_id or state.data_owner_key, args.owner or identity.name, ledger, state
    if args.key_id is None:
        args._parser.error("--key-id is required (or --local, for the local appliance's data-owner key)")
    if not args.owner:
        args._parser.error("--owner is required: the data owner's name goes into the encryption context")
    if not args.ledger:
        args._parser.error("--ledger is required: every job on the dataset spends its budget from that ledger")
    return kms_client(args), args.key_id, args.owner, args.ledger, None


def run(args: argparse.Namespace) -> int:
    client, key_id, owner, ledger, state = _kms(args)
    model_owner_keys = _model_owner_keys(args, state)
    declaration = declaration_from_flags(
        numeric=args.numeric, categorical=args.categorical, tensor=args.tensor, sequence=args.sequence,
        drop=args.drop, label=args.label_column, target=args.target, task=args.task, classes=args.classes,
        num_classes=args.num_classes, schema_file=args.schema_file,
    )
    reader = open_dataset(args.input)
    count = reader.count()
    bar = None
    if sys.stderr.isatty() and count >= PROGRESS_MIN_RECORDS:
        from tqdm import tqdm

        bar = tqdm(total=count, unit="rec", unit_scale=True, desc="sealing", file=sys.stderr, leave=False)
    try:
        result = seal_dataset(
            reader,
            args.out,
            key_id=key_id,
            kms_client=client,
            max_epsilon=args.max_epsilon,
            delta=args.delta,
            owner=owner,
            ledger=ledger,
            model_owner_keys=model_owner_keys,
            dataset_id=args.dataset_id,
            chunk_size=args.chunk_size,
            progress=bar.update if bar is not None else None,
            schema=declaration,
        )
    finally:
        if bar is not None:
            bar.close()
    if state is not None:
        # `hermetic budget show DATASET --local` finds the cap and the ledger key here.
        write_atomic(state.dataset_context_file(result.dataset_id),
                     (json.dumps(dict(result.encryption_context), indent=2, sort_keys=True) + "\n").encode())
    _print(result, as_json=args.json)
    return 0


def _print(result: SealResult, *, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result.to_json(), sort_keys=True))
        return
    ctx = result.encryption_context
    print(f"sealed {result.record_count} records -> {result.out_path}")
    how = " (derived from the owner and the file's path)" if result.dataset_id_source == "derived" else ""
    print(f"  dataset_id       {result.dataset_id}{how}")
    print(f"  owner            {ctx['owner']}")
    print(f"  budget           epsilon={ctx['max_epsilon']} delta={ctx['delta']}")
    print(f"  ledger           {ctx['ledger']}")
    print(f"  model keys       {ctx['model_owner_keys']} (the only KMS keys checkpoints may be sealed under)")
    print(f"  schema_sha256    {result.schema_sha256}")
    print(f"  sealed_sha256    {result.sealed_sha256}")
    labels = result.labels
    target = result.schema.label if result.schema is not None else None
    if labels is not None:
        how = "as given" if labels.declared else "the largest label + 1; --num-classes declares another"
        print(f"  labels           column {labels.column!r}, {labels.num_classes} classes ({how}), every label checked")
    elif target is not None:
        print(f"  labels           column {target.name!r}, a regression target, every value checked")
    else:
        print("  labels           none declared (no 'label' column): jobs will be refused; see --label")
    if result.schema is not None:
        print("  schema           public, every row checked against it:")
        width = min(max((len(c.name) for c in result.schema), default=0), 24)
        for column in result.schema:
            print(f"    {column.name:<{width}}  {column.describe()}")
    print(f"  public metadata  the record count ({result.record_count}) and the schema above")
