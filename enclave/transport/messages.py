"""Typed messages exchanged between the parent and the enclave.

A message is a frozen dataclass registered under a one-byte type id. Its wire
payload is the canonical CBOR (cbor2 `canonical=True`) of a map from field
name to value; bytes stay CBOR byte strings. Decoding is strict: the payload
must be exactly the canonical encoding of a map with exactly the class's
field names and values of the declared types, so every message has one and
only one encoding.

Field types understood by the schema: str, int (64-bit range, never bool),
float (ints widen), bool, bytes, None, unions of those, `tuple[X, ...]`
(lists are accepted and stored as tuples) and `Mapping[str, X]` (stored as
an immutable mapping). A message type is declared with `register`:

    @register(0x40)
    @dataclass(frozen=True)
    class TrainingProgress(Message):
        step: int
"""
from __future__ import annotations

import collections.abc
import dataclasses
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar, Union

import cbor2

from enclave.hazmat.cbor import dumps, strict_loads
from enclave.transport.errors import InvalidMessage, MalformedFrame, UnknownMessageType

PROTOCOL_VERSION = 1
_INT_MIN = -(2**64)
_INT_MAX = 2**64 - 1

M = TypeVar("M", bound="Message")
_Check = Callable[[Any, str], Any]


class Message:
    """Base of every message; subclasses are frozen dataclasses made by `register`."""

    TYPE_ID: ClassVar[int]

    def __post_init__(self) -> None:
        schema = _schema_for(type(self))
        for name, check in schema.items():
            object.__setattr__(self, name, check(getattr(self, name), name))
        self._validate()

    def _validate(self) -> None:
        """Checks across fields or on values; raise InvalidMessage."""

    def to_fields(self) -> dict[str, Any]:
        """The CBOR-ready map of this message's fields."""
        return {f.name: _to_cbor(getattr(self, f.name)) for f in dataclasses.fields(self)}  # type: ignore[arg-type]  # every Message is a dataclass


class MessageRegistry:
    """Type id <-> message class, both ways, each unique."""

    def __init__(self) -> None:
        self._by_id: dict[int, type[Message]] = {}
        self._by_class: dict[type[Message], int] = {}

    def register(self, type_id: int) -> Callable[[type[M]], type[M]]:
        if isinstance(type_id, bool) or not isinstance(type_id, int) or not 0 <= type_id <= 0xFF:
            raise ValueError(f"message type id must fit in one byte, got {type_id!r}")

        def decorate(cls: type[M]) -> type[M]:
            if not (dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen):
                raise TypeError(f"{cls.__name__} must be a frozen dataclass")
            if not issubclass(cls, Message):
                raise TypeError(f"{cls.__name__} must derive from Message")
            if type_id in self._by_id:
                raise ValueError(
                    f"message type id {type_id:#04x} is taken by {self._by_id[type_id].__name__}"
                )
            if cls in self._by_class:
                raise ValueError(f"{cls.__name__} is already registered")
            _schema_for(cls)  # fail at import time on an unsupported field type
            cls.TYPE_ID = type_id
            self._by_id[type_id] = cls
            self._by_class[cls] = type_id
            return cls

        return decorate

    def class_for(self, type_id: int) -> type[Message]:
        try:
            return self._by_id[type_id]
        except KeyError:
            raise UnknownMessageType(f"unknown message type id {type_id:#04x}") from None

    def type_id_of(self, msg: Message) -> int:
        try:
            return self._by_class[type(msg)]
        except KeyError:
            raise InvalidMessage(f"{type(msg).__name__} is not a registered message type") from None

    def types(self) -> dict[int, type[Message]]:
        return dict(self._by_id)


REGISTRY = MessageRegistry()
register = REGISTRY.register


def encode_payload(msg: Message) -> bytes:
    """Canonical CBOR of the message's field map."""
    return dumps(msg.to_fields())


def decode_payload(cls: type[M], payload: bytes | memoryview) -> M:
    """Strictly decode `payload` into `cls`; anything off raises MalformedFrame."""
    name = cls.__name__
    obj = strict_loads(payload, what=f"{name} payload", error=MalformedFrame, canonical=dumps)
    if not isinstance(obj, dict):
        raise MalformedFrame(f"{name} payload is not a CBOR map")
    expected = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]  # registered classes are dataclasses
    if set(obj) != expected or not all(isinstance(k, str) for k in obj):
        got = sorted(map(str, obj))
        raise MalformedFrame(f"{name} payload has fields {got}, expected {sorted(expected)}")
    try:
        return cls(**obj)
    except InvalidMessage as exc:
        raise MalformedFrame(str(exc)) from None


def _to_cbor(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_to_cbor(v) for v in value]
    if isinstance(value, collections.abc.Mapping):
        return {k: _to_cbor(v) for k, v in value.items()}
    return value


# ---------------------------------------------------------------- schema

_SCHEMAS: dict[type, dict[str, _Check]] = {}


def _schema_for(cls: type) -> dict[str, _Check]:
    schema = _SCHEMAS.get(cls)
    if schema is None:
        hints = typing.get_type_hints(cls)
        schema = {
            f.name: _checker(hints[f.name], f"{cls.__name__}.{f.name}")
            for f in dataclasses.fields(cls)
        }
        _SCHEMAS[cls] = schema
    return schema


def _fail(where: str, expected: str, value: Any) -> typing.NoReturn:
    raise InvalidMessage(f"field {where} must be {expected}, got {type(value).__name__}")


def _checker(hint: Any, where: str) -> _Check:
    origin = typing.get_origin(hint)
    if hint is str:
        return _exact(str, "a string")
    if hint is bytes:
        return _check_bytes
    if hint is bool:
        return _exact(bool, "a boolean")
    if hint is int:
        return _check_int
    if hint is float:
        return _check_float
    if hint is type(None):
        return _exact(type(None), "null")
    if origin in (Union, types.UnionType):
        return _union([_checker(arg, where) for arg in typing.get_args(hint)], typing.get_args(hint))
    if origin is tuple:
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return _sequence(_checker(args[0], where))
    if origin in (dict, collections.abc.Mapping):
        key, val = typing.get_args(hint)
        if key is str:
            return _mapping(_checker(val, where))
    raise TypeError(f"unsupported message field type {hint!r} for {where}")


def _exact(kind: type, expected: str) -> _Check:
    def check(value: Any, name: str) -> Any:
        if type(value) is not kind:
            _fail(name, expected, value)
        return value

    check.exact = kind  # type: ignore[attr-defined]  # tags the checker with the exact type
    return check


def _check_bytes(value: Any, name: str) -> bytes:
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    if type(value) is not bytes:
        _fail(name, "bytes", value)
    return value


_check_bytes.exact = bytes  # type: ignore[attr-defined]  # tags the checker with the exact type


def _check_int(value: Any, name: str) -> int:
    if type(value) is not int:
        _fail(name, "an integer", value)
    if not _INT_MIN <= value <= _INT_MAX:
        raise InvalidMessage(f"field {name} is outside the 64-bit integer range")
    return value


_check_int.exact = int  # type: ignore[attr-defined]  # tags the checker with the exact type


def _check_float(value: Any, name: str) -> float:
    if type(value) is int:
        return float(value)
    if type(value) is not float:
        _fail(name, "a number", value)
    return value


_check_float.exact = float  # type: ignore[attr-defined]  # tags the checker with the exact type


def _union(checks: list[_Check], args: tuple[Any, ...]) -> _Check:
    expected = " or ".join(getattr(a, "__name__", str(a)) for a in args)

    def check(value: Any, name: str) -> Any:
        # Exact type first so that 1 stays an int in `int | float` and True a bool.
        for c in checks:
            if getattr(c, "exact", None) is type(value):
                return c(value, name)
        for c in checks:
            try:
                return c(value, name)
            except InvalidMessage:
                continue
        _fail(name, expected, value)

    return check


def _sequence(item: _Check) -> _Check:
    def check(value: Any, name: str) -> tuple[Any, ...]:
        if not isinstance(value, (list, tuple)):
            _fail(name, "a list", value)
        return tuple(item(v, f"{name}[{i}]") for i, v in enumerate(value))

    return check


def _mapping(item: _Check) -> _Check:
    def check(value: Any, name: str) -> Mapping[str, Any]:
        if not isinstance(value, collections.abc.Mapping):
            _fail(name, "a map", value)
        out = {}
        for k, v in value.items():
            if type(k) is not str:
                _fail(f"{name} key", "a string", k)
            out[k] = item(v, f"{name}[{k!r}]")
        return cbor2.frozendict(out)

    return check


def _require(cond: bool, text: str) -> None:
    if not cond:
        raise InvalidMessage(text)


# ---------------------------------------------------------------- messages
# Ids are grouped by family, so a new message joins its family's block: 0x0_ session
# control, 0x1_ job set-up, 0x2_ dataset stream, 0x3_ results and audit, 0x4_ training
# and checkpoints; 0x5_ and up are free.


@register(0x01)
@dataclass(frozen=True)
class Hello(Message):
    role: str
    protocol_version: int

    def _validate(self) -> None:
        _require(bool(self.role), "Hello.role must not be empty")
        _require(self.protocol_version >= 0, "Hello.protocol_version must not be negative")


@register(0x02)
@dataclass(frozen=True)
class Goodbye(Message):
    pass


@register(0x03)
@dataclass(frozen=True)
class Error(Message):
    code: str
    message: str


@register(0x10)
@dataclass(frozen=True)
class Credentials(Message):
    """AWS credentials the enclave uses for KMS; secrets never appear in repr.

    Sent once after the Hellos, and again, with the same region and endpoint, whenever
    the parent refreshes them: each replaces the KMS client for later calls.
    """

    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(repr=False)
    region: str
    kms_endpoint: str
    expiration_ms: int | None

    def _validate(self) -> None:
        _require(bool(self.access_key_id), "Credentials.access_key_id must not be empty")
        _require(bool(self.region), "Credentials.region must not be empty")
        _require(
            self.kms_endpoint.startswith(("https://", "http://")),
            "Credentials.kms_endpoint must be an http(s) URL",
        )


@register(0x11)
@dataclass(frozen=True)
class JobStart(Message):
    job_id: str
    datasets: tuple[str, ...]

    def _validate(self) -> None:
        _require(bool(self.job_id), "JobStart.job_id must not be empty")
        _require(all(self.datasets), "JobStart.datasets must not hold empty ids")


@register(0x20)
@dataclass(frozen=True)
class DatasetBegin(Message):
    index: int
    dataset_id: str
    size: int | None

    def _validate(self) -> None:
        _require(self.index >= 0, "DatasetBegin.index must not be negative")
        _require(self.size is None or self.size >= 0, "DatasetBegin.size must not be negative")


@register(0x21)
@dataclass(frozen=True)
class DatasetData(Message):
    data: bytes

    def __repr__(self) -> str:
        # Relayed bytes are ciphertext, but a repr never needs more than the length.
        return f"DatasetData(<{len(self.data)} bytes>)"


@register(0x22)
@dataclass(frozen=True)
class DatasetEnd(Message):
    index: int
    sealed_sha256: bytes

    def _validate(self) -> None:
        _require(self.index >= 0, "DatasetEnd.index must not be negative")
        _require(len(self.sealed_sha256) == 32, "DatasetEnd.sealed_sha256 must be 32 bytes")


@register(0x30)
@dataclass(frozen=True)
class AuditEvent(Message):
    kind: str
    fields: Mapping[str, str | int | float | bool]

    def _validate(self) -> None:
        _require(bool(self.kind), "AuditEvent.kind must not be empty")


@register(0x31)
@dataclass(frozen=True)
class JobResult(Message):
    status: str
    detail: str


# ---------------------------------------------------------------- training (0x4_)
# Stream ids in JobStart.datasets: a plain id is a sealed dataset; "public:NAME" is a
# public evaluation set (plain Arrow IPC, hashed into the certificate);
# "checkpoint:resume" is a sealed checkpoint to resume from; "weights:initial" is the public
# safetensors file the spec's model.weights_sha256 names, sent before any sealed dataset.
PUBLIC_PREFIX = "public:"
RESUME_STREAM = "checkpoint:resume"
WEIGHTS_STREAM = "weights:initial"


@register(0x12)
@dataclass(frozen=True)
class TrainingJob(Message):
    """The job spec (TOML text, hashed into the certificate); no code, only choices."""

    spec_toml: str

    def _validate(self) -> None:
        _require(0 < len(self.spec_toml) <= 64 * 1024, "TrainingJob.spec_toml must be 1..65536 characters")


@register(0x40)
@dataclass(frozen=True)
class TrainingProgress(Message):
    """Data-independent progress: step counts and the epsilon spent so far."""

    step: int
    total_steps: int
    epsilon: float

    def _validate(self) -> None:
        _require(0 <= self.step <= self.total_steps, "TrainingProgress.step must be within 0..total_steps")


@register(0x41)
@dataclass(frozen=True)
class MetricRelease(Message):
    """A metric the egress gate released: on public data, or DP-accounted."""

    name: str
    value: float
    kind: str
    step: int


@register(0x42)
@dataclass(frozen=True)
class CheckpointBegin(Message):
    step: int
    size: int
    final: bool


@register(0x43)
@dataclass(frozen=True)
class CheckpointData(Message):
    data: bytes

    def __repr__(self) -> str:
        return f"CheckpointData(<{len(self.data)} bytes>)"


@register(0x44)
@dataclass(frozen=True)
class CheckpointEnd(Message):
    step: int
    sha256: bytes

    def _validate(self) -> None:
        _require(len(self.sha256) == 32, "CheckpointEnd.sha256 must be 32 bytes")


@register(0x45)
@dataclass(frozen=True)
class CertificateIssued(Message):
    """The privacy certificate file (canonical CBOR: body + attestation)."""

    data: bytes


@register(0x46)
@dataclass(frozen=True)
class AuditLog(Message):
    """The session's audit chain (`enclave.audit_log.encode_log`), sent once, after the certificate.

    One message because the chain is bounded to fit one frame (`MAX_LOG_SIZE`): the parent
    writes it as one file and never has to reassemble or order parts.
    """

    data: bytes

    def __repr__(self) -> str:
        return f"AuditLog(<{len(self.data)} bytes>)"
