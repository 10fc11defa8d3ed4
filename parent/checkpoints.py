"""The model owner's side of checkpoints: inspect the header, decrypt with plain KMS.

A sealed checkpoint is written by the enclave under a data key from the model
owner's KMS key (see enclave.training.checkpoint). The model-owner key policy
lets the model owner call Decrypt, so here a plain boto3 Decrypt (no Recipient)
releases the data key on the model owner's own machine. The decrypted result is
written as a torch file with mode 0600, atomically.
"""
from __future__ import annotations

import io
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch

from enclave.errors import ConfigError
from enclave.hazmat.chunk_aead import KEY_SIZE
from enclave.kms.attested import kms_error_from_client_error
from enclave.kms.errors import KmsResponseError, KmsUnavailable
from enclave.training.checkpoint import (
    CheckpointState,
    Decrypt,
    model_sha256,
    open_checkpoint,
    read_checkpoint_header,
)
from parent.storage import write_atomic

log = logging.getLogger(__name__)

# What the decrypted torch file holds (no sampler state: it only matters for resume).
PLAIN_KEYS = ("model_state", "optimizer_state", "step", "ledger", "metrics", "job_id", "spec_sha256")
PLAIN_MODE = 0o600


@dataclass(frozen=True)
class CheckpointInfo:
    """What the header of a sealed checkpoint tells without any key."""

    path: Path
    size: int
    key_id: str
    encryption_context: Mapping[str, str]
    chunk_size: int
    payload: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "encryption_context", MappingProxyType(dict(self.encryption_context)))

    @property
    def job_id(self) -> str:
        return self.encryption_context["job_id"]

    @property
    def spec_sha256(self) -> str:
        return self.encryption_context["spec_sha256"]

    @property
    def step(self) -> int:
        return int(self.encryption_context["step"])

    def to_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "size": self.size,
            "key_id": self.key_id,
            "payload": self.payload,
            "chunk_size": self.chunk_size,
            "encryption_context": dict(self.encryption_context),
            "job_id": self.job_id,
            "spec_sha256": self.spec_sha256,
            "step": self.step,
        }


@dataclass(frozen=True)
class DecryptResult:
    out_path: Path
    key_id: str
    job_id: str
    spec_sha256: str
    step: int
    model_sha256: str
    tensors: int
    parameters: int
    metrics: int

    def to_json(self) -> dict[str, Any]:
        return {
            "out_path": str(self.out_path),
            "key_id": self.key_id,
            "job_id": self.job_id,
            "spec_sha256": self.spec_sha256,
            "step": self.step,
            "model_sha256": self.model_sha256,
            "tensors": self.tensors,
            "parameters": self.parameters,
            "metrics": self.metrics,
        }


def read_checkpoint_file(path: str | os.PathLike[str]) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as err:
        raise ConfigError(f"cannot read checkpoint {path}: {err.strerror or err}") from None


def inspect_checkpoint(path: str | os.PathLike[str]) -> CheckpointInfo:
    """Parse only the header: no KMS call, nothing decrypted."""
    data = read_checkpoint_file(path)
    header = read_checkpoint_header(data)
    return CheckpointInfo(
        path=Path(path),
        size=len(data),
        key_id=header.key_id,
        encryption_context=header.encryption_context,
        chunk_size=header.chunk_size,
        payload=header.payload,
    )


def kms_decrypt(client: Any) -> Decrypt:
    """A `decrypt(blob, context, key_id) -> data key` over a plain boto3 KMS client."""

    def decrypt(blob: bytes, context: dict[str, str], key_id: str) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            response = client.decrypt(CiphertextBlob=blob, EncryptionContext=dict(context), KeyId=key_id)
        except ClientError as err:
            raise kms_error_from_client_error("Decrypt", err) from None
        except BotoCoreError as err:
            raise KmsUnavailable(f"KMS Decrypt could not be completed: {err}") from None
        plaintext = response.get("Plaintext") if isinstance(response, Mapping) else None
        if not isinstance(plaintext, (bytes, bytearray)) or len(plaintext) != KEY_SIZE:
            raise KmsResponseError("KMS Decrypt returned no 256-bit data key")
        return bytes(plaintext)

    return decrypt


def decrypt_checkpoint(
    path: str | os.PathLike[str],
    *,
    kms_client: Any,
    expected_job_id: str | None = None,
    expected_spec_sha256: str | None = None,
) -> tuple[CheckpointInfo, CheckpointState]:
    """Decrypt and verify a sealed checkpoint with the model owner's KMS credentials."""
    data = read_checkpoint_file(path)
    header = read_checkpoint_header(data)
    info = CheckpointInfo(
        path=Path(path), size=len(data), key_id=header.key_id,
        encryption_context=header.encryption_context, chunk_size=header.chunk_size, payload=header.payload,
    )
    state = open_checkpoint(
        data,
        decrypt=kms_decrypt(kms_client),
        expected_job_id=expected_job_id,
        expected_spec_sha256=expected_spec_sha256,
    )
    return info, state


def plain_checkpoint(state: CheckpointState) -> dict[str, Any]:
    """The model owner's torch file contents (PLAIN_KEYS)."""
    plain = state.to_plain()
    return {key: plain[key] for key in PLAIN_KEYS}


def write_plain_checkpoint(
    info: CheckpointInfo, state: CheckpointState, out_path: str | os.PathLike[str]
) -> DecryptResult:
    """Write the decrypted checkpoint as a torch file (mode 0600, atomically)."""
    out = Path(out_path)
    if out.is_dir():
        raise ConfigError(f"output {out} is a directory")
    if out.exists() and info.path.exists() and out.samefile(info.path):
        raise ConfigError("refusing to overwrite the sealed checkpoint with its plaintext")
    buffer = io.BytesIO()
    torch.save(plain_checkpoint(state), buffer)
    write_atomic(out, buffer.getvalue(), PLAIN_MODE)
    log.info("wrote decrypted checkpoint of job %s step %d to %s", state.job_id, state.step, out)
    return DecryptResult(
        out_path=out,
        key_id=info.key_id,
        job_id=state.job_id,
        spec_sha256=state.spec_sha256,
        step=state.step,
        model_sha256=model_sha256(state.model_state),
        tensors=len(state.model_state),
        parameters=sum(int(t.numel()) for t in state.model_state.values()),
        metrics=len(state.metrics),
    )
