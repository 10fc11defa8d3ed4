"""scripts/run-enclave.sh on a parent instance, with fake nitro-cli and systemctl."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

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
