"""Training checkpoints and their encryption for the model owner.

A checkpoint holds what a run needs to continue and what the model owner is
entitled to: the model and optimizer state_dicts, the privacy ledger (as the
plain dict `PrivacyLedger.to_dict()` gives), the sampler state, the step, the
job id, the spec hash and the metrics released so far.

The sampler state is the step count and the sampling rate q ONLY. The key of the
CSPRNG that drives Poisson sampling and the Gaussian noise is never stored: a
checkpoint leaves the enclave (encrypted for the model owner, who may decrypt it),
and anyone holding that key could reproduce the noise and subtract it from the
released model. A resumed run reseeds its CSPRNG from the NSM.

Plaintext form: `torch.save` of plain containers (dict, list, tuple, str, int,
float, bool, None, CPU tensors), read back with `torch.load(weights_only=True)`
and validated field by field; see `encode_checkpoint` / `decode_checkpoint`.

Encrypted form: a sealed-v1 file (enclave.sealed) whose payload is
"hermetic-checkpoint-v1" and whose encryption context is
``{"hermetic:format": "checkpoint-v1", "job_id", "spec_sha256", "step", "auth_tag"}``,
under a data key from GenerateDataKey on the model owner's KMS key. KMS binds the
context to the data key and every chunk is bound to the header, and `open_checkpoint`
checks the decrypted state against the context, so a checkpoint cannot be passed
off as another job's or another step's.

Authentication. The model owner may decrypt a checkpoint and so can also seal one:
encryption under their key proves nothing about who made it. So the enclave tags
every checkpoint with HMAC-SHA256 under a key derived from the datasets' data keys
(`enclave.hazmat.checkpoint_key`), which only attested enclaves and the data owners
hold, and resumes only a checkpoint whose tag verifies. The tag covers
`auth_message`: the canonical CBOR of the job id, spec hash and step (the context),
the SHA-256 of the exact plaintext (model and optimizer state, privacy ledger,
sampler, metrics), the enclave image's PCR0, and each sealed dataset's id with the
SHA-256 of its encryption context. A forged ledger, an invented metric, another
job, another dataset or another enclave image all change the message. The tag sits
in the encryption context rather than the plaintext so that it can cover the exact
plaintext bytes (no canonical re-encoding of tensors) and be checked before
torch.load ever sees bytes the model owner could have written; it is a MAC under a
secret key, so showing it to the parent and to KMS's logs reveals nothing.
"""
from __future__ import annotations

import hashlib
import io
import logging
import math
import re
import struct
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from enclave.errors import SealedDataError
from enclave.hazmat.cbor import dumps
from enclave.hazmat.checkpoint_key import CheckpointAuthKey
from enclave.kms.errors import KmsResponseError
from enclave.sealed.errors import MalformedHeader
from enclave.sealed.format import (
    CHECKPOINT_AUTH_TAG_CONTEXT_KEY,
    CHECKPOINT_PAYLOAD,
    DEFAULT_CHUNK_SIZE,
    SealedHeader,
    build_checkpoint_context,
)
from enclave.sealed.stream import iter_plaintext, read_header, seal_stream

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "hermetic-checkpoint-v1"
STATE_KEYS: frozenset[str] = frozenset(
    {"format", "job_id", "spec_sha256", "step", "model_state", "optimizer_state",
     "ledger", "sampler", "metrics"}
)
SAMPLER_KEYS: frozenset[str] = frozenset({"steps", "q"})
MODEL_HASH_DOMAIN = b"hermetic-model-sha256-v1\x00"
_MAX_DEPTH = 32
_MAX_JOB_ID = 1024
_HEX64 = re.compile(r"[0-9a-f]{64}")

GenerateDataKey = Callable[[str, dict[str, str]], tuple[bytes, bytes]]
Decrypt = Callable[[bytes, dict[str, str], str], bytes]


class CheckpointError(SealedDataError):
    """A checkpoint is malformed, of the wrong kind, or not the one expected."""


class MalformedCheckpoint(CheckpointError):
    """The checkpoint plaintext or state is not a valid hermetic-checkpoint-v1."""


class NotACheckpoint(CheckpointError):
    """The sealed file carries some other payload (e.g. a dataset)."""


class CheckpointMismatch(CheckpointError):
    """The checkpoint's encryption context, its contents and the expectation disagree."""


class CheckpointNotAuthentic(CheckpointError):
    """The checkpoint's tag is not this enclave image's for this job and these datasets."""


class CheckpointKeyNotAllowed(CheckpointError):
    """The checkpoint is sealed under a KMS key the data owner did not allow to receive the model."""


AUTH_DOMAIN = "hermetic checkpoint auth v1"


def dataset_context_sha256(header: SealedHeader) -> str:
    """Hex SHA-256 of a sealed dataset's encryption context (canonical CBOR)."""
    return hashlib.sha256(dumps(dict(header.encryption_context))).hexdigest()


@dataclass(frozen=True)
class CheckpointBinding:
    """What a checkpoint's tag binds besides its contents: the enclave image and the datasets."""

    pcr0: str
    # (dataset id, dataset_context_sha256) of each sealed dataset, in the job's order.
    datasets: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class CheckpointAuthenticator:
    """Tags and checks checkpoints of one job (see the module docstring)."""

    key: CheckpointAuthKey
    binding: CheckpointBinding

    def auth_message(self, *, job_id: str, spec_sha256: str, step: int, plaintext: bytes) -> bytes:
        # The plaintext is DP-SGD's output (weights, optimizer and ledger state: post-processing of
        # noised sums); its digest only feeds the keyed MAC and never leaves the enclave itself.
        return dumps({
            "domain": AUTH_DOMAIN,
            "job_id": job_id,
            "spec_sha256": spec_sha256,
            "step": step,
            "plaintext_sha256": hashlib.sha256(plaintext).digest(),
            "pcr0": self.binding.pcr0,
            "datasets": [[dataset_id, context] for dataset_id, context in self.binding.datasets],
        })

    def tag(self, *, job_id: str, spec_sha256: str, step: int, plaintext: bytes) -> str:
        message = self.auth_message(job_id=job_id, spec_sha256=spec_sha256, step=step, plaintext=plaintext)
        return self.key.tag(message).hex()

    def check(self, context: Mapping[str, str], plaintext: bytes) -> None:
        """CheckpointNotAuthentic unless the context's auth_tag is this job's tag of `plaintext`."""
        message = self.auth_message(job_id=context["job_id"], spec_sha256=context["spec_sha256"],
                                    step=int(context["step"]), plaintext=plaintext)
        if not self.key.verify(message, bytes.fromhex(context[CHECKPOINT_AUTH_TAG_CONTEXT_KEY])):
            raise CheckpointNotAuthentic("checkpoint was not made by this enclave image for this job and datasets")


@dataclass(frozen=True)
class SamplerState:
    """Where Poisson sampling stands: steps taken and the rate q. No key, by design."""

    steps: int
    q: float

    def __post_init__(self) -> None:
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 0:
            raise MalformedCheckpoint("sampler steps must be a non-negative integer")
        if isinstance(self.q, bool) or not isinstance(self.q, (int, float)):
            raise MalformedCheckpoint("sampler q must be a number")
        if not (math.isfinite(self.q) and 0.0 < self.q <= 1.0):
            raise MalformedCheckpoint("sampler q must be in (0, 1]")
        object.__setattr__(self, "q", float(self.q))

    def to_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "q": self.q}

    @classmethod
    def from_dict(cls, raw: Any) -> SamplerState:
        if not isinstance(raw, Mapping) or set(raw) != SAMPLER_KEYS:
            raise MalformedCheckpoint(f"sampler state must hold exactly {sorted(SAMPLER_KEYS)}")
        return cls(steps=raw["steps"], q=raw["q"])


@dataclass(frozen=True)
class CheckpointState:
    """Everything a checkpoint carries (see module docstring); no CSPRNG key."""

    job_id: str
    spec_sha256: str
    step: int
    model_state: Mapping[str, torch.Tensor]
    optimizer_state: Mapping[Any, Any]
    ledger: Mapping[str, Any]
    sampler: SamplerState
    metrics: tuple[Mapping[str, Any], ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if not isinstance(self.job_id, str) or not 0 < len(self.job_id) <= _MAX_JOB_ID:
            raise MalformedCheckpoint(f"job_id must be a non-empty string of at most {_MAX_JOB_ID} characters")
        if not isinstance(self.spec_sha256, str) or not _HEX64.fullmatch(self.spec_sha256):
            raise MalformedCheckpoint("spec_sha256 must be 64 lowercase hex digits")
        if isinstance(self.step, bool) or not isinstance(self.step, int) or self.step < 0:
            raise MalformedCheckpoint("step must be a non-negative integer")
        _check_model_state(self.model_state)
        _check_optimizer_state(self.optimizer_state)
        if not isinstance(self.ledger, Mapping):
            raise MalformedCheckpoint("ledger must be a dict")
        _check_plain(self.ledger, "ledger", tensors=False)
        if not isinstance(self.sampler, SamplerState):
            raise MalformedCheckpoint("sampler must be a SamplerState")
        if isinstance(self.metrics, (str, bytes)) or not isinstance(self.metrics, Sequence):
            raise MalformedCheckpoint("metrics must be a list of dicts")
        for entry in self.metrics:
            if not isinstance(entry, Mapping):
                raise MalformedCheckpoint("metrics must be a list of dicts")
            _check_plain(entry, "metrics", tensors=False)
        object.__setattr__(self, "metrics", tuple(self.metrics))

    def encryption_context(self, auth_tag: str) -> dict[str, str]:
        """The KMS encryption context this state is sealed under, with its tag."""
        try:
            return build_checkpoint_context(
                job_id=self.job_id, spec_sha256=self.spec_sha256, step=self.step, auth_tag=auth_tag
            )
        except MalformedHeader as err:
            raise MalformedCheckpoint(f"checkpoint cannot be sealed: {err}") from None

    def to_plain(self) -> dict[str, Any]:
        """The plain-container form that `encode_checkpoint` saves."""
        return {
            "format": CHECKPOINT_FORMAT,
            "job_id": self.job_id,
            "spec_sha256": self.spec_sha256,
            "step": self.step,
            "model_state": {name: _cpu(t) for name, t in self.model_state.items()},
            "optimizer_state": _plain(self.optimizer_state),
            "ledger": _plain(self.ledger),
            "sampler": self.sampler.to_dict(),
            "metrics": [_plain(entry) for entry in self.metrics],
        }


# -- validation of plain containers ----------------------------------------------
def _check_plain(node: Any, where: str, *, tensors: bool, depth: int = 0) -> None:
    if depth > _MAX_DEPTH:
        raise MalformedCheckpoint(f"{where} is nested too deeply")
    if node is None or isinstance(node, (bool, int, float, str)):
        return
    if isinstance(node, torch.Tensor):
        if not tensors:
            raise MalformedCheckpoint(f"{where} must not hold tensors")
        _check_tensor(node, where)
        return
    if isinstance(node, Mapping):
        for key, value in node.items():
            if not isinstance(key, (str, int)) or isinstance(key, bool):
                raise MalformedCheckpoint(f"{where} has a key of type {type(key).__name__}")
            _check_plain(value, where, tensors=tensors, depth=depth + 1)
        return
    if isinstance(node, (list, tuple)):
        for value in node:
            _check_plain(value, where, tensors=tensors, depth=depth + 1)
        return
    raise MalformedCheckpoint(f"{where} holds a {type(node).__name__}, not a plain value")


def _check_tensor(tensor: torch.Tensor, where: str) -> None:
    if tensor.layout != torch.strided or tensor.is_quantized:
        raise MalformedCheckpoint(f"{where} holds a non-dense tensor")


def _check_model_state(state: Any) -> None:
    if not isinstance(state, Mapping) or not state:
        raise MalformedCheckpoint("model_state must be a non-empty dict of tensors")
    for name, tensor in state.items():
        if not isinstance(name, str) or not name:
            raise MalformedCheckpoint("model_state names must be non-empty strings")
        if not isinstance(tensor, torch.Tensor):
            raise MalformedCheckpoint(f"model_state[{name!r}] is not a tensor")
        _check_tensor(tensor, f"model_state[{name!r}]")


def _check_optimizer_state(state: Any) -> None:
    # torch's Optimizer.state_dict() shape: {"state": {index: {...}}, "param_groups": [...]}.
    if not isinstance(state, Mapping) or not {"state", "param_groups"} <= set(state):
        raise MalformedCheckpoint("optimizer_state must be an optimizer state_dict")
    if not isinstance(state["state"], Mapping) or not isinstance(state["param_groups"], (list, tuple)):
        raise MalformedCheckpoint("optimizer_state must be an optimizer state_dict")
    _check_plain(state, "optimizer_state", tensors=True)


def _cpu(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().to("cpu").contiguous()


def _plain(node: Any) -> Any:
    """Copy into builtin containers (OrderedDict, MappingProxy -> dict), tensors to CPU."""
    if isinstance(node, torch.Tensor):
        return _cpu(node)
    if isinstance(node, Mapping):
        return {key: _plain(value) for key, value in node.items()}
    if isinstance(node, tuple):
        return tuple(_plain(value) for value in node)
    if isinstance(node, list):
        return [_plain(value) for value in node]
    return node


# -- plaintext encoding ------------------------------------------------------------
def encode_checkpoint(state: CheckpointState) -> bytes:
    """The checkpoint plaintext: torch.save of `state.to_plain()`."""
    buffer = io.BytesIO()
    torch.save(state.to_plain(), buffer)
    return buffer.getvalue()


def decode_checkpoint(data: bytes) -> CheckpointState:
    """Parse checkpoint plaintext; MalformedCheckpoint on anything but a valid one."""
    if not isinstance(data, (bytes, bytearray, memoryview)) or not data:
        raise MalformedCheckpoint("checkpoint plaintext is empty")
    try:
        # weights_only: the restricted unpickler that never calls arbitrary code.
        raw = torch.load(io.BytesIO(bytes(data)), weights_only=True, map_location="cpu")
    except Exception as err:  # noqa: BLE001 - torch raises many unrelated types on hostile input
        raise MalformedCheckpoint(f"checkpoint plaintext is not a torch file ({type(err).__name__})") from None
    return state_from_plain(raw)


def state_from_plain(raw: Any) -> CheckpointState:
    """Validate the plain-container form and build the state."""
    if not isinstance(raw, dict):
        raise MalformedCheckpoint("checkpoint is not a dict")
    keys = set(raw)
    if keys != STATE_KEYS:
        missing = sorted(STATE_KEYS - keys)
        extra = sorted(map(str, keys - STATE_KEYS))
        raise MalformedCheckpoint(f"checkpoint keys wrong (missing {missing}, unexpected {extra})")
    if raw["format"] != CHECKPOINT_FORMAT:
        raise MalformedCheckpoint(f"checkpoint format is {raw['format']!r}, expected {CHECKPOINT_FORMAT!r}")
    metrics = raw["metrics"]
    if not isinstance(metrics, list):
        raise MalformedCheckpoint("metrics must be a list of dicts")
    return CheckpointState(
        job_id=raw["job_id"],
        spec_sha256=raw["spec_sha256"],
        step=raw["step"],
        model_state=raw["model_state"],
        optimizer_state=raw["optimizer_state"],
        ledger=raw["ledger"],
        sampler=SamplerState.from_dict(raw["sampler"]),
        metrics=tuple(metrics),
    )


# -- sealing -----------------------------------------------------------------------
def seal_checkpoint(
    state: CheckpointState,
    *,
    key_id: str,
    generate_data_key: GenerateDataKey,
    authenticator: CheckpointAuthenticator,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> bytes:
    """The whole sealed checkpoint file, tagged by `authenticator`.

    `generate_data_key(key_id, context) -> (plaintext key, CiphertextBlob)`; inside
    the enclave that is `AttestedKms.generate_data_key`, so the key never crosses
    the parent. Callers write the bytes atomically.
    """
    plaintext = encode_checkpoint(state)
    context = state.encryption_context(
        authenticator.tag(job_id=state.job_id, spec_sha256=state.spec_sha256, step=state.step, plaintext=plaintext)
    )
    data_key, blob = generate_data_key(key_id, dict(context))
    try:
        header = SealedHeader(
            key_id=key_id,
            encrypted_data_key=bytes(blob),
            encryption_context=context,
            chunk_size=chunk_size,
            payload=CHECKPOINT_PAYLOAD,
        )
    except MalformedHeader as err:
        raise KmsResponseError(f"KMS response unusable in a checkpoint header: {err}") from None
    out = io.BytesIO()
    seal_stream([plaintext], header, data_key, out)
    del data_key
    log.info("sealed checkpoint of job %s at step %d (%d bytes)", state.job_id, state.step, out.tell())
    return out.getvalue()


def read_checkpoint_header(data: bytes) -> SealedHeader:
    """The sealed header of a checkpoint file; NotACheckpoint for other payloads."""
    header = read_header(io.BytesIO(data))
    if header.payload != CHECKPOINT_PAYLOAD:
        raise NotACheckpoint(f"sealed file holds a {header.payload!r} payload, not a checkpoint")
    return header


def open_checkpoint(
    data: bytes,
    *,
    decrypt: Decrypt,
    expected_job_id: str | None = None,
    expected_spec_sha256: str | None = None,
    authenticator: CheckpointAuthenticator | None = None,
) -> CheckpointState:
    """Decrypt, authenticate and decode a sealed checkpoint.

    `decrypt(blob, context, key_id) -> data key` is `AttestedKms.decrypt` inside
    the enclave (resume) or a plain KMS Decrypt for the model owner. Expectations
    are checked against the header before KMS is asked; the decoded state must
    agree with the authenticated context (job id, spec hash, step). With an
    `authenticator` (the enclave resuming; the model owner has none) the tag is
    checked before the plaintext is decoded.
    """
    stream = io.BytesIO(bytes(data))
    header = read_header(stream)
    if header.payload != CHECKPOINT_PAYLOAD:
        raise NotACheckpoint(f"sealed file holds a {header.payload!r} payload, not a checkpoint")
    context = dict(header.encryption_context)
    if expected_job_id is not None and context["job_id"] != expected_job_id:
        raise CheckpointMismatch(
            f"checkpoint belongs to job {context['job_id']!r}, expected {expected_job_id!r}"
        )
    if expected_spec_sha256 is not None and context["spec_sha256"] != expected_spec_sha256:
        raise CheckpointMismatch(
            f"checkpoint was made under spec {context['spec_sha256'][:16]}..., "
            f"expected {expected_spec_sha256[:16]}..."
        )
    data_key = decrypt(header.encrypted_data_key, context, header.key_id)
    plaintext = b"".join(iter_plaintext(stream, header, data_key))
    del data_key
    if authenticator is not None:
        authenticator.check(context, plaintext)
    state = decode_checkpoint(plaintext)
    check_state_matches_context(state, context)
    return state


def check_state_matches_context(state: CheckpointState, context: Mapping[str, str]) -> None:
    """CheckpointMismatch unless the state's job id, spec hash and step are the context's."""
    for key, value in (("job_id", state.job_id), ("spec_sha256", state.spec_sha256), ("step", str(state.step))):
        if context.get(key) != value:
            raise CheckpointMismatch(
                f"checkpoint {key} is {value!r} inside but {context.get(key)!r} in its encryption context"
            )


# -- model hash --------------------------------------------------------------------
def model_sha256(state_dict: Mapping[str, torch.Tensor]) -> str:
    """Hex SHA-256 of a canonical serialisation of a model state_dict.

    Input to the hash: MODEL_HASH_DOMAIN, u64be(number of tensors), then for each
    name in sorted (code point) order:
        u32be(len(name)) || name (UTF-8)
        u32be(len(dtype)) || dtype (ASCII, torch's name without "torch.", e.g. "float32")
        u32be(ndim) || u64be(dim) for each dim
        u64be(len(data)) || data (the contiguous CPU tensor's elements, little-endian, C order)
    Identical weights give the identical hash on any device or byte order.
    """
    if not isinstance(state_dict, Mapping):
        raise MalformedCheckpoint("model state must be a dict of tensors")
    digest = hashlib.sha256(MODEL_HASH_DOMAIN)
    digest.update(struct.pack(">Q", len(state_dict)))
    for name in sorted(state_dict):
        tensor = state_dict[name]
        if not isinstance(name, str) or not isinstance(tensor, torch.Tensor):
            raise MalformedCheckpoint("model state must map names to tensors")
        _check_tensor(tensor, f"model_state[{name!r}]")
        name_bytes = name.encode("utf-8")
        dtype = str(tensor.dtype).removeprefix("torch.").encode("ascii")
        digest.update(struct.pack(">I", len(name_bytes)) + name_bytes)
        digest.update(struct.pack(">I", len(dtype)) + dtype)
        digest.update(struct.pack(">I", tensor.dim()))
        digest.update(b"".join(struct.pack(">Q", d) for d in tensor.shape))
        raw = _little_endian_bytes(tensor)
        digest.update(struct.pack(">Q", len(raw)))
        digest.update(raw)
    return digest.hexdigest()


def _little_endian_bytes(tensor: torch.Tensor) -> bytes:
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    if flat.numel() == 0:
        return b""
    raw = flat.view(torch.uint8)
    size = flat.element_size()
    if sys.byteorder != "little" and size > 1:
        raw = raw.reshape(-1, size).flip(-1).reshape(-1)
    return raw.numpy().tobytes()

