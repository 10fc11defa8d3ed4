"""The local appliance's state file and how it tells a live process of its own from anything else."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from parent.appliance import (
    STATE_FORMAT,
    ApplianceState,
    ApplianceStateError,
    AwsCredentials,
    IdentityRecord,
    ServiceRecord,
    load_state,
    process_status,
    require_state,
    start_ticks,
)


def make_state(tmp_path: Path, services: dict[str, ServiceRecord] | None = None) -> ApplianceState:
    return ApplianceState(
        state_dir=str(tmp_path), region="us-east-1", account_id="111122223333",
        kms_endpoint="http://127.0.0.1:4567", enclave=f"unix://{tmp_path}/run/enclave.sock",
        kms_relay=f"unix://{tmp_path}/run/kms-relay.sock", run_dir=str(tmp_path / "run"),
        data_owner_key="key-1", model_owner_key="key-2", data_owner_alias="alias/d", model_owner_alias="alias/m",
        root=str(tmp_path / "root.pem"), measurements=str(tmp_path / "m.json"), pcrs={"PCR0": "ab" * 48},
        identities={"data-owner": IdentityRecord("data-owner", "arn:aws:iam::111122223333:user/d",
                                                 str(tmp_path / "d.json"))},
        services=services or {},
    )


def own_record(name: str = "kms-emulator", pid: int | None = None, ticks: int | None = None) -> ServiceRecord:
    pid = os.getpid() if pid is None else pid
    found = start_ticks(pid)
    assert found is not None
    return ServiceRecord(name=name, pid=pid, start_ticks=found if ticks is None else ticks,
                         started_at="2026-01-01T00:00:00+00:00", argv=("x", "y"), log="/l", address="a")


def test_state_round_trips_through_its_file(tmp_path: Path) -> None:
    state = make_state(tmp_path, {"kms-emulator": own_record()})
    state.save()
    loaded = load_state(tmp_path)
    assert loaded == state
    assert json.loads(state.path.read_text())["format"] == STATE_FORMAT
    assert loaded is not None and loaded.kms_target() == "127.0.0.1:4567"
    assert load_state(tmp_path / "elsewhere") is None


@pytest.mark.parametrize("change", [
    {"format": "something-else"}, {"pcrs": ["PCR0"]}, {"kms_endpoint": 5}, {"services": {"k": {"pid": "1"}}},
])
def test_malformed_state_is_refused(tmp_path: Path, change: dict[str, object]) -> None:
    raw = {**make_state(tmp_path).to_json(), **change}
    (tmp_path / "appliance.json").write_text(json.dumps(raw))
    with pytest.raises(ApplianceStateError):
        load_state(tmp_path)


def test_credentials_live_in_their_own_0600_file(tmp_path: Path) -> None:
    creds = AwsCredentials("data-owner", "arn:aws:iam::111122223333:user/d", "AKIAEXAMPLE", "secret")
    creds.save(tmp_path / "d.json")
    assert (tmp_path / "d.json").stat().st_mode & 0o777 == 0o600
    state = make_state(tmp_path)
    assert state.credentials("data-owner") == creds
    assert "secret" not in json.dumps(state.to_json())
    with pytest.raises(ApplianceStateError, match="no parent identity"):
        state.credentials("parent")


def test_process_status_tells_ours_from_a_recycled_pid() -> None:
    assert process_status(os.getpid(), own_record().start_ticks) == "running"
    assert process_status(os.getpid(), own_record().start_ticks + 1) == "replaced"
    assert process_status(2**22 + 12345, 1) == "exited"


def test_a_zombie_is_not_running() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    ticks = start_ticks(child.pid)
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # exited, not yet reaped: a zombie
    assert ticks is not None and process_status(child.pid, ticks) == "exited"
    child.wait()


def test_require_state_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ApplianceStateError, match="hermetic local up"):
        require_state(tmp_path)
    make_state(tmp_path, {"kms-emulator": own_record(ticks=1)}).save()
    assert require_state(tmp_path).kms_endpoint.startswith("http://")
    with pytest.raises(ApplianceStateError, match="kms-emulator .* is not running"):
        require_state(tmp_path, running=("kms-emulator",))
    with pytest.raises(ApplianceStateError, match="mock-enclave .* is not running"):
        require_state(tmp_path, running=("mock-enclave",))
    make_state(tmp_path, {"kms-emulator": own_record()}).save()
    require_state(tmp_path, running=("kms-emulator",))
