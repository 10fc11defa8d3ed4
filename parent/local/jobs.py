"""Run training jobs through the whole local stack, for benchmarks and scripted experiments.

`LocalStack` sets up what `hermetic demo` sets up before training — the mock Nitro CA,
the measured enclave package, AWS identities, key policies rendered from the
measurements, the KMS emulator, a data-owner key and a model-owner key — and then runs
any number of jobs: each in a fresh mock enclave process driven by `hermetic parent run
--events`, its certificate verified offline. Every party is its own process, as in the
demo; this module only drives them (it never sees plaintext data or keys).
"""
from __future__ import annotations

import json
import logging
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from enclave.errors import HermeticError
from parent.local.demo import (
    ACCOUNT,
    FASHION_MNIST,
    FASHION_MNIST_TEST,
    MODEL_OWNER_ARN,
    OWNER_ARN,
    PARENT_ROLE_ARN,
    PUBLIC_TEST_NAME,
    REGION,
    AwsIdentity,
    _clean_env,
)
from parent.local.local_ca import LocalCa
from parent.local.measure import measure_enclave_package
from parent.local.mock_enclave import measurements_json
from parent.local.processes import Service, hermetic_argv, run_command
from parent.storage import write_atomic

log = logging.getLogger(__name__)

__all__ = ["JobFailed", "JobOutcome", "LocalStack", "SealedDataset"]

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
    """The local parties of a training job; use as a context manager (stops its processes)."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir.resolve()
        self.state = self.out_dir / "state"
        self.logs = self.out_dir / "logs"
        self._run_dir: Path | None = None
        self._services: list[Service] = []
        self.kms_url = ""
        self.data_key = ""
        self.model_key = ""
        self.pcrs: dict[int, bytes] = {}

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> LocalStack:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        for service in reversed(self._services):
            service.stop()
        self._services.clear()
        if self._run_dir is not None:
            shutil.rmtree(self._run_dir, ignore_errors=True)
            self._run_dir = None

    def _start(self) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        # Unix socket paths must stay short (108 bytes), so they live in a private temp dir.
        self._run_dir = Path(tempfile.mkdtemp(prefix="hermetic-jobs-"))
        self.ca = LocalCa.load_or_create(self.state)
        self.pcrs = measure_enclave_package()
        measurements = self.out_dir / "measurements.json"
        write_atomic(measurements, json.dumps({"Measurements": measurements_json(self.pcrs)}, indent=2).encode())
        self.owner = AwsIdentity.fresh("OWNER", OWNER_ARN)
        self.parent = AwsIdentity.fresh("PARENT", PARENT_ROLE_ARN)
        self.model_owner = AwsIdentity.fresh("MODEL", MODEL_OWNER_ARN)
        principals = self.out_dir / "principals.json"
        write_atomic(
            principals,
            json.dumps({i.access_key_id: {"secret_access_key": i.secret_access_key, "arn": i.arn}
                        for i in (self.owner, self.parent, self.model_owner)}).encode(),
            mode=0o600,
        )
        policies = {}
        for template, flag, arn in (("data-owner", "--owner-arn", OWNER_ARN),
                                    ("model-owner", "--model-owner-arn", MODEL_OWNER_ARN)):
            policies[template] = self.out_dir / f"{template}-policy.json"
            run_command(f"policy-render-{template}", hermetic_argv(
                "policy", "render", "--template", template, "--measurements", str(measurements),
                flag, arn, "--parent-role-arn", PARENT_ROLE_ARN, "--out", str(policies[template]),
            ), self.logs)
        kms = Service("kms-emulator", hermetic_argv(
            "kms-emulator", "serve", "--state", str(self.state / "kms"), "--principals", str(principals),
            "--root", str(self.ca.root_cert_path), "--region", REGION, "--account-id", ACCOUNT,
        ), self.logs, env=_clean_env())
        self._services.append(kms)
        self.kms_url = kms.wait_ready()
        self.data_key = self.owner.client("kms", self.kms_url).create_key(
            Policy=policies["data-owner"].read_text(), Description="hermetic jobs data-owner key"
        )["KeyMetadata"]["KeyId"]
        self.model_key = self.model_owner.client("kms", self.kms_url).create_key(
            Policy=policies["model-owner"].read_text(), Description="hermetic jobs model-owner key"
        )["KeyMetadata"]["KeyId"]
        log.info("local stack ready: KMS at %s, PCR0 %s", self.kms_url, self.pcrs[0].hex()[:16])

    # ------------------------------------------------------------------ parties

    def seal(self, dataset: Path = FASHION_MNIST, *, max_epsilon: float, delta: float,
             owner: str = "bench-hospital") -> SealedDataset:
        """The data owner seals `dataset` under the data key with budget (max_epsilon, delta)."""
        if not dataset.exists():
            raise JobFailed(f"{dataset} is missing: install Debian's dataset-fashion-mnist (make dataset)")
        sealed = self.out_dir / f"{dataset.name.split('.')[0]}.sealed"
        out = run_command("seal", hermetic_argv(
            "seal", str(dataset), "--key-id", self.data_key, "--out", str(sealed), "--max-epsilon",
            repr(float(max_epsilon)), "--delta", repr(float(delta)), "--owner", owner,
            "--kms-endpoint", self.kms_url, "--json",
        ), self.logs, env={**_clean_env(), **self.owner.env()})
        info = json.loads(out)
        return SealedDataset(str(info["dataset_id"]), sealed, int(info["record_count"]), float(max_epsilon),
                             float(delta))

    def train(self, spec_toml: str, dataset: SealedDataset, name: str, *,
              public: Path = FASHION_MNIST_TEST, progress: Progress | None = None) -> JobOutcome:
        """Run one job in a fresh mock enclave; verify its certificate offline."""
        assert self._run_dir is not None, "use LocalStack as a context manager"
        job_dir = self.out_dir / name
        job_dir.mkdir(parents=True, exist_ok=True)
        spec_path = job_dir / "job.toml"
        write_atomic(spec_path, spec_toml.encode())
        control = f"unix://{self._run_dir / (name + '.sock')}"
        relay = f"unix://{self._run_dir / (name + '-kms.sock')}"
        enclave = Service(f"enclave-{name}", hermetic_argv(
            "mock-enclave", "run", "--state", str(self.state), "--listen", control, "--kms-relay", relay,
            "--sessions", "1",
        ), self.logs, env=_clean_env())
        self._services.append(enclave)
        job_id = f"{name}-{secrets.token_hex(4)}"
        target = f"127.0.0.1:{self.kms_url.rstrip('/').rsplit(':', 1)[1]}"
        began = time.monotonic()
        try:
            enclave.wait_ready()
            job = Service(f"parent-{name}", hermetic_argv(
                "parent", "run", "--enclave", control, "--kms-relay", relay, "--kms-target", target,
                "--allow", target, "--dataset", f"{dataset.dataset_id}={dataset.path}", "--region", REGION,
                "--kms-endpoint", f"http://{target}", "--spec", str(spec_path),
                "--public", f"{PUBLIC_TEST_NAME}={public}", "--out", str(job_dir / "out"),
                "--job-id", job_id, "--events",
            ), self.logs, env={**_clean_env(), **self.parent.env()})
            self._services.append(job)
            result = job.follow_job(progress)
            code = job.proc.wait()
            job.stop()
        finally:
            enclave.stop()
        seconds = time.monotonic() - began
        if code != 0 or result is None:
            raise JobFailed(f"training job {name} failed; see {job.log_path}")
        certificate = Path(str(result["certificate"]))
        verified = self.verify(certificate)
        evals = tuple(
            (int(m["step"]), float(m["value"])) for m in result.get("metrics", []) if m["kind"] == "public_eval"
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
        """verify-certificate against the local root and the measured PCR0/1/2; the report as a dict."""
        pcr_args = [arg for i in (0, 1, 2) for arg in ("--pcr", f"{i}={self.pcrs[i].hex()}")]
        report = dict(json.loads(run_command("verify-certificate", hermetic_argv(
            "verify-certificate", str(certificate), "--root", str(self.ca.root_cert_path), *pcr_args, "--json",
        ), self.logs)))
        if not report.get("valid"):
            raise JobFailed(f"the certificate {certificate} did not verify: {report}")
        return report
