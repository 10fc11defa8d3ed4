"""The local appliance's state file: what `hermetic local up` started and made, and where.

`hermetic local up` (the supervisor in `parent.local.appliance`) writes one file,
`DIR/appliance.json`; the commands' `--local [DIR]` paths read it to find the KMS
endpoint, the enclave's addresses, the keys and the AWS identities, so nobody types
an address or a credential. This module only reads and writes that file and tells
whether a recorded process is still the one that was started: it starts nothing and
imports no stand-in, so production commands may use it.

A process is identified by its PID *and* its start time (clock ticks since boot, from
/proc/PID/stat): a PID the system has since given to another process is not ours.
Secrets (the identities' access keys) live in separate 0600 files the state names.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from enclave.errors import ConfigError
from parent.storage import write_atomic

STATE_FORMAT = "hermetic-local-appliance-v1"
STATE_FILE = "appliance.json"
LEDGER_DIR = "ledger"
DATASETS_DIR = "datasets"
DEFAULT_STATE_DIR = Path(".hermetic/local")

#: The identities `local up` creates, by role.
DATA_OWNER = "data-owner"
MODEL_OWNER = "model-owner"
PARENT = "parent"
ROLES = (DATA_OWNER, MODEL_OWNER, PARENT)

#: The services `local up` starts, in start order.
KMS_SERVICE = "kms-emulator"
ENCLAVE_SERVICE = "mock-enclave"
SERVICES = (KMS_SERVICE, ENCLAVE_SERVICE)


class ApplianceStateError(ConfigError):
    """The local appliance's state is missing, malformed or not usable for the request."""


@dataclass(frozen=True)
class ServiceRecord:
    """One daemon `local up` started: enough to find it again, and to stop only it."""

    name: str
    pid: int
    start_ticks: int  # /proc/PID/stat field 22: tells a recycled PID apart
    started_at: str  # ISO 8601, for people
    argv: tuple[str, ...]
    log: str  # its stdout and stderr
    address: str  # where it serves

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "argv": list(self.argv)}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> ServiceRecord:
        return cls(
            name=_str(raw, "name"), pid=_int(raw, "pid"), start_ticks=_int(raw, "start_ticks"),
            started_at=_str(raw, "started_at"), argv=tuple(_str_list(raw, "argv")), log=_str(raw, "log"),
            address=_str(raw, "address"),
        )


@dataclass(frozen=True)
class IdentityRecord:
    """An AWS identity of the appliance: its name and ARN here, its access key in `file` (0600)."""

    name: str
    arn: str
    file: str

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> IdentityRecord:
        return cls(name=_str(raw, "name"), arn=_str(raw, "arn"), file=_str(raw, "file"))


@dataclass(frozen=True)
class AwsCredentials:
    """An identity's access key, as read from its file."""

    name: str
    arn: str
    access_key_id: str
    secret_access_key: str

    def to_json(self) -> dict[str, str]:
        return asdict(self)

    @classmethod
    def load(cls, path: Path) -> AwsCredentials:
        raw = _read_json(path, "identity file")
        return cls(name=_str(raw, "name"), arn=_str(raw, "arn"), access_key_id=_str(raw, "access_key_id"),
                   secret_access_key=_str(raw, "secret_access_key"))

    def save(self, path: Path) -> None:
        write_atomic(path, (json.dumps(self.to_json(), indent=2) + "\n").encode(), mode=0o600)


@dataclass(frozen=True)
class ApplianceState:
    """`DIR/appliance.json`. Paths are absolute; `services` holds only what is (meant to be) running."""

    state_dir: str
    region: str
    account_id: str
    kms_endpoint: str  # http://127.0.0.1:PORT
    enclave: str  # the mock enclave's control address (unix://...)
    kms_relay: str  # where the enclave's forwarder dials the parent's KMS relay (unix://...)
    run_dir: str  # where the unix sockets live (short paths: at most 108 bytes)
    data_owner_key: str
    model_owner_key: str
    data_owner_alias: str
    model_owner_alias: str
    root: str  # the local Nitro CA's root certificate (PEM)
    measurements: str  # nitro-cli shaped {"Measurements": {"PCR0": ...}}
    pcrs: Mapping[str, str]  # "PCR0" -> hex, as measured when the keys' policies were last rendered
    identities: Mapping[str, IdentityRecord]
    services: Mapping[str, ServiceRecord] = field(default_factory=dict)
    format: str = STATE_FORMAT

    def __post_init__(self) -> None:
        object.__setattr__(self, "pcrs", MappingProxyType(dict(self.pcrs)))
        object.__setattr__(self, "identities", MappingProxyType(dict(self.identities)))
        object.__setattr__(self, "services", MappingProxyType(dict(self.services)))

    @property
    def path(self) -> Path:
        return Path(self.state_dir) / STATE_FILE

    @property
    def ledger_dir(self) -> Path:
        """Where the mock enclave keeps every dataset's budget ledger (`local:` locations)."""
        return Path(self.state_dir) / LEDGER_DIR

    def dataset_context_file(self, dataset_id: str) -> Path:
        """Where `hermetic seal --local` records a dataset's encryption context, for `budget show`."""
        return Path(self.state_dir) / DATASETS_DIR / f"{dataset_id}.json"

    def with_services(self, services: Mapping[str, ServiceRecord]) -> ApplianceState:
        return replace(self, services=services)

    def credentials(self, role: str) -> AwsCredentials:
        identity = self.identities.get(role)
        if identity is None:
            raise ApplianceStateError(f"the local appliance in {self.state_dir} has no {role} identity")
        return AwsCredentials.load(Path(identity.file))

    def kms_target(self) -> str:
        """HOST:PORT of the KMS endpoint, as the parent's relay dials it."""
        rest = self.kms_endpoint.split("://", 1)[-1].rstrip("/")
        return rest

    def to_json(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "state_dir": self.state_dir,
            "region": self.region,
            "account_id": self.account_id,
            "kms_endpoint": self.kms_endpoint,
            "enclave": self.enclave,
            "kms_relay": self.kms_relay,
            "run_dir": self.run_dir,
            "data_owner_key": self.data_owner_key,
            "model_owner_key": self.model_owner_key,
            "data_owner_alias": self.data_owner_alias,
            "model_owner_alias": self.model_owner_alias,
            "root": self.root,
            "measurements": self.measurements,
            "pcrs": dict(self.pcrs),
            "identities": {role: asdict(i) for role, i in self.identities.items()},
            "services": {name: s.to_json() for name, s in self.services.items()},
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> ApplianceState:
        if raw.get("format") != STATE_FORMAT:
            raise ApplianceStateError(f"not a {STATE_FORMAT} state file (format {raw.get('format')!r})")
        pcrs = raw.get("pcrs")
        identities = raw.get("identities")
        services = raw.get("services")
        if not isinstance(pcrs, dict) or not all(isinstance(v, str) for v in pcrs.values()):
            raise ApplianceStateError("state field 'pcrs' must map names to hex strings")
        if not isinstance(identities, dict) or not isinstance(services, dict):
            raise ApplianceStateError("state fields 'identities' and 'services' must be objects")
        return cls(
            state_dir=_str(raw, "state_dir"), region=_str(raw, "region"), account_id=_str(raw, "account_id"),
            kms_endpoint=_str(raw, "kms_endpoint"), enclave=_str(raw, "enclave"), kms_relay=_str(raw, "kms_relay"),
            run_dir=_str(raw, "run_dir"), data_owner_key=_str(raw, "data_owner_key"),
            model_owner_key=_str(raw, "model_owner_key"), data_owner_alias=_str(raw, "data_owner_alias"),
            model_owner_alias=_str(raw, "model_owner_alias"), root=_str(raw, "root"),
            measurements=_str(raw, "measurements"), pcrs=pcrs,
            identities={role: IdentityRecord.from_json(_obj(identities, role)) for role in identities},
            services={name: ServiceRecord.from_json(_obj(services, name)) for name in services},
        )

    def save(self) -> None:
        write_atomic(self.path, (json.dumps(self.to_json(), indent=2) + "\n").encode())


def state_file(state_dir: Path) -> Path:
    return Path(state_dir) / STATE_FILE


def load_state(state_dir: Path) -> ApplianceState | None:
    """The state in `state_dir`, or None if there is none."""
    path = state_file(state_dir)
    if not path.exists():
        return None
    return ApplianceState.from_json(_read_json(path, "state file"))


def require_state(state_dir: Path, *, running: tuple[str, ...] = ()) -> ApplianceState:
    """The state in `state_dir`; each service in `running` must be alive."""
    state = load_state(state_dir)
    if state is None:
        raise ApplianceStateError(f"no local appliance in {state_dir}: run `hermetic local up` first")
    for name in running:
        record = state.services.get(name)
        if record is None or process_status(record.pid, record.start_ticks) != "running":
            raise ApplianceStateError(
                f"the local {name} of {state_dir} is not running: `hermetic local up` restarts it"
            )
    return state


# ------------------------------------------------------------------ processes (Linux /proc)


def start_ticks(pid: int) -> int | None:
    """The start time of process `pid` in clock ticks since boot, or None if it does not exist."""
    stat = _proc_stat(pid)
    return None if stat is None else int(stat[19])


def process_status(pid: int, ticks: int) -> str:
    """"running" if `pid` is alive and started at `ticks`; "exited" if it is gone (or a zombie);
    "replaced" if the PID now belongs to another process."""
    stat = _proc_stat(pid)
    if stat is None or stat[0] in ("Z", "X"):
        return "exited"
    if int(stat[19]) != ticks:
        return "replaced"
    return "running"


def _proc_stat(pid: int) -> list[str] | None:
    """Fields 3.. of /proc/PID/stat (state first), or None if there is no such process."""
    if pid <= 0:
        return None
    try:
        raw = Path(f"/proc/{pid}/stat").read_text("ascii", errors="replace")
    except FileNotFoundError:
        return None
    except OSError as err:
        if not Path("/proc/self/stat").exists():
            raise ApplianceStateError("the local appliance needs Linux /proc to track its processes") from None
        raise ApplianceStateError(f"cannot read /proc/{pid}/stat: {err.strerror}") from None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    return raw[raw.rindex(")") + 2 :].split()


# ------------------------------------------------------------------ JSON helpers


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        raw = json.loads(Path(path).read_text("utf-8"))
    except OSError as err:
        raise ApplianceStateError(f"cannot read {what} {path}: {err.strerror}") from None
    except ValueError as err:
        raise ApplianceStateError(f"{what} {path} is not valid JSON: {err}") from None
    if not isinstance(raw, dict):
        raise ApplianceStateError(f"{what} {path} must hold a JSON object")
    return raw


def _obj(raw: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = raw.get(key)
    if not isinstance(value, dict):
        raise ApplianceStateError(f"state field {key!r} must be an object")
    return value


def _str(raw: Mapping[str, Any], key: str) -> str:
    value = raw.get(key)
    if not isinstance(value, str):
        raise ApplianceStateError(f"state field {key!r} must be a string")
    return value


def _int(raw: Mapping[str, Any], key: str) -> int:
    value = raw.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ApplianceStateError(f"state field {key!r} must be an integer")
    return value


def _str_list(raw: Mapping[str, Any], key: str) -> list[str]:
    value = raw.get(key)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ApplianceStateError(f"state field {key!r} must be a list of strings")
    return value
