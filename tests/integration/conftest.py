"""The data path with real parts: KMS emulator (HTTP + SigV4 + policies), MockNsm,
the enclave runtime on its own thread, and the parent's relay and session.

`DataPath.run` sends a small training job whose training loop only records what
the enclave handed it: everything up to the trainer is the real runtime."""
from __future__ import annotations

import json
import shutil
import tempfile
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
from botocore.config import Config

from enclave.egress import EgressGate
from enclave.ledger.local import local_backends
from enclave.ledger.location import NO_LEDGERS, local_location
from enclave.training.trainer import TrainingInputs
from enclave.transport.address import Address, UnixAddress
from enclave.transport.messages import Credentials, TrainingJob
from enclave.wiring import RuntimeConfig, SocketEnclave
from parent.local.kms import KmsEmulator, Principal
from parent.local.local_ca import LocalCa
from parent.local.measure import measure_enclave_package
from parent.local.mock_nsm import MockNsm
from parent.policy_render import render_policy
from parent.proxy.job import RelayTarget, run_job
from parent.proxy.session import SessionOutcome
from parent.seal import SealResult, seal_dataset

REPO = Path(__file__).resolve().parents[2]
ACCOUNT = "111122223333"
REGION = "us-east-1"
OWNER = ("AKIDOWNER", "owner-secret", f"arn:aws:iam::{ACCOUNT}:user/data-owner")
PARENT = ("ASIAPARENT", "parent-secret", f"arn:aws:iam::{ACCOUNT}:role/hermetic-parent")
MODEL_OWNER = ("AKIDMODELOWNER", "model-secret", f"arn:aws:iam::{ACCOUNT}:user/model-owner")


def kms_client(url: str, who: tuple[str, str, str]) -> Any:
    return boto3.session.Session().client(
        "kms", endpoint_url=url, region_name=REGION, aws_access_key_id=who[0],
        aws_secret_access_key=who[1], config=Config(retries={"total_max_attempts": 1}),
    )


@dataclass
class Sealed:
    path: Path
    result: SealResult
    data_key: bytes
    plaintext_samples: list[bytes]
    features: np.ndarray
    labels: np.ndarray


class CountingNsm(MockNsm):
    """A MockNsm that counts attestations: every KMS call with Recipient needs one."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.attestations = 0

    def attest(self, **kwargs: Any) -> bytes:
        self.attestations += 1
        return super().attest(**kwargs)


class RecordingLoop:
    """A training-loop factory whose loops record their inputs instead of training."""

    def __init__(self) -> None:
        self.inputs: list[TrainingInputs] = []

    def __call__(self, inputs: TrainingInputs, gate: EgressGate) -> RecordingLoop:
        self.inputs.append(inputs)
        return self

    def run(self) -> str:
        return "handed to the training loop"


def spec_toml(model_key_id: str) -> str:
    """A job the sealed test data fits (784 uint8 `image`, integer `label`): one step, well within the 3.0 budget."""
    return f"""
[job]
name = "data-path"
[model]
name = "mlp"
[optimizer]
name = "sgd"
lr = 0.1
[privacy]
expected_batch_size = 100
steps = 1
max_grad_norm = 1.0
delta = 1e-5
noise_multiplier = 1.0
[checkpoint]
key_id = "{model_key_id}"
"""


class KmsClock:
    """The emulator's clock: the wall clock, `ahead` of it when a test makes time pass
    for KMS (within the 5 minutes of skew SigV4 allows), so credentials can expire."""

    def __init__(self) -> None:
        self.ahead = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.ahead

    def set(self, when: datetime) -> None:
        self.ahead = when - datetime.now(UTC)


@dataclass
class DataPath:
    ca: LocalCa
    emulator: KmsEmulator
    key_id: str
    pcrs: dict[int, bytes]
    sock_dir: Path
    state_dir: Path
    model_key_id: str
    kms_clock: KmsClock

    def seal(
        self,
        tmp_path: Path,
        records: int = 3000,
        dataset_id: str | None = "patients-v1",
        width: int = 784,
        max_epsilon: float = 3.0,
        ledger: str | None = None,
    ) -> Sealed:
        rng = np.random.default_rng(7)
        features = rng.integers(0, 256, size=(records, width), dtype=np.uint8)
        labels = rng.integers(0, 10, size=records, dtype=np.uint8)
        src = tmp_path / "patients.npz"
        # The columns a training job reads by default; the job check refuses other shapes before any key is used.
        np.savez(src, image=features, label=labels)
        client = kms_client(self.emulator.url, OWNER)
        captured: dict[str, bytes] = {}

        def grab(params: dict[str, Any], **_: Any) -> None:
            captured["key"] = params["Plaintext"]

        client.meta.events.register("provide-client-params.kms.Encrypt", grab)
        out = tmp_path / "patients.sealed"
        result = seal_dataset(
            src, out, key_id=self.key_id, kms_client=client, max_epsilon=max_epsilon, delta=1e-5,
            owner="hospital", dataset_id=dataset_id, chunk_size=64 * 1024, ledger=ledger or self.ledger_location,
            model_owner_keys=[self.model_key_id],
        )
        # Random rows are unique: any 48 bytes of them in the parent's traffic is a leak.
        samples = [features[i].tobytes()[:48] for i in range(0, records, max(1, records // 50))]
        return Sealed(out, result, captured["key"], samples, features, labels)

    @property
    def ledger_dir(self) -> Path:
        return self.state_dir / "ledger"

    @property
    def ledger_location(self) -> str:
        return local_location(str(self.ledger_dir.resolve()))

    def credentials(self) -> Credentials:
        return Credentials(
            access_key_id=PARENT[0], secret_access_key=PARENT[1], session_token=None,
            region=REGION, kms_endpoint=self.emulator.url, expiration_ms=None,
        )

    def run(
        self,
        dataset_id: str,
        source: Path,
        *,
        nsm: MockNsm | None = None,
        tap: Any = None,
        training_loop: RecordingLoop | None = None,
        name: str = "job",
        spec: str | None = None,
        s3_relay: Address | None = None,
        s3_ledgers: bool | None = None,
        more: Sequence[tuple[str, Path]] = (),
    ) -> SessionOutcome:
        """One job; with `s3_ledgers` (default: when `s3_relay` is given) the enclave is wired as
        `python -m enclave` is (S3 ledgers only, through its S3 forwarder dialling `s3_relay`),
        else with the local ledger directory. `more` streams further sealed datasets after the first."""
        wired_for_s3 = s3_relay is not None if s3_ledgers is None else s3_ledgers
        control = UnixAddress(str(self.sock_dir / f"{name}.sock"))
        relay = UnixAddress(str(self.sock_dir / f"{name}-kms.sock"))
        runtime = SocketEnclave(
            RuntimeConfig(control=control, kms_relay=relay, s3_relay=s3_relay),
            nsm or MockNsm(self.ca, pcrs=self.pcrs),
            training_loop=training_loop or RecordingLoop(),
            ledgers=NO_LEDGERS if wired_for_s3 else local_backends(self.ledger_dir),
            s3_ledgers=wired_for_s3,
        )
        thread = threading.Thread(target=runtime.serve, kwargs={"sessions": 1}, daemon=True)
        thread.start()
        port = int(self.emulator.url.rsplit(":", 1)[1].rstrip("/"))
        target = RelayTarget("127.0.0.1", port)
        try:
            return run_job(
                enclave=control, relay_listen=relay, kms_target=target, allow_list=[target],
                credentials=self.credentials(), job_id=name,
                datasets=[(dataset_id, str(source)), *((other, str(path)) for other, path in more)],
                tap=tap, extra=[TrainingJob(spec_toml=spec or spec_toml(self.model_key_id))],
            )
        finally:
            runtime.stop()
            thread.join(timeout=30)
            assert not thread.is_alive()


@pytest.fixture(scope="module")
def data_path(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DataPath]:
    state = tmp_path_factory.mktemp("state")
    ca = LocalCa.load_or_create(state)
    principals = {
        OWNER[0]: Principal(OWNER[1], OWNER[2]),
        PARENT[0]: Principal(PARENT[1], PARENT[2]),
        MODEL_OWNER[0]: Principal(MODEL_OWNER[1], MODEL_OWNER[2]),
    }
    pcrs = measure_enclave_package()
    policy = render_policy(
        REPO / "kms-policies" / "data-owner.template.json",
        {f"PCR{i}": v.hex() for i, v in pcrs.items()},
        {"OWNER_ARN": OWNER[2], "PARENT_ROLE_ARN": PARENT[2]},
    )
    model_policy = render_policy(
        REPO / "kms-policies" / "model-owner.template.json",
        {f"PCR{i}": v.hex() for i, v in pcrs.items()},
        {"MODEL_OWNER_ARN": MODEL_OWNER[2], "PARENT_ROLE_ARN": PARENT[2]},
    )
    sock_dir = Path(tempfile.mkdtemp(prefix="h-it-"))
    kms_clock = KmsClock()
    with KmsEmulator(state / "kms", principals, ca.root_der, clock=kms_clock) as emulator:
        key_id = kms_client(emulator.url, OWNER).create_key(Policy=json.dumps(policy))["KeyMetadata"]["KeyId"]
        model_key_id = kms_client(emulator.url, MODEL_OWNER).create_key(
            Policy=json.dumps(model_policy)
        )["KeyMetadata"]["KeyId"]
        yield DataPath(ca, emulator, key_id, pcrs, sock_dir, state, model_key_id, kms_clock)
    shutil.rmtree(sock_dir, ignore_errors=True)
