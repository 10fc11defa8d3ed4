"""The shared --kms-endpoint/--region options and the KMS client they configure."""
from __future__ import annotations

import argparse

import pytest

from enclave.errors import ConfigError
from parent.commands.kms_args import DEFAULT_REGION, add_kms_arguments, kms_client, region


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_kms_arguments(parser)
    return parser.parse_args(list(argv))


def test_region_prefers_the_option_then_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    assert region(_args()) == DEFAULT_REGION
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    assert region(_args()) == "eu-west-1"
    monkeypatch.setenv("AWS_REGION", "eu-central-1")
    assert region(_args()) == "eu-central-1"
    assert region(_args("--region", "ap-south-1")) == "ap-south-1"


def test_client_uses_the_endpoint_and_region() -> None:
    client = kms_client(_args("--kms-endpoint", "http://127.0.0.1:1", "--region", "eu-west-3"))
    assert client.meta.endpoint_url == "http://127.0.0.1:1"
    assert client.meta.region_name == "eu-west-3"


def test_malformed_endpoint_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        kms_client(_args("--kms-endpoint", "not a url", "--region", "eu-west-3"))
