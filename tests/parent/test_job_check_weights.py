"""Initial weights on the host: `hermetic model params` names the tensors, `hermetic job check --weights`
checks a file with the enclave's reader, and the CLI streams it first or refuses a file the spec does not name."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save

from enclave.errors import ConfigError
from enclave.sealed.format import SealedHeader
from enclave.sealed.stream import read_header
from enclave.training.jobmodel import job_model
from enclave.training.spec import JobSpec
from enclave.transport.messages import WEIGHTS_STREAM
from parent.cli import main
from parent.job_check import check_job, weights_streams
from parent.model_out import build_module, parameter_list
from parent.sources import open_source
from tests.parent.test_job_check import inline_spec, sealed

LAYERS = '[{ type = "flatten" }, { type = "linear", out = 8 }, { type = "tanh" }, { type = "linear" }]'
SHAPES = {"1.weight": (8, 784), "1.bias": (8,), "3.weight": (10, 8), "3.bias": (10,)}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sealed(tmp_path_factory.mktemp("weights"))


def weights(tmp_path: Path, shapes: dict[str, tuple[int, ...]] = SHAPES, name: str = "w.safetensors") -> Path:
    path = tmp_path / name
    path.write_bytes(save({k: torch.full(s, 0.5) for k, s in shapes.items()}))
    return path


def naming(tmp_path: Path, file: Path | None, name: str = "job.toml") -> Path:
    spec = inline_spec(tmp_path, LAYERS, name=name)
    if file is not None:
        sha = hashlib.sha256(file.read_bytes()).hexdigest()
        spec.write_text(spec.read_text().replace(f"layers = {LAYERS}", f'layers = {LAYERS}\nweights_sha256 = "{sha}"'))
    return spec


def test_model_params_lists_what_the_trainer_builds(data: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    spec = naming(tmp_path, None)
    listed = parameter_list(spec, str(data))
    parsed = JobSpec.from_toml(spec.read_text())
    built = build_module(job_model(parsed, _header(data)))
    assert dict(listed.shapes) == SHAPES == {k: tuple(v.shape) for k, v in built.state_dict().items()}
    assert listed.parameters == 8 * 784 + 8 + 80 + 10 and listed.model_spec_sha256 == parsed.model_sha256

    assert main(["model", "params", str(spec), "--sealed", str(data), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record == {"model_spec_sha256": parsed.model_sha256, "parameters": listed.parameters,
                      "tensors": [{"name": k, "shape": list(v)} for k, v in SHAPES.items()]}
    assert main(["model", "params", str(spec), "--sealed", str(data)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "1.weight  [8, 784]" and out[-1].startswith("4 tensors, 6370 parameters (model ")


def test_model_params_refuses_a_model_that_does_not_fit_in_one_line(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = inline_spec(tmp_path, '[{ type = "reshape", shape = [1, 32, 32] }, { type = "linear" }]')
    assert main(["model", "params", str(spec), "--sealed", str(data)]) == 1
    err = capsys.readouterr().err.strip()
    assert "model.layers[0] (reshape)" in err and len(err.splitlines()) == 1


def test_a_file_of_the_listed_tensors_passes_the_job_check(data: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    file = weights(tmp_path)
    spec = naming(tmp_path, file)
    assert check_job(spec, [data], weights_path=file).ok
    assert main(["job", "check", str(spec), "--sealed", str(data), "--weights", str(file), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True


@pytest.mark.parametrize(
    ("shapes", "message"),
    [
        ({**SHAPES, "3.weight": (8, 10)}, "tensor '3.weight' is [8, 10] in the weights file, the model's is [10, 8]"),
        ({k: v for k, v in SHAPES.items() if k != "1.bias"}, "the weights file lacks tensor '1.bias'"),
        ({**SHAPES, "head": (1,)}, "holds tensor 'head', which the model does not have"),
    ],
)
def test_the_job_check_names_the_first_mismatch_as_the_enclave_does(
    data: Path, tmp_path: Path, shapes: dict[str, tuple[int, ...]], message: str
) -> None:
    file = weights(tmp_path, shapes)
    result = check_job(naming(tmp_path, file), [data], weights_path=file)
    assert [(p.where, p.message) for p in result.problems] == [(str(file), result.problems[0].message)]
    assert message in result.problems[0].message


def test_the_job_check_refuses_a_file_of_another_hash_or_none_named(data: Path, tmp_path: Path) -> None:
    named, other = weights(tmp_path), weights(tmp_path, {**SHAPES, "extra": (1,)}, name="other.safetensors")
    result = check_job(naming(tmp_path, named), [data], weights_path=other)
    assert [(p.where, p.message) for p in result.problems] == [
        (str(other), "the weights file does not hash to the spec's model.weights_sha256")]
    result = check_job(naming(tmp_path, None, name="plain.toml"), [data], weights_path=named)
    assert [p.message for p in result.problems] == [
        "a weights file was given, but the spec names no initial weights (model.weights_sha256)"]
    result = check_job(naming(tmp_path, named, name="unchecked.toml"), [data])
    assert [(p.where, p.message) for p in result.problems] == [
        ("model.weights_sha256", "names initial weights: give their file with --weights (train and parent run need "
                                 "it too)")]
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x03" + bytes(7) + b"{}")
    result = check_job(naming(tmp_path, bad, name="bad.toml"), [data], weights_path=bad)
    assert [(p.where, p.message) for p in result.problems] == [
        (str(bad), "the weights file's header of 3 bytes runs past the end of the file")]


def test_the_weights_stream_goes_first_only_when_the_spec_names_it(tmp_path: Path) -> None:
    file = weights(tmp_path)
    named = JobSpec.from_toml(naming(tmp_path, file).read_text())
    plain = JobSpec.from_toml(naming(tmp_path, None, name="plain.toml").read_text())
    assert weights_streams(named, file) == [(WEIGHTS_STREAM, str(file))]
    assert weights_streams(plain, None) == [] and weights_streams(None, file) == [(WEIGHTS_STREAM, str(file))]
    with pytest.raises(ConfigError, match="give their file with --weights"):
        weights_streams(named, None)
    with pytest.raises(ConfigError, match="--weights was given, but the spec names no initial weights"):
        weights_streams(plain, file)


def _header(path: Path) -> SealedHeader:
    with open_source(str(path)) as source:
        return read_header(source)
