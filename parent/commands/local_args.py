"""The `--local [DIR]` option: run a command against the appliance `hermetic local up` started.

Under `--local` a command takes addresses, keys and the right AWS identity from the
appliance's state file (`parent.appliance`), so nobody types them. Reading that file
starts nothing and loads no stand-in: production commands may offer the option.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from enclave.errors import ConfigError
from parent.appliance import DEFAULT_STATE_DIR, KMS_SERVICE, ApplianceState, AwsCredentials, require_state


def add_local_argument(parser: argparse.ArgumentParser, role: str) -> None:
    parser.add_argument(
        "--local", nargs="?", const=DEFAULT_STATE_DIR, default=None, type=Path, metavar="DIR",
        help=f"use the local appliance in DIR (default {DEFAULT_STATE_DIR}, see `hermetic local up`): "
             f"its addresses, keys and {role} identity",
    )


def local_state(args: argparse.Namespace, *, running: tuple[str, ...]) -> ApplianceState:
    """The appliance named by --local; each service in `running` must be up."""
    return require_state(Path(args.local), running=running)


def local_kms(args: argparse.Namespace, role: str) -> tuple[ApplianceState, AwsCredentials, Any]:
    """The appliance, the identity of `role` and a KMS client for the appliance's KMS as that identity."""
    if getattr(args, "kms_endpoint", None) is not None:
        raise ConfigError("--kms-endpoint and --local exclude each other: the appliance names its KMS")
    state = local_state(args, running=(KMS_SERVICE,))
    identity = state.credentials(role)
    return state, identity, local_kms_client(state, identity)


def local_kms_client(state: ApplianceState, credentials: AwsCredentials) -> Any:
    """A boto3 KMS client for the appliance's KMS, as `credentials`."""
    import boto3  # imported per call: `hermetic --help` stays fast

    return boto3.session.Session().client(
        "kms", region_name=state.region, endpoint_url=state.kms_endpoint,
        aws_access_key_id=credentials.access_key_id, aws_secret_access_key=credentials.secret_access_key,
    )
