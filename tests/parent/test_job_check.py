"""`hermetic job check` and parent.job_check: a job against sealed headers, offline."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from enclave.sealed.format import CHECKPOINT_PAYLOAD, SealedHeader, build_checkpoint_context
from enclave.sealed.stream import read_header, seal_stream
from enclave.training.check import check_job as enclave_check_job
from enclave.training.spec import JobSpec
from parent.cli import main
from parent.job_check import JobCheck, check_job, in_spec_order
from parent.seal import seal_dataset
from parent.sources import open_source
from tests.support.checkpoints import TAG

REPO = Path(__file__).resolve().parents[2]
KEY_ARN = "arn:aws:kms:us-east-1:111122223333:key/job-check"


class StubKms:
    def encrypt(self, **kwargs: object) -> dict:
        return {"CiphertextBlob": b"blob", "KeyId": KEY_ARN}


def spec_text(*, model: str = "tanh_cnn", data: str = "", privacy: str = "noise_multiplier = 1.1") -> str:
    return f"""
[job]
name = "check"
[model]
name = "{model}"
[data]
{data}
[optimizer]
name = "sgd"
lr = 0.1
[privacy]
expected_batch_size = 100
steps = 200
max_grad_norm = 1.0
delta = 1e-5
{privacy}
[checkpoint]
key_id = "alias/model"
"""


def write_spec(tmp_path: Path, name: str = "job.toml", **kw: str) -> Path:
    path = tmp_path / name
    path.write_text(spec_text(**kw), encoding="utf-8")
    return path


def sealed(tmp_path: Path, name: str = "train", *, shape: tuple[int, ...] = (28, 28), records: int = 10_000,
           max_epsilon: float = 3.0, columns: tuple[str, str] = ("image", "label")) -> Path:
    rng = np.random.default_rng(1)
    src = tmp_path / f"{name}.npz"
    np.savez(src, **{columns[0]: rng.integers(0, 256, (records, *shape), dtype=np.uint8),
                     columns[1]: rng.integers(0, 10, records, dtype=np.uint8)})
    out = tmp_path / f"{name}.sealed"
    seal_dataset(src, out, key_id=KEY_ARN, kms_client=StubKms(), max_epsilon=max_epsilon, delta=1e-5,
                 owner="owner", dataset_id=f"{name}-v1", ledger="s3://ledgers/job-check?owner=123456789012",
                 model_owner_keys=["alias/model"])
    return out


def test_a_job_that_fits_its_data_is_ok_with_its_plan(tmp_path: Path) -> None:
    data = sealed(tmp_path)
    result = check_job(write_spec(tmp_path), [data])
    assert result.ok and result.problems == ()
    plan = result.planned[str(data)]
    assert (plan.records, plan.steps, plan.sampling_rate, plan.noise_multiplier) == (10_000, 200, 0.01, 1.1)
    assert plan.max_epsilon == 3.0 and 0 < plan.planned_epsilon <= 3.0
    assert result.spec is not None and result.spec.model.name == "tanh_cnn"


def test_every_problem_is_listed_and_named(tmp_path: Path) -> None:
    data = sealed(tmp_path, shape=(8, 8), max_epsilon=1.0, columns=("image", "target"))
    result = check_job(write_spec(tmp_path, privacy="noise_multiplier = 0.5"), [data])
    assert not result.ok
    assert [(p.where, p.message) for p in result.problems] == [
        (f"{data}: data.features", "column 'image' holds 64 values per record, model 'tanh_cnn' takes 784 (1x28x28)"),
        (f"{data}: data.label", "column 'label' is not in the dataset (columns: 'image', 'target')"),
        (f"{data}: privacy.noise_multiplier", result.problems[2].message),
    ]
    assert result.problems[2].message.endswith("exceeds the dataset's budget 1")
    assert str(data) in result.planned  # the over-budget run is still planned, for the report


def test_the_host_check_is_the_enclaves(tmp_path: Path) -> None:
    data = sealed(tmp_path, shape=(784,), max_epsilon=1.0, columns=("pixels", "label"))
    spec_path = write_spec(tmp_path, model="mlp", privacy="noise_multiplier = 0.5", data='train = "other"')
    result = check_job(spec_path, [data])
    with open_source(str(data)) as source:
        header = read_header(source)
    enclave = enclave_check_job(JobSpec.from_toml(spec_path.read_text()), header)
    assert len(enclave) == 3
    assert [(p.where, p.message, p.code) for p in result.problems] == [
        (f"{data}: {p.where}", p.message, p.code) for p in enclave]


def test_spec_problems_are_named_by_the_spec_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("[job]\nname = 'x'\n[model]\nname = 'mlp'\n", encoding="utf-8")
    result = check_job(broken, [])
    assert [p.where for p in result.problems] == [str(broken)]
    assert "job spec lacks the [optimizer] section" in result.problems[0].message
    missing = check_job(tmp_path / "missing.toml")
    assert missing.problems[0].message.startswith("cannot read job spec")
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe")
    assert check_job(binary).problems[0].message == "job spec is not UTF-8 text"


def test_an_unknown_model_is_a_problem_even_without_data(tmp_path: Path) -> None:
    result = check_job(write_spec(tmp_path, model="resnet"))
    assert [p.where for p in result.problems] == ["model.name"]
    assert result.problems[0].message.startswith("unknown model 'resnet'; registered models: ")
    assert check_job(write_spec(tmp_path, name="ok.toml")).ok


def test_unreadable_sealed_files_are_named_and_the_rest_still_checked(tmp_path: Path) -> None:
    junk = tmp_path / "junk.sealed"
    junk.write_bytes(b"PK\x03\x04 not sealed")
    good = sealed(tmp_path)
    result = check_job(write_spec(tmp_path), [tmp_path / "missing.sealed", junk, good])
    assert [p.where for p in result.problems] == [str(tmp_path / "missing.sealed"), str(junk)]
    assert "does not exist" in result.problems[0].message and "bad magic" in result.problems[1].message
    assert list(result.planned) == [str(good)]


def test_a_job_trains_on_one_sealed_dataset(tmp_path: Path) -> None:
    first, second = sealed(tmp_path, "a"), sealed(tmp_path, "b")
    result = check_job(write_spec(tmp_path), [first, second])
    assert [(p.where, p.message) for p in result.problems] == [
        ("data.train", "names no dataset, and 2 sealed datasets were given: a job on several lists them all in data.train")]
    named = check_job(write_spec(tmp_path, name="named.toml", data='train = "b-v1"'), [first, second])
    assert [(p.where, p.message) for p in named.problems] == [
        (f"{first}: data.train", "names dataset 'b-v1', the sealed file is 'a-v1'")]


def test_a_checkpoint_is_not_a_dataset(tmp_path: Path) -> None:
    header = SealedHeader(
        key_id="alias/m", encrypted_data_key=b"b", payload=CHECKPOINT_PAYLOAD,
        encryption_context=build_checkpoint_context(job_id="j", spec_sha256="ab" * 32, step=1, auth_tag=TAG),
    )
    ckpt = tmp_path / "step1.ckpt"
    with ckpt.open("wb") as out:
        seal_stream([b"state"], header, bytes(32), out)
    result = check_job(write_spec(tmp_path), [ckpt])
    assert [(p.where, p.message) for p in result.problems] == [
        (f"{ckpt}: sealed file", "holds a 'hermetic-checkpoint-v1' payload, not a dataset")]


def test_json_plan_has_no_infinity() -> None:
    from enclave.training.budget import PlannedRun

    plan = PlannedRun(records=1, sampling_rate=1.0, noise_multiplier=0.01, steps=9, delta=1e-5, accountant="prv",
                      planned_epsilon=float("inf"), max_epsilon=3.0, budget_delta=1e-5, max_steps_within_budget=0)
    record = JobCheck((), {"f": plan}).to_json()
    assert record["planned"]["f"]["planned_epsilon"] is None and record["planned"]["f"]["steps"] == 9
    json.dumps(record, allow_nan=False)


# -- the command line --------------------------------------------------------------------


def test_cli_json_shape_and_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = sealed(tmp_path)
    assert main(["job", "check", str(write_spec(tmp_path)), "--sealed", str(data), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert set(record) == {"ok", "problems", "planned", "ledger"}
    assert record["ok"] is True and record["problems"] == []
    assert set(record["planned"][str(data)]) == {
        "records", "sampling_rate", "noise_multiplier", "steps", "delta", "accountant", "planned_epsilon",
        "max_epsilon", "budget_delta", "max_steps_within_budget"}

    spec = write_spec(tmp_path, name="wide.toml", data='label = "class"')
    assert main(["job", "check", str(spec), "--sealed", str(data), "--json"]) == 1
    record = json.loads(capsys.readouterr().out)
    assert record["ok"] is False
    assert record["problems"] == [{"where": f"{data}: data.label",
                                   "message": "column 'class' is not in the dataset (columns: 'image', 'label')"}]


def test_cli_human_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = sealed(tmp_path)
    assert main(["job", "check", str(write_spec(tmp_path)), "--sealed", str(data)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"{data}: 200 steps at q=0.01, sigma=1.1: epsilon ") and out[-1] == "job check: ok"
    spec = write_spec(tmp_path, name="bad.toml", model="nope", data='features = "pixels"')
    assert main(["job", "check", str(spec), "--sealed", str(data)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == "job check: 2 problems"
    assert out[-3].startswith("problem: model.name: unknown model 'nope'")
    assert out[-2] == f"problem: {data}: data.features: column 'pixels' is not in the dataset (columns: 'image', 'label')"


def test_the_shipped_job_specs_pass_on_their_own(capsys: pytest.CaptureFixture[str]) -> None:
    for spec in sorted((REPO / "jobs").glob("*.toml")):
        assert main(["job", "check", str(spec)]) == 0, capsys.readouterr().out


def test_cli_usage_errors_exit_2() -> None:
    for argv in (["job"], ["job", "check"], ["job", "check", "a.toml", "--sealed"]):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2


def test_a_job_on_the_datasets_its_spec_lists_plans_once_over_their_union(tmp_path: Path) -> None:
    first, second = sealed(tmp_path, "a", records=6000), sealed(tmp_path, "b", records=4000, max_epsilon=9.0)
    result = check_job(write_spec(tmp_path, data='train = ["a-v1", "b-v1"]'), [second, first])
    assert result.ok, result.problems
    assert result.planned[str(first)] == result.planned[str(second)]
    plan = result.planned[str(first)]
    assert (plan.records, plan.sampling_rate, plan.max_epsilon) == (10_000, 0.01, 3.0)


def test_a_listed_dataset_without_its_file_is_named(tmp_path: Path) -> None:
    first = sealed(tmp_path, "a")
    result = check_job(write_spec(tmp_path, data='train = ["a-v1", "b-v1"]'), [first])
    assert [(p.where, p.message) for p in result.problems] == [
        ("data.train", "names dataset 'b-v1', which no sealed file given holds")]


def test_streams_follow_the_specs_order() -> None:
    given = [("b-v1", "b.sealed"), ("x-v1", "x.sealed"), ("a-v1", "a.sealed")]
    assert in_spec_order(given, ("a-v1", "b-v1")) == [("a-v1", "a.sealed"), ("b-v1", "b.sealed"),
                                                      ("x-v1", "x.sealed")]
    assert in_spec_order(given, ()) == given


def inline_spec(tmp_path: Path, layers: str, name: str = "inline.toml") -> Path:
    text = spec_text().replace('[model]\nname = "tanh_cnn"', f"[model]\nformat = 1\nlayers = {layers}")
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_an_inline_model_is_checked_against_the_sealed_schema(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """16x16x3 images (768 uint8 values each, shaped in the field metadata): a conv2d model
    takes them as [3, 16, 16]; one built for 28x28 is refused under `model`, offline."""
    data = sealed(tmp_path, "rgb", shape=(16, 16, 3))
    fits = inline_spec(tmp_path, '[{ type = "conv2d", out_channels = 8, kernel = 3 }, { type = "relu" }, '
                                 '{ type = "flatten" }, { type = "linear" }]')
    assert check_job(fits, [data]).ok
    wrong = inline_spec(tmp_path, '[{ type = "reshape", shape = [1, 28, 28] }, { type = "flatten" }, '
                                  '{ type = "linear" }]', name="wrong.toml")
    result = check_job(wrong, [data])
    assert [p.where for p in result.problems] == [f"{data}: model"]
    assert result.problems[0].message.startswith("model.layers[0] (reshape): ")
    assert "column 'image' gives 16x16x3 records as input [3, 16, 16], column 'label' 10 classes" in \
        result.problems[0].message
    assert main(["job", "check", str(wrong), "--sealed", str(data)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[-2].startswith(f"problem: {data}: model: model.layers[0] (reshape): ") and out[-1] == \
        "job check: 1 problem"
    # The enclave's own check says the same.
    header = read_header(open_source(str(data)))
    assert [(p.where, p.message) for p in enclave_check_job(JobSpec.from_toml(wrong.read_text()), header)] == [
        ("model", result.problems[0].message)]
