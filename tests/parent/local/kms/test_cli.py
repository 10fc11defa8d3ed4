"""`hermetic kms-emulator serve` / `python -m parent.local.kms serve` as a process."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from enclave.errors import ConfigError
from parent.cli import main
from parent.local.kms import load_principals, load_root_der

from .conftest import ARNS, CREDENTIALS, make_client

REPO = Path(__file__).resolve().parents[4]


def _principals_file(tmp_path: Path) -> Path:
    path = tmp_path / "principals.json"
    entries: dict[str, Any] = {}
    for who, (akid, secret, token) in CREDENTIALS.items():
        entry: dict[str, Any] = {"secret_access_key": secret, "arn": ARNS[who]}
        if token:
            entry["session_token"] = token
        entries[akid] = entry
    path.write_text(json.dumps(entries))
    return path


def _root_file(tmp_path: Path, local_ca: Any) -> Path:
    path = tmp_path / "root.pem"
    path.write_bytes(local_ca.root_pem)
    return path


def _wait_for(path: Path, proc: subprocess.Popen[bytes]) -> str:
    """Block on the emulator's `ready URL` line (printed after the ready file is written)."""
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith(b"ready "):
        proc.wait(timeout=30)
        raise AssertionError(f"emulator exited early: {proc.stderr.read().decode() if proc.stderr else ''}")
    url = path.read_text().strip()
    assert line.split(b" ", 1)[1].strip().decode() == url
    return url


def test_serve_as_a_process(tmp_path: Path, local_ca: Any) -> None:
    ready = tmp_path / "ready" / "url"
    ready.parent.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "parent.local.kms", "serve", "--state", str(tmp_path / "state"),
         "--principals", str(_principals_file(tmp_path)), "--root", str(_root_file(tmp_path, local_ca)),
         "--ready-file", str(ready)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        url = _wait_for(ready, proc)
        assert url.startswith("http://127.0.0.1:")
        client = make_client(url, "owner")
        key_id = client.create_key()["KeyMetadata"]["KeyId"]
        assert (tmp_path / "state" / "keys" / f"{key_id}.json").exists()
        assert len(client.generate_random(NumberOfBytes=8)["Plaintext"]) == 8
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()
    assert not out  # the ready line was already read; nothing else goes to stdout
    assert not list(ready.parent.glob(".*.tmp"))


def test_config_errors_exit_1(tmp_path: Path, local_ca: Any, capsys: pytest.CaptureFixture[str]) -> None:
    root = _root_file(tmp_path, local_ca)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"AKIDX": {"secret_access_key": "s", "arn": "bob"}}))
    base = ["kms-emulator", "serve", "--state", str(tmp_path / "s"), "--root", str(root)]
    assert main([*base, "--principals", str(bad)]) == 1
    assert "hermetic: error: principal AKIDX has no valid IAM arn" in capsys.readouterr().err
    good = _principals_file(tmp_path)
    assert main([*base, "--principals", str(good), "--tls-cert", str(root)]) == 1
    assert "--tls-key" in capsys.readouterr().err
    assert main([*base, "--principals", str(tmp_path / "missing.json")]) == 1
    assert "cannot read principals" in capsys.readouterr().err
    not_cert = tmp_path / "nope.pem"
    not_cert.write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    assert main([*base[:-2], "--root", str(not_cert), "--principals", str(good)]) == 1
    assert "is not a PEM or DER X.509 certificate" in capsys.readouterr().err


def test_usage_error_exits_2() -> None:
    with pytest.raises(SystemExit) as info:
        main(["kms-emulator", "serve"])
    assert info.value.code == 2


def test_loaders(tmp_path: Path, local_ca: Any) -> None:
    principals = load_principals(_principals_file(tmp_path))
    assert principals["ASIAPARENT"].session_token == "parent-session-token"
    short = tmp_path / "short.json"
    short.write_text(json.dumps({"AKIDSHORT": ["secret", "arn:aws:iam::111122223333:user/x"]}))
    assert load_principals(short)["AKIDSHORT"].arn.endswith("user/x")
    expiring = tmp_path / "expiring.json"
    expiring.write_text(json.dumps({"ASIAEXPIRING": {
        "secret_access_key": "s", "arn": "arn:aws:sts::111122223333:assumed-role/r/i-1",
        "session_token": "t", "expiration": "2024-05-01T18:00:00Z"}}))
    assert load_principals(expiring)["ASIAEXPIRING"].expires_at == datetime(2024, 5, 1, 18, tzinfo=UTC)
    der = tmp_path / "root.der"
    der.write_bytes(local_ca.root_der)
    assert load_root_der(der) == load_root_der(_root_file(tmp_path, local_ca)) == local_ca.root_der


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        ({"expiration": "2024-05-01T18:00:00Z"}, "has an expiration but no session_token"),
        ({"session_token": "t", "expiration": "2024-05-01T18:00:00"}, "ISO 8601 with a time zone"),
        ({"session_token": "t", "expiration": "tomorrow"}, "ISO 8601 with a time zone"),
        ({"session_token": "t", "expiration": 1714586400}, "ISO 8601 with a time zone"),
    ],
)
def test_principal_expirations_are_checked(tmp_path: Path, entry: dict[str, Any], reason: str) -> None:
    path = tmp_path / "principals.json"
    path.write_text(json.dumps({"ASIAX": {"secret_access_key": "s", "arn": "arn:aws:iam::111122223333:role/r",
                                          **entry}}))
    with pytest.raises(ConfigError, match=reason):
        load_principals(path)
