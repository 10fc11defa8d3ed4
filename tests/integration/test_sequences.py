"""Token-sequence jobs end to end: a CSV of token ids sealed with --sequence, a transformer block trained on them.

Reviews of 3 to 12 tokens from a vocabulary of 40, id 0 the padding; a review is
"good" when it holds more "good" tokens (ids 1..9) than "bad" ones (ids 10..18), as
`hermetic seal reviews.csv --sequence tokens:40:12:0 --label sentiment --classes bad,good`
would seal it. The model is written only in the declarative format (graph form).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from enclave.sealed.format import SealedHeader
from enclave.sealed.stream import read_header
from enclave.training.check import check_job
from enclave.training.jobmodel import job_model
from enclave.training.spec import JobSpec
from enclave.training.tabular import TabularRecordsUnusable
from enclave.transport.messages import PUBLIC_PREFIX
from parent.checkpoints import decrypt_checkpoint
from parent.datasets.schema import declaration_from_flags
from parent.job_check import sealed_public_schema
from parent.model_out import export_onnx, load_model_dir, predict, sealed_arrow_schema, write_model_dir
from parent.public_data import load_public_dataset
from parent.sources import BytesSource, open_source
from tests.integration.conftest import MODEL_OWNER, DataPath, kms_client
from tests.integration.test_tabular import _seal
from tests.integration.test_training import _train_in_process
from tests.support.specs import mlp_spec

VOCAB, MAX_LEN, STEPS = 40, 12, 150


def _reviews(rng: np.random.Generator, count: int) -> str:
    rows = ["tokens,sentiment"]
    for _ in range(count):
        ids = rng.integers(1, VOCAB, size=int(rng.integers(3, MAX_LEN + 1)))
        good, bad = int(((ids >= 1) & (ids <= 9)).sum()), int(((ids >= 10) & (ids <= 18)).sum())
        rows.append(f"{' '.join(str(i) for i in ids)},{'good' if good > bad else 'bad'}")
    return "\n".join(rows) + "\n"


def _model(vocab: int = VOCAB, pad: int = 0) -> str:
    return f"""format = 1
output = "logits"
graph = [
  {{ name = "mask", type = "padding_mask", pad = {pad}, inputs = ["input"] }},
  {{ name = "emb", type = "embedding", vocab = {vocab}, dim = 16, inputs = ["input"] }},
  {{ name = "enc", type = "transformer_encoder", dim = 16, heads = 2, ff_dim = 32, inputs = ["emb", "mask"] }},
  {{ name = "pool", type = "mean_pool", inputs = ["enc", "mask"] }},
  {{ name = "logits", type = "linear", inputs = ["pool"] }},
]"""


def _spec(model_key: str, model: str) -> str:
    return mlp_spec(key_id=model_key, name="reviews", model=model, data='features = "tokens"\nlabel = "sentiment"',
                    lr=1.0, batch=200, steps=STEPS, noise=1.0,
                    extra='[eval]\npublic = "holdout"\nevery_steps = 50')


DECLARATION = declaration_from_flags(sequence=[f"tokens:{VOCAB}:{MAX_LEN}:0"], label="sentiment", classes="bad,good")


def _header(path: Path) -> SealedHeader:
    with open_source(str(path)) as source:
        return read_header(source)


@pytest.fixture
def sealed_reviews(data_path: DataPath, tmp_path: Path) -> Path:
    return _seal(data_path, tmp_path, "reviews", DECLARATION, _reviews(np.random.default_rng(5), 6000))


def test_a_transformer_trains_on_a_token_sequence_dataset_and_releases_accuracy(
    data_path: DataPath, tmp_path: Path, sealed_reviews: Path
) -> None:
    holdout = tmp_path / "holdout.csv"
    holdout.write_text(_reviews(np.random.default_rng(6), 500))
    public = load_public_dataset("holdout", holdout, schema=sealed_public_schema(str(sealed_reviews)))
    spec = _spec(data_path.model_key_id, _model())
    header = _header(sealed_reviews)
    assert check_job(JobSpec.from_toml(spec), header) == []
    job = job_model(JobSpec.from_toml(spec), header)
    assert job.input.shape == (MAX_LEN,) and job.input.ids and job.num_classes == 2

    streams = [("reviews-v1", str(sealed_reviews)), (PUBLIC_PREFIX + "holdout", BytesSource(public.ipc))]
    body = _train_in_process(data_path, "reviews", streams, spec, tmp_path / "out")
    assert body.steps == STEPS and body.model_spec_sha256 == JobSpec.from_toml(spec).model_sha256
    final = {m.name: m.value for m in body.metrics if m.step == STEPS}
    assert set(final) == {"accuracy/holdout", "auc/holdout"}
    # Counting two token groups: 0.88-0.93 in four runs of fresh enclave seeds; about 0.6 is the majority class.
    assert final["accuracy/holdout"] > 0.8, body.metrics

    # Out of the enclave: the model predicts the holdout CSV on the host with the released figures.
    checkpoint = tmp_path / "out" / "checkpoints" / f"step-{STEPS:08d}.sealed"
    _, state = decrypt_checkpoint(checkpoint, kms_client=kms_client(data_path.emulator.url, MODEL_OWNER))
    write_model_dir(state, spec, sealed_arrow_schema(str(sealed_reviews)), tmp_path / "model")
    model = load_model_dir(tmp_path / "model")
    assert model.card.to_json()["input"]["kind"] == "sequence"
    assert model.card.to_json()["input"]["columns"] == [
        {"name": "tokens", "kind": "sequence", "vocab_size": VOCAB, "max_len": MAX_LEN, "pad_id": 0}]
    prediction = predict(model, holdout)
    assert prediction.rows == 500
    for metric, value in prediction.metrics:
        assert abs(value - final[f"{metric}/holdout"]) <= 1e-9, (metric, value, final)


def test_the_transformer_exports_to_onnx(data_path: DataPath, tmp_path: Path, sealed_reviews: Path) -> None:
    onnx = pytest.importorskip("onnx")
    from onnx.reference import ReferenceEvaluator

    spec = _spec(data_path.model_key_id, _model()).replace('[eval]\npublic = "holdout"\nevery_steps = 50', "")
    body = _train_in_process(data_path, "reviews", [("reviews-v1", str(sealed_reviews))], spec, tmp_path / "out")
    checkpoint = tmp_path / "out" / "checkpoints" / f"step-{body.steps:08d}.sealed"
    _, state = decrypt_checkpoint(checkpoint, kms_client=kms_client(data_path.emulator.url, MODEL_OWNER))
    write_model_dir(state, spec, sealed_arrow_schema(str(sealed_reviews)), tmp_path / "m")
    model = load_model_dir(tmp_path / "m")
    graph = onnx.load(str(export_onnx(model, tmp_path / "model.onnx")))
    # Padded positions included: the mask must carry through the exported graph.
    tokens = torch.tensor([[3, 7, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]])
    (got,) = ReferenceEvaluator(graph).run(None, {"input": tokens.numpy()})
    with torch.no_grad():
        expected = model.module(tokens).numpy()
    assert np.allclose(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("model", "message"), [
    (_model(vocab=30), "model.graph[1] 'emb' (embedding): vocab is 30 but the ids of column 'tokens' reach 39"),
    (_model(pad=3), "model.graph[0] 'mask' (padding_mask): pad is 3 but column 'tokens' is padded with 0"),
])
def test_a_model_that_misreads_the_sequence_is_refused_before_any_key(
    data_path: DataPath, sealed_reviews: Path, model: str, message: str
) -> None:
    header = _header(sealed_reviews)
    problems = check_job(JobSpec.from_toml(_spec(data_path.model_key_id, model)), header)
    assert [(p.where, p.message) for p in problems] == [("model", message)]


def test_a_preset_on_a_sequence_column_is_refused(data_path: DataPath, sealed_reviews: Path) -> None:
    header = _header(sealed_reviews)
    problems = check_job(JobSpec.from_toml(_spec(data_path.model_key_id, 'name = "mlp"')), header)
    assert [p.where for p in problems] == ["model.name"]
    assert "a sequence job describes its model inline" in problems[0].message


def test_token_ids_outside_the_vocabulary_give_one_fixed_error(data_path: DataPath, sealed_reviews: Path) -> None:
    # A defect the sealer rules out: the message must not depend on the ids.
    header = _header(sealed_reviews)
    layout = job_model(JobSpec.from_toml(_spec(data_path.model_key_id, _model())), header).tabular
    assert layout is not None
    for bad in (VOCAB, 10**6, -1):
        ids = np.zeros((2, MAX_LEN), dtype=np.int32)
        ids[1, 0] = bad
        table = pa.table({"tokens": pa.FixedSizeListArray.from_arrays(pa.array(ids.reshape(-1)), MAX_LEN)})
        with pytest.raises(TabularRecordsUnusable) as caught:
            layout.assemble([table])
        assert str(caught.value) == "a token id lies outside the declared vocabulary"
    torch.testing.assert_close(layout.assemble([pa.table({"tokens": pa.FixedSizeListArray.from_arrays(
        pa.array(np.arange(2 * MAX_LEN, dtype=np.int32) % VOCAB), MAX_LEN)})]),
        torch.arange(2 * MAX_LEN).reshape(2, MAX_LEN) % VOCAB)
