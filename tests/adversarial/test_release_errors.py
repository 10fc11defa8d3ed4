"""Attack: probe the private data through the errors and logs of a failing job.

Before any data key is used, an error's text may only be a function of public inputs.
Once the enclave holds a data key, every failure is reported as one constant Error,
and the enclave's log (the parent reads its console on Nitro) says only the
exception's class and a fixed text: no message, no traceback, no value.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from enclave.egress import EgressGate
from enclave.errors import DatasetError
from enclave.runtime import OPENED_FAILURE, OPENED_FAILURE_CODE
from enclave.training.trainer import TrainingInputs
from enclave.transport.messages import AuditEvent, Error, encode_payload
from parent.local.mock_nsm import MockNsm
from parent.seal import seal_dataset
from tests.enclave.test_runtime import DATA_KEY, KEY_ARN, SETUP, TRAIN, StubKms, run_session, stream
from tests.support.ledgers import MEMORY_LOCATION

ROWS = 300


def _seal(tmp_path: Path, name: str, labels: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> bytes:
    """A sealed file as a careless or hostile sealer would make it: the owner's label check skipped."""
    rng = np.random.default_rng(11)
    src = tmp_path / f"{name}.npz"
    np.savez(src, image=rng.integers(0, 256, (ROWS, 784), dtype=np.uint8), label=labels)
    with monkeypatch.context() as m:
        m.setattr("parent.datasets.schema.check_batch", lambda *_: None)
        m.setattr("parent.seal.secrets.token_bytes", lambda _n: DATA_KEY)
        seal_dataset(src, tmp_path / f"{name}.sealed", key_id=KEY_ARN, kms_client=StubKms(), max_epsilon=3.0,
                     delta=1e-5, owner="owner", dataset_id=TRAIN, num_classes=10, ledger=MEMORY_LOCATION, model_owner_keys=[KEY_ARN])
    return (tmp_path / f"{name}.sealed").read_bytes()


def _labels(bad: int, every: int) -> np.ndarray:
    labels = np.random.default_rng(2).integers(0, 10, ROWS).astype(np.uint8)
    labels[::every] = bad
    return labels


def _failure(replies: list[Any]) -> Error:
    *said, last = replies
    assert isinstance(last, Error), replies
    assert [type(m) for m in said[1:3]] == [AuditEvent, AuditEvent]  # the data was opened first
    return last


def _enclave_log(caplog: pytest.LogCaptureFixture) -> str:
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    return "\n".join(formatter.format(r) for r in caplog.records if r.name.startswith("enclave"))


def test_failures_after_opening_are_one_constant_error_and_log_no_value(
    nsm: MockNsm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="enclave")
    good = _seal(tmp_path, "good", _labels(3, 7), monkeypatch)
    secret_row = np.random.default_rng(11).integers(0, 256, (ROWS, 784), dtype=np.uint8)[0].tobytes().hex()[:48]

    def quoting_bug(inputs: TrainingInputs, gate: EgressGate) -> Any:
        # A bug whose message quotes a record.
        row = inputs.train[0].opened.table.column("image")[0].as_py()
        raise ValueError(f"cannot use record {bytes(row).hex()[:48]}")

    def schema_probe(inputs: TrainingInputs, gate: EgressGate) -> Any:
        # A typed error naming a column the public header never showed.
        raise DatasetError("dataset lacks column 'income'")

    errors = [
        # Two sealed files whose contents break training, with different private values.
        _failure(run_session(nsm, [*SETUP, *stream(0, TRAIN, _seal(tmp_path, "a", _labels(200, 5), monkeypatch))])),
        _failure(run_session(nsm, [*SETUP, *stream(0, TRAIN, _seal(tmp_path, "b", _labels(13, 3), monkeypatch))])),
        _failure(run_session(nsm, [*SETUP, *stream(0, TRAIN, good)], training_loop=quoting_bug)),
        _failure(run_session(nsm, [*SETUP, *stream(0, TRAIN, good)], training_loop=schema_probe)),
    ]
    wire = {encode_payload(e) for e in errors}
    assert wire == {encode_payload(Error(code=OPENED_FAILURE_CODE, message=OPENED_FAILURE))}, errors
    log = _enclave_log(caplog)
    assert secret_row not in log
    for private in ("out of bounds", "Target 200", "Target 13", "income", "cannot use record", "Traceback"):
        assert private not in log, private
    # The log still says that, and where, it failed.
    assert "ValueError" in log and "after the data was opened" in log


def test_failures_before_any_key_keep_their_public_reason(
    nsm: MockNsm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = _seal(tmp_path, "good", _labels(3, 7), monkeypatch)
    kms = StubKms()
    replies = run_session(nsm, [*SETUP, *stream(0, "other-v1", good)], kms=kms)
    assert isinstance(replies[-1], Error) and replies[-1].code == "protocol"
    assert "JobStart sends" in replies[-1].message or "expected" in replies[-1].message
    assert kms.calls == []


def test_a_data_key_is_used_when_the_error_turns_constant(nsm: MockNsm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A corrupted chunk is found only with the key in hand: constant too, whatever was damaged."""
    good = bytearray(_seal(tmp_path, "good", _labels(3, 7), monkeypatch))
    late = bytearray(good)
    late[-40] ^= 1
    early = bytearray(good)
    early[len(good) // 3] ^= 1
    errors = [
        run_session(nsm, [*SETUP, *stream(0, TRAIN, bytes(late))])[-1],
        run_session(nsm, [*SETUP, *stream(0, TRAIN, bytes(early))])[-1],
    ]
    assert errors == [Error(code=OPENED_FAILURE_CODE, message=OPENED_FAILURE)] * 2
