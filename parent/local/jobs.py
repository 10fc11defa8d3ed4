"""Run training jobs through the local appliance, for benchmarks and scripted experiments.

`LocalStack` brings up the appliance `hermetic local up` starts — the mock Nitro CA,
the measured enclave package, AWS identities, key policies rendered from the
measurements, the KMS emulator, a data-owner key and a model-owner key, a mock enclave
serving job after job — and then runs any number of jobs through the commands a user
runs (`seal --local`, `train --local --events`, `verify-certificate --measurements`).
Every party is its own process; this module only drives them (it never sees plaintext
data or keys). Closing the stack runs `local down`.
"""
from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from enclave.errors import HermeticError
from parent.appliance import ApplianceState
from parent.local.appliance import CLEAN_ENV, down, up
from parent.local.demo import FASHION_MNIST, FASHION_MNIST_TEST, PUBLIC_TEST_NAME
from parent.local.processes import Service, hermetic_argv, run_command
from parent.storage import write_atomic

log = logging.getLogger(__name__)

__all__ = ["JobFailed", "JobOutcome", "LocalStack", "Progress", "SealedDataset"]

#: (step, total steps, epsilon spent so far) as the enclave reports progress.
Progress = Callable[[int, int, float], None]


class JobFailed(HermeticError):
    """A local training job did not finish with a verified certificate."""


@dataclass(frozen=True)
class SealedDataset:
    dataset_id: str
    path: Path
    records: int
    max_epsilon: float
    delta: float


@dataclass(frozen=True)
class JobOutcome:
    """What one job released and what its certificate proves."""

    job_id: str
    detail: str
    epsilon: float
    delta: float
    steps: int
    noise_multiplier: float
    sampling_rate: float
    accuracy: float | None
    accuracies: tuple[tuple[int, float], ...]
    seconds: float
    certificate: Path
    verified: dict[str, Any]


class LocalStack:
    """The local appliance for a series of jobs; use as a context manager (runs `local down`)."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir.resolve()
        self.state_dir = self.out_dir / "state"
        self.logs = self.out_dir / "logs"
        self._state: ApplianceState | None = None

    @property
    def state(self) -> ApplianceState:
        assert self._state is not None, "use LocalStack as a context manager"
        return self._state

    @property
    def kms_url(self) -> str:
        return self.state.kms_endpoint

    @property
    def data_key(self) -> str:
        return self.state.data_owner_key

    @property
    def model_key(self) -> str:
        return self.state.model_owner_key

    @property
    def pcrs(self) -> dict[int, bytes]:
        return {int(name[3:]): bytes.fromhex(value) for name, value in self.state.pcrs.items()}

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> LocalStack:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._state = up(self.state_dir).state
        except BaseException:
            self.close()
            raise
        log.info("local stack ready: KMS at %s, PCR0 %s", self.kms_url, self.state.pcrs["PCR0"][:16])
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        down(self.state_dir)
        self._state = None

    # ------------------------------------------------------------------ parties

    def seal(self, dataset: Path = FASHION_MNIST, *, max_epsilon: float, delta: float,
             owner: str = "bench-hospital", schema_flags: Sequence[str] = ()) -> SealedDataset:
        """The data owner seals `dataset` under the data key with budget (max_epsilon, delta).

        `schema_flags` are `hermetic seal`'s public-schema flags (--label, --numeric, ...) for a table.
        """
        if not dataset.exists():
            hint = ": install Debian's dataset-fashion-mnist (make dataset)" if dataset == FASHION_MNIST else ""
            raise JobFailed(f"{dataset} is missing{hint}")
        sealed = self.out_dir / f"{dataset.name.split('.')[0]}.sealed"
        out = run_command("seal", hermetic_argv(
            "seal", str(dataset), "--local", str(self.state_dir), "--out", str(sealed), "--max-epsilon",
            repr(float(max_epsilon)), "--delta", repr(float(delta)), "--owner", owner, "--json", *schema_flags,
        ), self.logs, env=CLEAN_ENV)
        info = json.loads(out)
        return SealedDataset(str(info["dataset_id"]), sealed, int(info["record_count"]), float(max_epsilon),
                             float(delta))

    def train(self, spec_toml: str, dataset: SealedDataset, name: str, *,
              public: Path = FASHION_MNIST_TEST, public_name: str = PUBLIC_TEST_NAME,
              progress: Progress | None = None) -> JobOutcome:
        """Run one job in the appliance's mock enclave (`hermetic train --local`); verify its certificate."""
        job_dir = self.out_dir / name
        job_dir.mkdir(parents=True, exist_ok=True)
        spec_path = job_dir / "job.toml"
        write_atomic(spec_path, spec_toml.encode())
        job_id = f"{name}-{secrets.token_hex(4)}"
        began = time.monotonic()
        with Service(f"train-{name}", hermetic_argv(
            "train", str(spec_path), "--local", str(self.state_dir),
            "--dataset", f"{dataset.dataset_id}={dataset.path}", "--public", f"{public_name}={public}",
            "--out", str(job_dir / "out"), "--job-id", job_id, "--events",
        ), self.logs, env=CLEAN_ENV) as job:
            result = job.follow_job(progress)
            code = job.proc.wait()
        seconds = time.monotonic() - began
        if code != 0 or result is None or result.get("status") != "ok":
            reason = (result or {}).get("error") or f"see {job.log_path}"
            raise JobFailed(f"training job {name} failed: {reason}")
        certificate = Path(str(result["certificate"]))
        verified = self.verify(certificate)
        evals = tuple(
            (int(m["step"]), float(m["value"])) for m in result.get("metrics", [])
            if m["kind"] == "public_eval" and str(m["name"]).startswith("accuracy/")
        )
        return JobOutcome(
            job_id=job_id,
            detail=str(result.get("detail", "")),
            epsilon=float(verified["epsilon"]),
            delta=float(verified["delta"]),
            steps=int(verified["steps"]),
            noise_multiplier=float(verified["noise_multiplier"]),
            sampling_rate=float(verified["sampling_rate"]),
            accuracy=evals[-1][1] if evals else None,
            accuracies=evals,
            seconds=seconds,
            certificate=certificate,
            verified=verified,
        )

    def verify(self, certificate: Path) -> dict[str, Any]:
        """verify-certificate against the local root and the appliance's measurements; the report as a dict."""
        report = dict(json.loads(run_command("verify-certificate", hermetic_argv(
            "verify-certificate", str(certificate), "--root", self.state.root, "--measurements",
            self.state.measurements, "--json",
        ), self.logs)))
        if not report.get("valid"):
            raise JobFailed(f"the certificate {certificate} did not verify: {report}")
        return report
