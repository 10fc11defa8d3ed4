"""`hermetic train`: what it refuses before it reaches the enclave (whole jobs: tests/integration)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from parent.cli import main
from tests.support.specs import mlp_spec

SPEC = mlp_spec(key_id="alias/hermetic-model-owner", name="t", steps=1, batch=10)


@pytest.fixture()
def spec(tmp_path: Path) -> Path:
    path = tmp_path / "job.toml"
    path.write_text(SPEC)
    return path


def test_train_needs_the_local_appliance(spec: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as usage:
        main(["train", str(spec), "--dataset", "d=x.sealed", "--out", str(tmp_path / "o")])
    assert usage.value.code == 2
    assert "hermetic parent run" in capsys.readouterr().err


def test_no_appliance_is_a_one_line_error_and_a_json_verdict(spec: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    sealed = tmp_path / "d.sealed"
    sealed.write_bytes(b"x")
    argv = ["train", str(spec), "--local", str(tmp_path / "none"), "--dataset", f"d={sealed}", "--out",
            str(tmp_path / "o"), "--json"]
    assert main(argv) == 1
    captured = capsys.readouterr()
    verdict = json.loads(captured.out)
    assert verdict["status"] == "error" and verdict["error_type"] == "ApplianceStateError"
    assert "hermetic local up" in captured.err and captured.err.count("\n") == 1


@pytest.mark.parametrize("spec_text, dataset, message", [
    ("[job]\nname = 'x'\n", "d={sealed}", "spec"),
    (SPEC, "d={missing}", "no sealed dataset"),
    (SPEC, "no-equals-sign", "--dataset expects NAME=FILE"),
])
def test_inputs_are_checked_before_the_appliance(tmp_path: Path, spec_text: str, dataset: str, message: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "job.toml"
    spec.write_text(spec_text)
    sealed = tmp_path / "d.sealed"
    sealed.write_bytes(b"x")
    argv = ["train", str(spec), "--local", str(tmp_path / "none"), "--out", str(tmp_path / "o"),
            "--dataset", dataset.format(sealed=sealed, missing=tmp_path / "missing.sealed")]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert message in err and "hermetic local up" not in err


def test_an_enclave_refusal_carries_the_enclave_code(spec: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from parent.commands import train
    from parent.proxy.session import EnclaveError

    def refused(_args: object) -> dict:
        raise EnclaveError("budget", "dataset 'd' has spent epsilon 2 of its 3 (remaining 1)")

    monkeypatch.setattr(train, "_train", refused)
    argv = ["train", str(spec), "--local", str(tmp_path), "--dataset", "d=x.sealed", "--out", str(tmp_path / "o"),
            "--json"]
    assert main(argv) == 1
    verdict = json.loads(capsys.readouterr().out)
    assert verdict["enclave_code"] == "budget" and "remaining 1" in verdict["error"]


def test_repeated_datasets_stream_in_the_specs_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import parent.commands.train as train
    from enclave.errors import ConfigError

    spec = tmp_path / "job.toml"
    spec.write_text(SPEC.replace("[optimizer]", '[data]\ntrain = ["a-v1", "b-v1"]\n[optimizer]'))
    files = {name: tmp_path / f"{name}.sealed" for name in ("a-v1", "b-v1")}
    for path in files.values():
        path.write_bytes(b"x")
    seen: list[list[tuple[str, str]]] = []

    def check(args: object, datasets: list[tuple[str, str]]) -> None:
        seen.append(datasets)
        raise ConfigError("stopped before the enclave")

    monkeypatch.setattr(train, "local_state", lambda *a, **k: None)
    monkeypatch.setattr(train, "_check_job", check)
    argv = ["train", str(spec), "--local", str(tmp_path), "--out", str(tmp_path / "o"),
            "--dataset", f"b-v1={files['b-v1']}", "--dataset", f"a-v1={files['a-v1']}"]
    assert main(argv) == 1
    assert seen == [[("a-v1", str(files["a-v1"])), ("b-v1", str(files["b-v1"]))]]


def test_parent_run_orders_streams_by_the_spec_and_leaves_a_bad_spec_to_the_enclave() -> None:
    from parent.commands.parent_serve import _parsed_spec, _spec_order

    given = [("b-v1", "s3://x/b"), ("a-v1", "s3://x/a")]
    listed = SPEC.replace("[optimizer]", '[data]\ntrain = ["a-v1", "b-v1"]\n[optimizer]')
    assert _spec_order(given, _parsed_spec(listed)) == [("a-v1", "s3://x/a"), ("b-v1", "s3://x/b")]
    assert _spec_order(given, _parsed_spec("[job]\nname = 'x'\n")) == given


WEIGHTS_SPEC = mlp_spec(key_id="alias/hermetic-model-owner", name="t", steps=1, batch=10,
                        model=f'format = 1\nlayers = [{{ type = "linear" }}]\nweights_sha256 = "{"0" * 64}"')


@pytest.mark.parametrize("spec_text, weights, message", [
    (WEIGHTS_SPEC, False, "the spec names initial weights (model.weights_sha256): give their file with --weights"),
    (SPEC, True, "--weights was given, but the spec names no initial weights"),
])
def test_initial_weights_and_the_spec_must_agree_before_anything_runs(
    tmp_path: Path, spec_text: str, weights: bool, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "job.toml"
    spec.write_text(spec_text)
    sealed = tmp_path / "d.sealed"
    sealed.write_bytes(b"x")
    extra = ["--weights", str(tmp_path / "w.safetensors")] if weights else []
    train = ["train", str(spec), "--local", str(tmp_path / "none"), "--out", str(tmp_path / "o"),
             "--dataset", f"d={sealed}", *extra]
    run = ["parent", "run", "--enclave", "unix:///nowhere", "--kms-relay", "unix:///nowhere-kms",
           "--kms-target", "127.0.0.1:1", "--dataset", f"d={sealed}", "--spec", str(spec), *extra]
    for argv in (train, run):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert message in err and "hermetic local up" not in err and err.count("\n") == 1
