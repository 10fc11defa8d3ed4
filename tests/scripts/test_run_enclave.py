"""scripts/run-enclave.sh on a parent instance, with fake nitro-cli and systemctl."""
from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path

import pytest
import yaml

from tests.scripts.fakes import SCRIPTS, FakeHost, fake_host

RUN = str(SCRIPTS / "run-enclave.sh")
NITRO = '''case "$1" in
  run-enclave) echo '{"EnclaveName": "hermetic", "EnclaveID": "i-0abc-enc0123", "EnclaveCID": 16}';;
  *) exit 3;;
esac'''
# `systemctl is-active --quiet UNIT` succeeds for the units named in $ACTIVE_UNITS.
SYSTEMCTL = 'case " $ACTIVE_UNITS " in *" $3 "*) exit 0;; *) exit 3;; esac'


@pytest.fixture
def host(tmp_path: Path) -> FakeHost:
    h = fake_host(tmp_path)
    h.add("nitro-cli", NITRO)
    h.add("systemctl", SYSTEMCTL)
    (tmp_path / "image.eif").write_bytes(b".eif")
    h.env = {"EIF": str(tmp_path / "image.eif"), "STATE": str(tmp_path / "state"),
             "HERMETIC": str(h.add("hermetic", "sleep 0"))}
    return h


@pytest.mark.parametrize("unit", ["hermetic-vsock-proxy.service", "hermetic-parent.service",
                                  "nitro-enclaves-vsock-proxy.service"])
def test_a_relay_unit_on_port_8000_stops_it_before_the_enclave_starts(host: FakeHost, unit: str) -> None:
    out = host.run([RUN], ACTIVE_UNITS=unit)
    assert out.returncode == 1
    assert f"{unit} already serves vsock port 8000: run with RELAY=0" in out.stderr
    assert not [c for c in host.calls() if c.startswith("nitro-cli")]


def test_relay_0_runs_next_to_the_systemd_relay(host: FakeHost, tmp_path: Path) -> None:
    out = host.run([RUN], ACTIVE_UNITS="hermetic-vsock-proxy.service", RELAY="0")
    assert out.returncode == 0, out.stderr
    assert json.loads((tmp_path / "state" / "enclave.json").read_text())["EnclaveCID"] == 16
    assert not [c for c in host.calls() if c.startswith("hermetic")]


def test_no_relay_unit_starts_parent_serve(host: FakeHost) -> None:
    out = host.run([RUN], ACTIVE_UNITS="")
    assert out.returncode == 0, out.stderr
    assert "parent serve started" in out.stderr
    assert [c for c in host.calls() if c.startswith("nitro-cli run-enclave")]


S3_HOST = "s3.us-east-1.amazonaws.com"
# A stand-in relay that keeps running until stop-enclave signals it (and takes its child along).
RELAY_BODY = "trap 'kill $!; exit 0' TERM; sleep 30 & wait"


def _stop_relay(pid_file: Path) -> None:
    """End the stand-in relay whatever the test did; wait (bounded) until it is gone."""
    if not pid_file.exists():
        return
    pid = int(pid_file.read_text())
    gone = threading.Event()
    for _ in range(500):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        gone.wait(0.01)
    raise AssertionError(f"the stand-in S3 relay (PID {pid}) did not stop")


def _relay_call(host: FakeHost) -> str:
    """The stand-in relay's command line, once it ran (it starts in the background: bounded wait)."""
    logged = threading.Event()
    for _ in range(1000):
        calls = [c for c in host.calls() if c.startswith("vsock-proxy")]
        if calls:
            return calls[0]
        logged.wait(0.005)
    raise AssertionError("the S3 relay never started")


def test_the_s3_relay_starts_on_vsock_8001_for_the_regional_s3_endpoint(host: FakeHost, tmp_path: Path) -> None:
    host.add("vsock-proxy", RELAY_BODY)
    state = tmp_path / "state"
    try:
        out = host.run([RUN], ACTIVE_UNITS="")
        assert out.returncode == 0, out.stderr
        config = state / "vsock-proxy-s3.yaml"
        assert _relay_call(host) == f"vsock-proxy 8001 {S3_HOST} 443 --config {config}"
        assert yaml.safe_load(config.read_text()) == {"allowlist": [{"address": S3_HOST, "port": 443}]}
        assert "S3 relay started" in out.stderr
        # A second start while it runs is refused before any enclave starts.
        again = host.run([RUN], ACTIVE_UNITS="")
        assert again.returncode == 1 and "the S3 relay already runs" in again.stderr
    finally:
        _stop_relay(state / "s3-relay.pid")


def test_stop_enclave_stops_the_s3_relay(host: FakeHost, tmp_path: Path) -> None:
    host.add("vsock-proxy", RELAY_BODY)
    pid_file = tmp_path / "state" / "s3-relay.pid"
    try:
        assert host.run([RUN], ACTIVE_UNITS="").returncode == 0
        _relay_call(host)
        pid = int(pid_file.read_text())
        host.add("nitro-cli", "exit 0")
        out = host.run([str(SCRIPTS / "stop-enclave.sh")])
        assert f"S3 relay (PID {pid}) stopped" in out.stderr, out.stderr
        assert not pid_file.exists()
    finally:
        _stop_relay(pid_file)


def test_the_s3_relay_unit_or_s3_relay_0_means_none_is_started(host: FakeHost) -> None:
    host.add("vsock-proxy", RELAY_BODY)
    out = host.run([RUN], ACTIVE_UNITS="hermetic-s3-vsock-proxy.service")
    assert out.returncode == 0, out.stderr
    assert "hermetic-s3-vsock-proxy.service serves the S3 relay" in out.stderr
    out = host.run([RUN], ACTIVE_UNITS="", S3_RELAY="0")
    assert out.returncode == 0 and "jobs on S3 ledgers will be refused" in out.stderr
    assert not [c for c in host.calls() if c.startswith("vsock-proxy")]


def test_without_vsock_proxy_it_says_s3_ledgers_are_unreachable(host: FakeHost) -> None:
    out = host.run([RUN], ACTIVE_UNITS="")
    assert out.returncode == 0, out.stderr
    assert "vsock-proxy not found" in out.stderr and "jobs on S3 ledgers will be refused" in out.stderr
