"""`hermetic local up / status / down`: the local appliance as background processes.

`up` makes (once) and keeps in `DIR`: the local Nitro CA, the enclave package's
measurements in the nitro-cli shape, three AWS identities (data owner, model owner,
the parent's role) with fresh access keys in 0600 files, and the two key policies
rendered from the measurements with the same templates as on AWS, and `DIR/ledger/`, where
every dataset sealed with `seal --local` keeps its budget ledger. It starts the KMS
emulator on a loopback port and a mock enclave (with the local-directory ledger backend
over `DIR/ledger/`) that serves job after job on a unix socket, makes the data-owner and
model-owner keys (aliases `alias/hermetic-data-owner` and `alias/hermetic-model-owner`, as
on AWS), and records everything in
`DIR/appliance.json` (`parent.appliance`). Services that are already running are left
alone; crashed ones are restarted. If the enclave code changed since the policies were
rendered, the policies are re-rendered and put on the keys and the enclave restarted.

`down` stops exactly the processes the state names, by PID and start time, and keeps
the rest of the state (keys, identities, sealed data stay usable after the next `up`).
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import secrets
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from enclave.errors import KmsError
from parent.appliance import (
    DATA_OWNER,
    ENCLAVE_SERVICE,
    KMS_SERVICE,
    LEDGER_DIR,
    MODEL_OWNER,
    PARENT,
    ROLES,
    SERVICES,
    ApplianceState,
    ApplianceStateError,
    AwsCredentials,
    IdentityRecord,
    ServiceRecord,
    load_state,
    process_status,
)
from parent.local import daemons
from parent.local.local_ca import LocalCa
from parent.local.measure import measure_enclave_package
from parent.local.mock_enclave import measurements_json
from parent.local.processes import ProcessFailed, hermetic_argv
from parent.policy_render import render_policy
from parent.storage import write_atomic

log = logging.getLogger(__name__)

ACCOUNT = "111122223333"
REGION = "us-east-1"
ARNS = {
    DATA_OWNER: f"arn:aws:iam::{ACCOUNT}:user/data-owner",
    MODEL_OWNER: f"arn:aws:iam::{ACCOUNT}:user/model-owner",
    PARENT: f"arn:aws:iam::{ACCOUNT}:role/hermetic-parent",
}
DATA_OWNER_ALIAS = "alias/hermetic-data-owner"
MODEL_OWNER_ALIAS = "alias/hermetic-model-owner"
TEMPLATES = Path(__file__).resolve().parents[2] / "kms-policies"
READY_TIMEOUT = 120.0
STOP_TIMEOUT = 10.0
# A unix socket path holds at most 108 bytes; beyond this the sockets go to a private temp dir.
MAX_SOCKET_PATH = 100
# The appliance's processes must not pick up a developer's real AWS identity.
CLEAN_ENV: dict[str, str | None] = {
    k: None for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ACCESS_KEY_ID",
                      "AWS_SECRET_ACCESS_KEY")
}


@dataclass(frozen=True)
class UpResult:
    state: ApplianceState
    started: tuple[str, ...]  # services this call started (empty: all were running)
    policies_updated: bool  # the enclave code changed: key policies re-rendered and put

    @property
    def already_running(self) -> bool:
        return not self.started


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    status: str  # "running", "crashed" (PID gone or not ours) or "stopped" (by `local down`)
    pid: int | None
    address: str
    log: str
    log_tail: tuple[str, ...]  # the last lines of its log, when it is not running

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "pid": self.pid, "address": self.address,
                "log": self.log, "log_tail": list(self.log_tail)}


@dataclass(frozen=True)
class Stopped:
    name: str
    pid: int
    outcome: str  # daemons.stop's answer: stopped, killed, exited, replaced

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "pid": self.pid, "outcome": self.outcome}


# ------------------------------------------------------------------ up


def up(state_dir: Path, *, timeout: float = READY_TIMEOUT) -> UpResult:
    state_dir = Path(state_dir).resolve()
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    with _locked(state_dir):
        old = load_state(state_dir)
        alive = _alive_services(old)
        if old is not None and set(alive) == set(SERVICES):
            return UpResult(old, (), False)
        return _bring_up(state_dir, old, alive, timeout)


def _bring_up(
    state_dir: Path, old: ApplianceState | None, alive: dict[str, ServiceRecord], timeout: float
) -> UpResult:
    ca = LocalCa.load_or_create(state_dir)
    pcrs = {f"PCR{i}": value.hex() for i, value in measure_enclave_package().items()}
    measurements = state_dir / "measurements.json"
    write_atomic(measurements, (json.dumps({"Measurements": measurements_json(
        {int(name[3:]): bytes.fromhex(value) for name, value in pcrs.items()})}, indent=2) + "\n").encode())
    identities = _identities(state_dir)
    policies = _render_policies(state_dir, pcrs)
    run_dir = _run_dir(state_dir, old)
    # Every dataset sealed with `seal --local` keeps its budget ledger here (local:DIR).
    (state_dir / LEDGER_DIR).mkdir(mode=0o700, exist_ok=True)
    started: list[ServiceRecord] = []
    try:
        services, data_key, model_key, updated = _start_services(
            state_dir, old, alive, ca, identities, policies, run_dir, started, timeout, pcrs
        )
    except BaseException:
        # Leave nothing running that no state file names.
        for record in reversed(started):
            daemons.stop(record, STOP_TIMEOUT)
        raise
    control, relay = services[ENCLAVE_SERVICE].address, _relay_address(run_dir)
    kms_endpoint = services[KMS_SERVICE].address.rstrip("/")
    state = ApplianceState(
        state_dir=str(state_dir), region=REGION, account_id=ACCOUNT, kms_endpoint=kms_endpoint,
        enclave=control, kms_relay=relay, run_dir=str(run_dir), data_owner_key=data_key,
        model_owner_key=model_key, data_owner_alias=DATA_OWNER_ALIAS, model_owner_alias=MODEL_OWNER_ALIAS,
        root=str(ca.root_cert_path), measurements=str(measurements), pcrs=pcrs,
        identities={role: IdentityRecord(c.name, c.arn, str(_identity_file(state_dir, role)))
                    for role, c in identities.items()},
        services=services,
    )
    state.save()
    return UpResult(state, tuple(r.name for r in started), updated)


def _relay_address(run_dir: Path) -> str:
    return f"unix://{run_dir / 'kms-relay.sock'}"


def _start_services(
    state_dir: Path,
    old: ApplianceState | None,
    alive: dict[str, ServiceRecord],
    ca: LocalCa,
    identities: dict[str, AwsCredentials],
    policies: dict[str, str],
    run_dir: Path,
    started: list[ServiceRecord],
    timeout: float,
    pcrs: Mapping[str, str],
) -> tuple[dict[str, ServiceRecord], str, str, bool]:
    """Start what is not running (appending to `started`), make or update the keys."""
    logs = state_dir / "logs"
    services = dict(alive)
    kms = services.get(KMS_SERVICE)
    if kms is None:
        def kms_argv(port: int) -> list[str]:
            return hermetic_argv(
                "kms-emulator", "serve", "--state", str(state_dir / "kms"),
                "--principals", str(state_dir / "principals.json"), "--root", str(ca.root_cert_path),
                "--port", str(port), "--region", REGION, "--account-id", ACCOUNT,
            )

        try:
            # The endpoint it had before, so what people noted down stays right; any free port otherwise.
            kms = _start(KMS_SERVICE, kms_argv(_port(old.kms_endpoint) if old is not None else 0), logs, state_dir,
                         timeout)
        except ProcessFailed as err:
            if old is None:
                raise
            log.warning("the KMS emulator could not have its old port back (%s): taking a free one", err)
            kms = _start(KMS_SERVICE, kms_argv(0), logs, state_dir, timeout)
        services[KMS_SERVICE] = kms
        started.append(kms)
    kms_endpoint = kms.address.rstrip("/")

    data_key, data_updated = _ensure_key(identities[DATA_OWNER], kms_endpoint, DATA_OWNER_ALIAS,
                                         policies[DATA_OWNER], "hermetic local data-owner key")
    model_key, model_updated = _ensure_key(identities[MODEL_OWNER], kms_endpoint, MODEL_OWNER_ALIAS,
                                           policies[MODEL_OWNER], "hermetic local model-owner key")

    enclave = services.get(ENCLAVE_SERVICE)
    if enclave is not None and old is not None and dict(old.pcrs) != dict(pcrs):
        # It runs the old code, which the keys' new policies no longer name.
        log.info("enclave code changed since the last `local up`: restarting the mock enclave")
        daemons.stop(enclave, STOP_TIMEOUT)
        enclave = None
    if enclave is None:
        enclave = _start(ENCLAVE_SERVICE, hermetic_argv(
            "mock-enclave", "run", "--state", str(state_dir), "--listen", f"unix://{run_dir / 'enclave.sock'}",
            "--kms-relay", _relay_address(run_dir), "--ledger", str(state_dir / LEDGER_DIR),
        ), logs, state_dir, timeout)
        services[ENCLAVE_SERVICE] = enclave
        started.append(enclave)
    return services, data_key, model_key, data_updated or model_updated


def _alive_services(state: ApplianceState | None) -> dict[str, ServiceRecord]:
    if state is None:
        return {}
    return {name: s for name, s in state.services.items()
            if name in SERVICES and process_status(s.pid, s.start_ticks) == "running"}


def _start(name: str, argv: list[str], logs: Path, cwd: Path, timeout: float) -> ServiceRecord:
    log_path = logs / f"{name}.log"
    proc, offset = daemons.spawn(name, argv, log_path, env=CLEAN_ENV, cwd=cwd)
    address = daemons.wait_ready(name, proc, log_path, offset, timeout)
    return daemons.record(name, proc, argv, log_path, address)


def _identity_file(state_dir: Path, role: str) -> Path:
    return state_dir / "identities" / f"{role}.json"


def _identities(state_dir: Path) -> dict[str, AwsCredentials]:
    """The three identities, made once with fresh access keys; the emulator's principals file."""
    out: dict[str, AwsCredentials] = {}
    for role in ROLES:
        path = _identity_file(state_dir, role)
        if path.exists():
            out[role] = AwsCredentials.load(path)
            continue
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        out[role] = AwsCredentials(
            name=role, arn=ARNS[role], access_key_id="AKIA" + secrets.token_hex(8).upper(),
            secret_access_key=secrets.token_urlsafe(30),
        )
        out[role].save(path)
    principals = {c.access_key_id: {"secret_access_key": c.secret_access_key, "arn": c.arn} for c in out.values()}
    write_atomic(state_dir / "principals.json", (json.dumps(principals, indent=2) + "\n").encode(), mode=0o600)
    return out


def _render_policies(state_dir: Path, pcrs: Mapping[str, str]) -> dict[str, str]:
    rendered = {
        DATA_OWNER: render_policy(TEMPLATES / "data-owner.template.json", pcrs,
                                  {"OWNER_ARN": ARNS[DATA_OWNER], "PARENT_ROLE_ARN": ARNS[PARENT]}),
        MODEL_OWNER: render_policy(TEMPLATES / "model-owner.template.json", pcrs,
                                   {"MODEL_OWNER_ARN": ARNS[MODEL_OWNER], "PARENT_ROLE_ARN": ARNS[PARENT]}),
    }
    out = {}
    for role, policy in rendered.items():
        text = json.dumps(policy, indent=2) + "\n"
        write_atomic(state_dir / "policies" / f"{role}.json", text.encode())
        out[role] = text
    return out


def _run_dir(state_dir: Path, old: ApplianceState | None) -> Path:
    if old is not None and Path(old.run_dir).is_dir():
        return Path(old.run_dir)
    run_dir = state_dir / "run"
    if len(str(run_dir / "kms-relay.sock")) > MAX_SOCKET_PATH:
        return Path(tempfile.mkdtemp(prefix="hermetic-local-"))
    run_dir.mkdir(mode=0o700, exist_ok=True)
    return run_dir


def _port(endpoint: str) -> int:
    return int(endpoint.rstrip("/").rsplit(":", 1)[1])


def kms_client(credentials: AwsCredentials, endpoint: str) -> Any:
    return boto3.session.Session().client(
        "kms", region_name=REGION, endpoint_url=endpoint, aws_access_key_id=credentials.access_key_id,
        aws_secret_access_key=credentials.secret_access_key, config=Config(retries={"total_max_attempts": 2}),
    )


def _ensure_key(
    owner: AwsCredentials, endpoint: str, alias: str, policy: str, description: str
) -> tuple[str, bool]:
    """The key behind `alias` (made if missing) with `policy` on it; whether the policy had to change."""
    client = kms_client(owner, endpoint)
    try:
        existing = {a["AliasName"]: a.get("TargetKeyId") for a in client.list_aliases()["Aliases"]}
        key_id = existing.get(alias)
        if key_id is None:
            key_id = client.create_key(Policy=policy, Description=description)["KeyMetadata"]["KeyId"]
            client.create_alias(AliasName=alias, TargetKeyId=key_id)
            log.info("created %s -> %s", alias, key_id)
            return str(key_id), False
        current = json.loads(client.get_key_policy(KeyId=key_id, PolicyName="default")["Policy"])
        if current == json.loads(policy):
            return str(key_id), False
        client.put_key_policy(KeyId=key_id, PolicyName="default", Policy=policy)
        log.info("key policy of %s re-rendered for the current enclave measurements", alias)
        return str(key_id), True
    except (BotoCoreError, ClientError) as err:
        raise KmsError(f"setting up {alias} in the local KMS failed: {err}") from None


@contextlib.contextmanager
def _locked(state_dir: Path) -> Iterator[None]:
    """One `up` or `down` at a time per state directory."""
    with open(state_dir / ".lock", "a+b") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


# ------------------------------------------------------------------ status and down


def status(state: ApplianceState, tail_lines: int = 10) -> list[ServiceStatus]:
    out = []
    for name in SERVICES:
        record = state.services.get(name)
        log_path = Path(state.state_dir) / "logs" / f"{name}.log"
        if record is None:
            out.append(ServiceStatus(name, "stopped", None, "", str(log_path), ()))
            continue
        running = process_status(record.pid, record.start_ticks) == "running"
        out.append(ServiceStatus(
            name, "running" if running else "crashed", record.pid, record.address, record.log,
            () if running else tuple(daemons.tail(Path(record.log), tail_lines)),
        ))
    return out


def down(state_dir: Path, *, timeout: float = STOP_TIMEOUT) -> list[Stopped] | None:
    """Stop what the state names (enclave first); None if there is no state in `state_dir`."""
    state_dir = Path(state_dir).resolve()
    if state_dir.exists() and not state_dir.is_dir():
        raise ApplianceStateError(f"{state_dir} is not a directory: no local appliance state there")
    if load_state(state_dir) is None:
        return None
    with _locked(state_dir):
        state = load_state(state_dir)
        assert state is not None
        stopped = []
        remaining = dict(state.services)
        for name in reversed(SERVICES):
            record = remaining.get(name)
            if record is None:
                continue
            stopped.append(Stopped(name, record.pid, daemons.stop(record, timeout)))
            del remaining[name]
            state.with_services(remaining).save()
        run_dir = Path(state.run_dir)
        if run_dir.name.startswith("hermetic-local-") and run_dir.parent == Path(tempfile.gettempdir()):
            shutil.rmtree(run_dir, ignore_errors=True)
        return stopped
