"""The local end-to-end demo: every party as its own process, on one machine.

The demo drives the first-hour commands a user runs (`hermetic local up`, `seal
--local`, `train --local`, `verify-certificate --measurements`, `checkpoint decrypt
--local`, `local down`), so it is also their end-to-end test, and adds the proofs a
user would not run: the parent's plain Decrypt is refused, the parent's traffic holds
no plaintext, an enclave with modified code is refused, and once the training job has
spent the dataset's budget a second job is refused before any key use. Data owner, KMS emulator,
mock enclave and parent meet only over sockets, as on Nitro. The demo checks what it
claims and returns a report; the CLI prints the stage lines.
"""
from __future__ import annotations

import hashlib
import json
import logging
import secrets
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from enclave.errors import HermeticError
from parent.appliance import ENCLAVE_SERVICE, KMS_SERVICE, PARENT, ApplianceState, AwsCredentials, require_state
from parent.local.appliance import CLEAN_ENV, kms_client
from parent.local.measure import measure_enclave_package
from parent.local.processes import Service, hermetic_argv, run_command
from parent.storage import write_atomic

log = logging.getLogger(__name__)

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")
FASHION_MNIST_TEST = Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")
PUBLIC_TEST_NAME = "fashion-mnist-test"


class DemoFailed(HermeticError):
    """A claim the demo checks did not hold."""


@dataclass
class DemoReport:
    out_dir: str
    pcr0: str = ""
    key_id: str = ""
    dataset_id: str = ""
    records: int = 0
    sealed_bytes: int = 0
    sealed_sha256: str = ""
    proofs_sealed_sha256: str = ""
    enclave_sealed_sha256: str = ""
    enclave_records: int = 0
    parent_plain_decrypt: str = ""
    parent_traffic_bytes: int = 0
    modified_enclave_pcr0: str = ""
    modified_enclave_outcome: str = ""
    job_id: str = ""
    epsilon: float = 0.0
    delta: float = 0.0
    steps: int = 0
    test_accuracy: float | None = None
    certificate: str = ""
    tensorboard: str = ""
    model_sha256: str = ""
    second_job_outcome: str = ""
    spent_epsilon: float = 0.0
    compliance_report: str = ""  # report.html of `hermetic report`; report.pdf beside it
    proved: list[str] = field(default_factory=list)


Say = Callable[[str], None]


@dataclass(frozen=True)
class Recipe:
    """The demo's training job: a registered model and its DP-SGD hyper-parameters."""

    # Tramer & Boneh (2021)'s ScatterNet + linear recipe for Fashion-MNIST, with the J=1
    # scattering scale joined to their J=2 one (`scatter2_linear`), chosen from the recipes
    # measured (bench/RESULTS.md). The scattering features are computed once inside the
    # enclave, then 293 DP-SGD steps train the linear head.
    model: str = "scatter2_linear"
    batch_size: int = 8192
    epochs: float = 40.0
    lr: float = 16.0
    momentum: float = 0.9
    max_grad_norm: float = 0.1
    epsilon: float = 3.0
    delta: float = 1e-5
    eval_every: int = 100
    checkpoint_every: int | None = 100  # None: only the final checkpoint
    job_name: str = "fashion-mnist-demo"

    def spec_toml(self, key_id: str, *, model: str | None = None, public: str = PUBLIC_TEST_NAME) -> str:
        """The job spec; `model` replaces the [model] section's body (the preset `self.model`), and may go
        on with [data] sections; `public` names the public evaluation dataset."""
        every = "" if self.checkpoint_every is None else f"every_steps = {self.checkpoint_every}\n"
        model = f'name = "{self.model}"' if model is None else model.strip("\n")
        return f"""[job]
name = "{self.job_name}"

[model]
{model}

[optimizer]
name = "sgd"
lr = {self.lr!r}
momentum = {self.momentum!r}

[privacy]
expected_batch_size = {self.batch_size}
epochs = {self.epochs!r}
max_grad_norm = {self.max_grad_norm!r}
delta = {self.delta!r}
target_epsilon = {self.epsilon!r}
accountant = "prv"

[eval]
public = "{public}"
every_steps = {self.eval_every}

[checkpoint]
{every}key_id = "{key_id}"
"""


Progress = Callable[[int, int, float], None]


def _mlp_spec_toml(name: str, key_id: str, delta: float, length: str) -> str:
    """A small MLP job; `length` holds the privacy lines that set how long it runs and its noise."""
    return f"""[job]
name = "{name}"

[model]
name = "mlp"

[optimizer]
name = "sgd"
lr = 0.1

[privacy]
expected_batch_size = 256
max_grad_norm = 1.0
delta = {delta!r}
{length}

[checkpoint]
key_id = "{key_id}"
"""


def second_job_spec_toml(key_id: str, delta: float) -> str:
    """A modest job planned at epsilon 1: after the training job it cannot fit the dataset's cap,
    however little that job left (a one-step job could slip into a remainder of 1e-4)."""
    return _mlp_spec_toml("second-job", key_id, delta, "epochs = 1\ntarget_epsilon = 1.0")


def opening_spec_toml(key_id: str, delta: float) -> str:
    """The smallest job there is, one MLP step: for the runs that show who can open the data."""
    return _mlp_spec_toml("open-dataset", key_id, delta, "steps = 1\nnoise_multiplier = 1.0")


def run_demo(
    out_dir: Path,
    say: Say,
    dataset: Path = FASHION_MNIST,
    recipe: Recipe = Recipe(),
    progress: Progress | None = None,
    audit: bool = False,
) -> DemoReport:
    """The whole demo. Its training part is the first-hour commands: `hermetic local up`,
    `seal --local`, `train --local`, `verify-certificate --measurements`, `checkpoint decrypt
    --local` and `local down`, each run as a user would run it. `audit` adds the empirical
    audit of the recipe (`hermetic audit`, a noised run and its no-noise control) to the report."""
    out_dir = out_dir.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    state_dir = out_dir / "state"
    logs = out_dir / "logs"
    report = DemoReport(out_dir=str(out_dir))
    if not dataset.exists():
        raise DemoFailed(f"{dataset} is missing: install Debian's dataset-fashion-mnist (make dataset)")
    # Unix socket paths must stay short (108 bytes), so the extra enclave's live in a private temp dir.
    run_dir = Path(tempfile.mkdtemp(prefix="hermetic-"))
    services: list[Service] = []
    try:
        up = json.loads(run_command("local-up", hermetic_argv(
            "local", "up", "--state", str(state_dir), "--json"), logs))
        state = require_state(state_dir)
        report.pcr0 = str(up["pcr0"])
        report.key_id = str(up["data_owner_key"])
        say(f"mock Nitro CA ready; enclave code measured: PCR0 {report.pcr0[:24]}…")
        say("data-owner and model-owner key policies rendered from the measurements (kms-policies/)")
        say(f"`hermetic local up`: KMS emulator (pid {up['services'][KMS_SERVICE]['pid']}) on {up['kms_endpoint']}, "
            f"mock enclave (pid {up['services'][ENCLAVE_SERVICE]['pid']}) serving jobs")

        sealed = out_dir / "fashion-mnist-train.sealed"
        sealed_info = json.loads(run_command("seal", hermetic_argv(
            "seal", str(dataset), "--local", str(state_dir), "--out", str(sealed), "--max-epsilon",
            repr(recipe.epsilon), "--delta", repr(recipe.delta), "--num-classes", "10", "--json",
        ), logs, env=CLEAN_ENV))
        report.dataset_id = sealed_info["dataset_id"]
        report.sealed_bytes = sealed.stat().st_size
        # Public values only: the record count the encryption context declares, and the
        # SHA-256 of the sealed file (ciphertext). No digest of the plaintext exists.
        report.records = int(sealed_info["encryption_context"]["record_count"])
        report.sealed_sha256 = hashlib.sha256(sealed.read_bytes()).hexdigest()
        if report.sealed_sha256 != sealed_info["sealed_sha256"]:
            raise DemoFailed("the sealed file on disk is not the one `hermetic seal` reported")
        say(f"data owner sealed Fashion-MNIST (`hermetic seal --local`): {report.records} records, "
            f"{report.sealed_bytes / 1e6:.1f} MB -> {sealed.name}; record count and 10 classes declared public")

        # Every job spends from its dataset's budget ledger, the proofs' one-step jobs included: they get a
        # copy of their own (a fresh data key, so its own ledger), and the training job the whole budget.
        proofs_id = f"{report.dataset_id}-proofs"
        proofs = out_dir / "fashion-mnist-proofs.sealed"
        run_command("seal-proofs", hermetic_argv(
            "seal", str(dataset), "--local", str(state_dir), "--out", str(proofs), "--max-epsilon",
            repr(recipe.epsilon), "--delta", repr(recipe.delta), "--num-classes", "10", "--dataset-id", proofs_id,
            "--json",
        ), logs, env=CLEAN_ENV)
        say(f"and a second sealed copy ({proofs.name}) for the proofs below, with a budget ledger of its own")

        report.parent_plain_decrypt = _plain_decrypt_as(state.credentials(PARENT), state.kms_endpoint, sealed)
        if report.parent_plain_decrypt != "AccessDeniedException":
            raise DemoFailed(f"the parent's plain Decrypt was not refused: {report.parent_plain_decrypt}")
        say("parent role's plain Decrypt of the data key: AccessDenied, as the key policy requires")
        report.proved.append("the parent's role cannot decrypt the data key without an attestation")

        # Every job carries a spec: these runs train one step, enough to open the data.
        opening_spec = run_dir / "open.toml"
        write_atomic(opening_spec, opening_spec_toml(state.model_owner_key, recipe.delta).encode())
        outcome = _parent_run(state, "enclave", state.enclave, state.kms_relay, proofs_id, proofs,
                              opening_spec, run_dir, logs)
        event = next((e for e in outcome.get("audit_events", []) if e["kind"] == "dataset_opened"), None)
        if outcome.get("status") != "ok" or event is None:
            raise DemoFailed(f"the enclave did not open the dataset: {outcome.get('error', outcome)}")
        report.enclave_sealed_sha256 = str(event["sealed_sha256"])
        report.enclave_records = int(event["records"])
        # AES-GCM authenticated every chunk under the owner's key, so opening this exact
        # file is opening the owner's exact plaintext.
        # The proofs run on the owner's second sealed copy (a budget ledger of its own).
        report.proofs_sealed_sha256 = hashlib.sha256(proofs.read_bytes()).hexdigest()
        if report.enclave_sealed_sha256 != report.proofs_sealed_sha256 or report.enclave_records != report.records:
            raise DemoFailed("the enclave opened another file than the one the owner sealed")
        say(f"mock enclave authenticated and decrypted all {report.enclave_records} records of the sealed file "
            f"(SHA-256 {report.enclave_sealed_sha256[:16]}…), the owner's file and declared record count")
        report.proved.append("an enclave with the measured code gets the key and opens the owner's sealed file")
        tapped = (run_dir / "enclave.tap").read_bytes()
        leaked = _plaintext_leaks(dataset, tapped)
        if leaked:
            raise DemoFailed(f"{leaked} plaintext samples appear in the parent's traffic")
        say(f"scanned all {len(tapped) / 1e6:.1f} MB the parent sent and received: no plaintext")
        report.parent_traffic_bytes = len(tapped)
        report.proved.append("the parent relayed only ciphertext and opaque KMS traffic")

        modified = _modified_enclave_copy(run_dir)
        report.modified_enclave_pcr0 = measure_enclave_package(modified)[0].hex()
        refused = _modified_enclave_job(state, run_dir, logs, services, proofs_id, proofs, opening_spec, modified)
        report.modified_enclave_outcome = str(refused.get("error", refused.get("status")))
        if refused.get("status") == "ok" or "AccessDenied" not in report.modified_enclave_outcome:
            raise DemoFailed(f"a modified enclave was not refused: {report.modified_enclave_outcome}")
        say(f"enclave with modified code (PCR0 {report.modified_enclave_pcr0[:24]}…) refused by KMS")
        report.proved.append("an enclave whose code differs (different PCR0) is refused the key")

        _train(report, recipe, state, sealed, out_dir, logs, services, say, progress)
        _verify_outputs(report, state, sealed, out_dir, logs, say)
        second_spec = run_dir / "second.toml"
        write_atomic(second_spec, second_job_spec_toml(state.model_owner_key, recipe.delta).encode())
        _over_budget(report, state, sealed, second_spec, run_dir, logs, say)
        audits = _empirical_audits(out_dir, logs, say) if audit else ()
        _compliance_report(report, state, sealed, out_dir, logs, say, audits)
    finally:
        for service in reversed(services):
            service.stop()
        # Stops exactly what `local up` started, whatever happened above.
        try:
            run_command("local-down", hermetic_argv("local", "down", "--state", str(state_dir)), logs)
        except HermeticError as err:
            log.warning("local down failed: %s", err)
        shutil.rmtree(run_dir, ignore_errors=True)
    write_atomic(out_dir / "report.json", (json.dumps(asdict(report), indent=2) + "\n").encode())
    return report


def _train(
    report: DemoReport,
    recipe: Recipe,
    state: ApplianceState,
    sealed: Path,
    out_dir: Path,
    logs: Path,
    services: list[Service],
    say: Say,
    progress: Progress | None,
) -> None:
    spec_path = out_dir / "job.toml"
    write_atomic(spec_path, recipe.spec_toml(state.model_owner_key).encode())
    report.job_id = f"demo-{secrets.token_hex(4)}"
    tensorboard = out_dir / "tensorboard"
    say(f"training job {report.job_id} (`hermetic train --local`): {recipe.model}, batch {recipe.batch_size}, "
        f"{recipe.epochs:g} epochs, target epsilon {recipe.epsilon:g} at delta {recipe.delta:g}")
    job = Service("train", hermetic_argv(
        "train", str(spec_path), "--local", state.state_dir, "--dataset", f"{report.dataset_id}={sealed}",
        "--public", f"{PUBLIC_TEST_NAME}={FASHION_MNIST_TEST}", "--out", str(out_dir / "job"),
        "--job-id", report.job_id, "--events", "--tensorboard", str(tensorboard),
    ), logs, env=CLEAN_ENV)
    services.append(job)
    result = job.follow_job(progress)
    code = job.proc.wait()
    if code != 0 or result is None or result.get("status") != "ok":
        reason = (result or {}).get("error") or f"see {job.log_path}"
        raise DemoFailed(f"the training job failed: {reason}")
    accuracies = [m for m in result.get("metrics", []) if m["kind"] == "public_eval"
                  and str(m["name"]).startswith("accuracy/")]
    if accuracies:
        report.test_accuracy = float(accuracies[-1]["value"])
    report.certificate = str(result["certificate"])
    report.tensorboard = str(result["tensorboard"])
    say(f"training done: {result['detail']}; the released metrics and epsilon as TensorBoard events in "
        f"{tensorboard}")


def _verify_outputs(report: DemoReport, state: ApplianceState, sealed: Path, out_dir: Path, logs: Path,
                    say: Say) -> None:
    # Pinned to the measured image, and tied to the owner's sealed file and the job's spec.
    verified = json.loads(run_command("verify-certificate", hermetic_argv(
        "verify-certificate", report.certificate, "--root", state.root, "--measurements", state.measurements,
        "--sealed", str(sealed), "--spec", str(out_dir / "job.toml"), "--json",
    ), logs))
    if not verified.get("valid"):
        raise DemoFailed(f"the certificate did not verify: {verified}")
    report.epsilon = float(verified["epsilon"])
    report.delta = float(verified["delta"])
    report.steps = int(verified["steps"])
    report.model_sha256 = str(verified["model_sha256"])
    if report.epsilon > 0 and report.delta > 0:
        say(f"certificate verified offline (`hermetic verify-certificate --measurements`): epsilon "
            f"{report.epsilon:.3f} ({verified['accountant']}) at delta {report.delta:g} over {report.steps} steps, "
            "recomputed independently; enclave PCRs match the measurements, and it names the sealed file and "
            "job spec")
    report.proved.append("the privacy certificate verifies offline against the measured image, names the sealed "
                         "dataset and the job spec, and its epsilon recomputes")
    decrypted = json.loads(run_command("checkpoint-decrypt", hermetic_argv(
        "checkpoint", "decrypt", str(out_dir / "job" / "model.ckpt.sealed"), "--local", state.state_dir,
        "--out", str(out_dir / "model.pt"), "--json",
    ), logs, env=CLEAN_ENV))
    if decrypted.get("model_sha256") != report.model_sha256:
        raise DemoFailed("the model owner's decrypted checkpoint does not match the certificate's model hash")
    say(f"model owner decrypted the final checkpoint (`hermetic checkpoint decrypt --local`): model SHA-256 "
        f"{report.model_sha256[:16]}… matches the certificate")
    report.proved.append("only the model owner can read the checkpoint, and it is the certified model")


def _over_budget(
    report: DemoReport, state: ApplianceState, sealed: Path, spec: Path, run_dir: Path, logs: Path, say: Say
) -> None:
    """A second job on the trained copy: its ledger holds the whole budget, so the enclave refuses it before
    asking KMS for the key, and `hermetic budget show` says what was spent."""
    outcome = _parent_run(state, "second", state.enclave, state.kms_relay, report.dataset_id, sealed, spec,
                          run_dir, logs)
    report.second_job_outcome = str(outcome.get("error", outcome.get("status")))
    if outcome.get("status") == "ok" or "has spent epsilon" not in report.second_job_outcome:
        raise DemoFailed(f"a second job past the dataset's budget was not refused: {report.second_job_outcome}")
    shown = json.loads(run_command("budget-show", hermetic_argv("budget", "show", str(sealed), "--json"), logs))
    if not shown.get("valid") or shown["spent_epsilon"] is None:
        raise DemoFailed(f"the dataset's budget ledger does not verify: {shown.get('problem')}")
    report.spent_epsilon = float(shown["spent_epsilon"])
    say(f"a second job on the same sealed data refused before any key use; `hermetic budget show`: spent "
        f"epsilon {report.spent_epsilon:.3f} of {shown['max_epsilon']:g}, remaining {shown['remaining_epsilon']:.3f}")
    report.proved.append("a dataset's budget bounds all its jobs together: a job past it never gets the key")


def _empirical_audits(out_dir: Path, logs: Path, say: Say) -> tuple[Path, ...]:
    """`hermetic audit` of the demo's recipe on synthetic data of its shape: a noised run, then the control
    without noise; each must keep its rule (exit 0) or the demo fails."""
    results = []
    for name, extra in (("audit", ()), ("audit-control", ("--control-no-noise",))):
        out = run_command(name, hermetic_argv("audit", str(out_dir / "job.toml"), "--local", *extra, "--json"), logs)
        path = out_dir / f"{name}.json"
        write_atomic(path, out.encode())
        result = json.loads(out)
        say(f"empirical audit ({'no-noise control' if result['control'] else 'noised run'}): epsilon >= "
            f"{result['epsilon_lower_bound']:.3f} at {result['confidence']:.0%} against the certified "
            f"{result['epsilon_certified']:.3f} (ceiling {result['ceiling']:.3f}): {result['verdict']}")
        results.append(path)
    return tuple(results)


def _compliance_report(report: DemoReport, state: ApplianceState, sealed: Path, out_dir: Path, logs: Path,
                       say: Say, audits: tuple[Path, ...] = ()) -> None:
    """`hermetic report` for the training job: pinned as verify-certificate was, with the appliance's ledger
    and the job's audit log; it verifies everything again and writes nothing unless all of it holds."""
    certificate = Path(report.certificate)
    audit_log = certificate.parent / "audit-log.cbor"
    trail = ("--audit-log", str(audit_log)) if audit_log.exists() else ()
    empirical = [arg for path in audits for arg in ("--audit", str(path))]
    written = json.loads(run_command("report", hermetic_argv(
        "report", str(certificate), "--root", state.root, "--measurements", state.measurements,
        "--sealed", str(sealed), "--spec", str(out_dir / "job.toml"), "--ledger", str(state.ledger_dir),
        *trail, *empirical, "--out", str(out_dir / "report"), "--json",
    ), logs))
    report.compliance_report = str(written["html"])
    say(f"compliance report (`hermetic report`): {written['html']} and report.pdf, from the verified "
        "certificate, the dataset's budget ledger and the audit trail"
        + (", with the empirical audit" if audits else ""))


def _plain_decrypt_as(identity: AwsCredentials, kms_url: str, sealed: Path) -> str:
    from enclave.sealed.stream import read_header

    with sealed.open("rb") as fh:
        header = read_header(fh)
    try:
        kms_client(identity, kms_url).decrypt(
            CiphertextBlob=header.encrypted_data_key,
            EncryptionContext=dict(header.encryption_context),
        )
    except ClientError as err:
        return str(err.response.get("Error", {}).get("Code", "ClientError"))
    return "allowed"


def _plaintext_leaks(dataset: Path, traffic: bytes, samples: int = 200) -> int:
    """How many distinctive 48-byte windows of the raw images appear in `traffic`."""
    import gzip

    with gzip.open(dataset, "rb") as fh:
        raw = fh.read()
    windows = []
    step = max(1, len(raw) // (samples * 40))
    for offset in range(16, len(raw) - 48, step):
        window = raw[offset : offset + 48]
        if len(set(window)) >= 24:  # skip blank background: it is not distinctive
            windows.append(window)
        if len(windows) == samples:
            break
    return sum(1 for w in windows if w in traffic)


def _modified_enclave_copy(run_dir: Path) -> Path:
    """A copy of the enclave package with one changed byte: a different image."""
    import enclave

    src = Path(enclave.__file__).parent
    dst = run_dir / "modified-enclave"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
    with (dst / "runtime.py").open("a") as fh:
        fh.write("# modified\n")
    return dst


def _parent_run(
    state: ApplianceState,
    name: str,
    control: str,
    relay: str,
    dataset_id: str,
    sealed: Path,
    spec: Path,
    run_dir: Path,
    logs: Path,
) -> dict[str, Any]:
    """`hermetic parent run` as the appliance's parent role, with every byte it moves tapped."""
    parent = state.credentials(PARENT)
    target = state.kms_target()
    env: dict[str, str | None] = {**CLEAN_ENV, "AWS_ACCESS_KEY_ID": parent.access_key_id,
                                  "AWS_SECRET_ACCESS_KEY": parent.secret_access_key,
                                  "AWS_REGION": state.region, "AWS_DEFAULT_REGION": state.region}
    try:
        out = run_command(f"parent-{name}", hermetic_argv(
            "parent", "run", "--enclave", control, "--kms-relay", relay, "--kms-target", target,
            "--allow", target, "--dataset", f"{dataset_id}={sealed}", "--region", state.region,
            "--kms-endpoint", state.kms_endpoint, "--spec", str(spec), "--out", str(run_dir / f"{name}-out"),
            "--json", "--tap", str(run_dir / f"{name}.tap"),
        ), logs, env=env)
        return dict(json.loads(out))
    except HermeticError as err:
        return {"status": "error", "error": str(err)}


def _modified_enclave_job(
    state: ApplianceState,
    run_dir: Path,
    logs: Path,
    services: list[Service],
    dataset_id: str,
    sealed: Path,
    spec: Path,
    measure_dir: Path,
) -> dict[str, Any]:
    """A one-session mock enclave running a modified copy of the code, against the appliance's KMS."""
    control = f"unix://{run_dir / 'modified.sock'}"
    relay = f"unix://{run_dir / 'modified-kms.sock'}"
    enclave = Service("enclave-modified", hermetic_argv(
        "mock-enclave", "run", "--state", state.state_dir, "--listen", control, "--kms-relay", relay,
        "--sessions", "1", "--measure-dir", str(measure_dir),
    ), logs, env=CLEAN_ENV)
    services.append(enclave)
    try:
        enclave.wait_ready()
        return _parent_run(state, "enclave-modified", control, relay, dataset_id, sealed, spec, run_dir, logs)
    finally:
        enclave.stop()
