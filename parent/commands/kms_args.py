"""The --kms-endpoint/--region options of commands that call KMS as the user, and the client they make."""
from __future__ import annotations

import argparse
import os
from typing import Any

from enclave.errors import ConfigError

DEFAULT_REGION = "us-east-1"


def add_kms_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kms-endpoint", default=None, metavar="URL", help="KMS endpoint, e.g. the emulator")
    parser.add_argument("--region", default=None,
                        help=f"AWS region (default: $AWS_REGION, $AWS_DEFAULT_REGION or {DEFAULT_REGION})")


def region(args: argparse.Namespace) -> str:
    return args.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or DEFAULT_REGION


def kms_client(args: argparse.Namespace) -> Any:
    """A boto3 KMS client for the options in `args`, with the caller's usual credentials."""
    import boto3  # imported per call: `hermetic --help` stays fast

    kwargs: dict[str, Any] = {"region_name": region(args)}
    if args.kms_endpoint:
        kwargs["endpoint_url"] = args.kms_endpoint
    try:
        # A fresh session: the default one caches the credentials it first resolved.
        return boto3.session.Session().client("kms", **kwargs)
    except ValueError as err:  # botocore rejects malformed endpoint URLs this way
        raise ConfigError(f"bad KMS endpoint {args.kms_endpoint!r}: {err}") from None
