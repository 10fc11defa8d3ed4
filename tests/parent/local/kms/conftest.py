"""Shared fixtures: a LocalCa, MockNsms with chosen PCRs, and a running KMS emulator."""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from parent.local.kms import KmsEmulator, Principal
from parent.local.local_ca import LocalCa
from parent.local.mock_nsm import MockNsm

ACCOUNT = "111122223333"
REGION = "us-east-1"
OWNER_ARN = f"arn:aws:iam::{ACCOUNT}:user/data-owner"
MODEL_OWNER_ARN = f"arn:aws:iam::{ACCOUNT}:user/model-owner"
PARENT_ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/hermetic-parent"
PARENT_SESSION_ARN = f"arn:aws:sts::{ACCOUNT}:assumed-role/hermetic-parent/i-0abc123"
OUTSIDER_ARN = "arn:aws:iam::444455556666:user/outsider"

CREDENTIALS = {
    "owner": ("AKIDDATAOWNER", "data-owner-secret", None),
    "model_owner": ("AKIDMODELOWNER", "model-owner-secret", None),
    # Instance-profile credentials carry a session token, as on a real parent.
    "parent": ("ASIAPARENT", "parent-secret", "parent-session-token"),
    "outsider": ("AKIDOUTSIDER", "outsider-secret", None),
}
ARNS = {"owner": OWNER_ARN, "model_owner": MODEL_OWNER_ARN, "parent": PARENT_SESSION_ARN, "outsider": OUTSIDER_ARN}


def pcr(label: str) -> bytes:
    return hashlib.sha384(label.encode()).digest()


GOOD_PCRS = {0: pcr("image"), 1: pcr("kernel"), 2: pcr("app")}
BAD_PCRS = {0: pcr("other image"), 1: pcr("kernel"), 2: pcr("app")}


def principals() -> dict[str, Principal]:
    return {akid: Principal(secret, ARNS[name], token) for name, (akid, secret, token) in CREDENTIALS.items()}


@pytest.fixture(scope="session")
def local_ca(tmp_path_factory: pytest.TempPathFactory) -> LocalCa:
    return LocalCa.load_or_create(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="session")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> LocalCa:
    return LocalCa.load_or_create(tmp_path_factory.mktemp("other-ca"))


@pytest.fixture()
def make_nsm(local_ca: LocalCa) -> Callable[..., MockNsm]:
    def make(pcrs: dict[int, bytes] | None = None, ca: LocalCa | None = None) -> MockNsm:
        return MockNsm(ca or local_ca, pcrs=GOOD_PCRS if pcrs is None else pcrs)

    return make


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory, local_ca: LocalCa) -> Iterator[KmsEmulator]:
    with KmsEmulator(tmp_path_factory.mktemp("kms-state"), principals(), local_ca.root_der) as running:
        yield running


def make_client(url: str, who: str, **kwargs: Any) -> Any:
    akid, secret, token = CREDENTIALS[who]
    return boto3.session.Session().client(
        "kms",
        endpoint_url=url,
        region_name=REGION,
        aws_access_key_id=akid,
        aws_secret_access_key=secret,
        aws_session_token=token,
        config=Config(retries={"total_max_attempts": 1}),
        **kwargs,
    )


@pytest.fixture(scope="module")
def clients(emulator: KmsEmulator) -> dict[str, Any]:
    return {who: make_client(emulator.url, who) for who in CREDENTIALS}


def policy_templates() -> Path:
    return Path(__file__).resolve().parents[4] / "kms-policies"
