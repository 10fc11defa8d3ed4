from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import boto3
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from botocore.exceptions import ClientError

from enclave.errors import ConfigError, DatasetError, KmsError
from enclave.hazmat.ledger_key import LedgerSigningKey
from enclave.sealed.format import check_encryption_context
from enclave.sealed.records import header_schema, iter_record_batches, schema_bytes, schema_sha256, verify_records
from enclave.sealed.stream import iter_plaintext, read_header
from parent.cli import main
from parent.datasets import DatasetReader
from parent.seal import SealResult, derived_dataset_id, seal_dataset

FMNIST = Path("/usr/share/datasets/fashion-mnist")
LEDGER = "s3://owner-ledgers/hermetic?owner=123456789012"
KEY_ARN = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"


class FakeKms:
    """Stands in for AWS KMS Encrypt: an opaque blob naming the data key it wraps."""

    def __init__(self) -> None:
        self.keys: dict[bytes, bytes] = {}
        self.calls: list[dict] = []

    def encrypt(self, **kwargs: object) -> dict:
        self.calls.append(kwargs)
        key = kwargs["Plaintext"]
        assert isinstance(key, bytes)
        blob = b"blob-" + os.urandom(16)
        self.keys[blob] = key
        return {"CiphertextBlob": blob, "KeyId": KEY_ARN}


class BloblessKms:
    def encrypt(self, **kwargs: object) -> dict:
        return {"KeyId": KEY_ARN}


class FailingKms:
    def encrypt(self, **kwargs: object) -> dict:
        raise ClientError({"Error": {"Code": "AccessDeniedException", "Message": "no"}}, "Encrypt")


def write_npz(path: Path, n: int = 300) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    x = rng.integers(0, 256, size=(n, 4, 4), dtype=np.uint8)
    y = rng.integers(0, 10, size=n, dtype=np.int64)
    np.savez(path, x=x, y=y)
    return x, y


def open_sealed(path: Path, kms: FakeKms) -> tuple[object, pa.Table, bytes]:
    with open(path, "rb") as fh:
        header = read_header(fh)
        key = kms.keys[header.encrypted_data_key]
        chunks = list(iter_plaintext(fh, header, key))
    batches = list(iter_record_batches(iter(chunks)))
    return header, pa.Table.from_batches(batches), b"".join(chunks)


def seal(tmp_path: Path, src: Path | DatasetReader, kms: object, **kw: object) -> SealResult:
    args: dict = dict(key_id="alias/owner", kms_client=kms, max_epsilon=3.0, delta=1e-5, owner="St. Example",
                      ledger=LEDGER, model_owner_keys=["arn:aws:kms:us-east-1:777788889999:key/model-owner"])
    args.update(kw)
    return seal_dataset(src, tmp_path / "out.sealed", **args)


def test_seal_and_open_round_trip(tmp_path: Path) -> None:
    src = tmp_path / "patients.npz"
    x, y = write_npz(src)
    kms = FakeKms()
    seen: list[int] = []
    result = seal(tmp_path, src, kms, chunk_size=1024, batch_rows=64, progress=seen.append)

    assert sum(seen) == 300 and max(seen) <= 64
    assert result.out_path == tmp_path / "out.sealed"
    assert result.record_count == 300
    header, table, plaintext = open_sealed(result.out_path, kms)
    # The context KMS bound the key to is exactly the header's.
    key = kms.keys[header.encrypted_data_key]
    assert kms.calls == [
        {"KeyId": "alias/owner", "Plaintext": key, "EncryptionContext": dict(header.encryption_context)}
    ]
    # The ledger key the context names is the one derived from the data key, for this dataset.
    assert header.ledger_location == LEDGER
    assert header.ledger_public_key == LedgerSigningKey(key, result.dataset_id).public_key
    assert header.key_id == KEY_ARN  # the ARN KMS reports, not the alias
    assert header.chunk_size == 1024
    check_encryption_context(
        header,
        {
            "dataset_id": result.dataset_id,
            "owner": "St. Example",
            "max_epsilon": "3.0",
            "delta": "1e-05",
            "record_count": "300",
            "schema_sha256": result.schema_sha256,
            "hermetic:format": "sealed-v1",
        },
    )
    verify_records(header, table.schema, table.num_rows)
    assert result.schema_sha256 == schema_sha256(table.schema)
    # The header carries the public schema the context's hash binds, readable without the key.
    assert header.schema == schema_bytes(table.schema)
    public = header_schema(header)
    assert public.equals(table.schema.remove_metadata(), check_metadata=True)
    assert public.field("x").metadata == {b"hermetic.kind": b"tensor", b"shape": b"4x4"}
    assert np.array_equal(table.column("x").combine_chunks().flatten().to_numpy().reshape(-1, 4, 4), x)
    assert table.column("y").to_pylist() == y.tolist()
    # No digest of the plaintext is returned: nothing invites publishing or comparing one.
    assert hashlib.sha256(plaintext).hexdigest() not in json.dumps(result.to_json())
    assert result.sealed_sha256 == hashlib.sha256(result.out_path.read_bytes()).hexdigest()
    assert dict(result.encryption_context) == dict(header.encryption_context)
    assert sorted(os.listdir(tmp_path)) == ["out.sealed", "patients.npz"]


def test_each_seal_gets_a_fresh_key_and_the_same_derived_id(tmp_path: Path) -> None:
    src = tmp_path / "d.npz"
    write_npz(src, 10)
    kms = FakeKms()
    a = seal(tmp_path, src, kms)
    first = a.out_path.read_bytes()
    b = seal(tmp_path, src, kms)
    assert a.dataset_id == b.dataset_id == derived_dataset_id([src], "St. Example")
    assert a.dataset_id_source == b.dataset_id_source == "derived"
    assert first != b.out_path.read_bytes()
    assert len(set(kms.keys.values())) == 2


def test_derived_dataset_id_follows_the_path_and_owner(tmp_path: Path) -> None:
    paths = {}
    for name in ("train-images-idx3-ubyte.gz", "my data set!.parquet", "!!!.csv"):
        paths[name] = tmp_path / name
        paths[name].write_bytes(b"x")

    def expect(owner: str, *files: Path) -> str:
        where = "\0".join(["hermetic-dataset-id-v1", owner, *(str(f.resolve()) for f in files)])
        return hashlib.sha256(where.encode()).hexdigest()[:8]

    images, table, csv = paths["train-images-idx3-ubyte.gz"], paths["my data set!.parquet"], paths["!!!.csv"]
    assert derived_dataset_id([images], "ann") == f"train-images-idx3-ubyte-{expect('ann', images)}"
    assert derived_dataset_id([table], "ann") == f"my-data-set-{expect('ann', table)}"
    assert derived_dataset_id([csv], "ann") == f"dataset-{expect('ann', csv)}"
    assert derived_dataset_id([images, csv], "ann") == f"train-images-idx3-ubyte-{expect('ann', images, csv)}"
    assert derived_dataset_id([csv], "bob") != derived_dataset_id([csv], "ann")
    # A content hash in a public id would confirm a guess of the data.
    csv.write_bytes(b"other content")
    assert derived_dataset_id([csv], "ann") == f"dataset-{expect('ann', csv)}"
    with pytest.raises(ConfigError):
        derived_dataset_id([], "ann")


def test_a_given_dataset_id_is_reported_as_given(tmp_path: Path) -> None:
    src = tmp_path / "d.npz"
    write_npz(src, 10)
    result = seal_dataset(src, tmp_path / "o.sealed", key_id=KEY_ARN, kms_client=FakeKms(), max_epsilon=1.0,
                          delta=1e-5, owner="o", dataset_id="mine-1", ledger=LEDGER, model_owner_keys=[KEY_ARN])
    assert (result.dataset_id, result.dataset_id_source) == ("mine-1", "given")
    assert result.to_json()["dataset_id_source"] == "given"


@pytest.mark.parametrize(
    "kw",
    [
        {"max_epsilon": 0.0},
        {"max_epsilon": -1.0},
        {"max_epsilon": float("inf")},
        {"max_epsilon": float("nan")},
        {"delta": 0.0},
        {"delta": 1.0},
        {"delta": 1.5},
        {"delta": float("nan")},
        {"owner": ""},
        {"key_id": ""},
        {"dataset_id": "has spaces"},
        {"dataset_id": ""},
        {"chunk_size": 8},
    ],
)
def test_bad_parameters(tmp_path: Path, kw: dict) -> None:
    src = tmp_path / "d.npz"
    write_npz(src, 5)
    kms = FakeKms()
    with pytest.raises(ConfigError):
        seal(tmp_path, src, kms, **kw)
    assert kms.calls == []  # nothing is asked of KMS for a bad request
    assert not (tmp_path / "out.sealed").exists()


def test_kms_failure(tmp_path: Path) -> None:
    src = tmp_path / "d.npz"
    write_npz(src, 5)
    with pytest.raises(KmsError, match="AccessDenied"):
        seal(tmp_path, src, FailingKms())
    with pytest.raises(KmsError, match="no CiphertextBlob"):
        seal(tmp_path, src, BloblessKms())
    assert sorted(os.listdir(tmp_path)) == ["d.npz"]


class WideReader(DatasetReader):
    """A table with more columns than a sealed header's schema can hold."""

    def __init__(self) -> None:
        self._schema = pa.schema([pa.field(f"column_{i:05d}_" + "x" * 40, pa.int8()) for i in range(1000)])

    def schema(self) -> pa.Schema:
        return self._schema

    def count(self) -> int:
        return 0

    def iter_batches(self, batch_rows: int = 8192) -> Iterator[pa.RecordBatch]:
        return iter(())


def test_a_schema_too_large_for_the_header_is_refused_before_kms(tmp_path: Path) -> None:
    kms = FakeKms()
    with pytest.raises(ConfigError, match="schema is .* bytes, a sealed header holds at most 49152"):
        seal(tmp_path, WideReader(), kms, dataset_id="wide")
    assert kms.calls == []


class FlakyReader(DatasetReader):
    """Yields one good batch, then fails (or lies about its count)."""

    def __init__(self, mode: str, existing: Path | None = None) -> None:
        self.mode = mode
        self._schema = pa.schema([pa.field("v", pa.int64())])

    def schema(self) -> pa.Schema:
        return self._schema

    def count(self) -> int:
        return 20

    def iter_batches(self, batch_rows: int = 8192) -> Iterator[pa.RecordBatch]:
        yield pa.record_batch([pa.array(range(10))], schema=self._schema)
        if self.mode == "fail":
            raise DatasetError("disk went away")


@pytest.mark.parametrize("mode, error", [("fail", "disk went away"), ("short", "counted as 20")])
def test_failure_leaves_no_partial_file_and_keeps_old_output(tmp_path: Path, mode: str, error: str) -> None:
    out = tmp_path / "out.sealed"
    out.write_bytes(b"previous good file")
    with pytest.raises(DatasetError, match=error):
        seal(tmp_path, FlakyReader(mode), FakeKms(), chunk_size=16, dataset_id="flaky")
    assert out.read_bytes() == b"previous good file"
    assert sorted(os.listdir(tmp_path)) == ["out.sealed"]


def test_interrupt_during_write_cleans_up(tmp_path: Path) -> None:
    src = tmp_path / "d.npz"
    write_npz(src, 100)

    def boom(_: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        seal(tmp_path, src, FakeKms(), batch_rows=10, progress=boom)
    assert sorted(os.listdir(tmp_path)) == ["d.npz"]


@pytest.mark.skipif(not (FMNIST / "t10k-images-idx3-ubyte.gz").exists(), reason="dataset-fashion-mnist not installed")
def test_seal_fashion_mnist_t10k(tmp_path: Path) -> None:
    kms = FakeKms()
    result = seal(tmp_path, FMNIST / "t10k-images-idx3-ubyte.gz", kms)
    header, table, _ = open_sealed(result.out_path, kms)
    assert header.record_count == 10000 == table.num_rows
    assert table.schema.field("image").metadata == {b"hermetic.kind": b"tensor", b"shape": b"28x28"}


# -- the CLI, against a real HTTP KMS stand-in (moto) --------------------------------


@pytest.fixture
def kms_url(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()  # returns once the socket is listening
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def test_cli_seal_json(tmp_path: Path, kms_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    kms = boto3.client("kms", endpoint_url=kms_url, region_name="eu-west-1")
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    src = tmp_path / "d.parquet"
    pq.write_table(pa.table({"a": list(range(50))}), src)
    out = tmp_path / "d.sealed"
    rc = main(
        [
            "seal", str(src), "--model-owner-key", "arn:aws:kms:eu-west-1:111122223333:key/model-owner", "--key-id", key_id, "--out", str(out), "--ledger", LEDGER, "--max-epsilon", "2.5",
            "--delta", "1e-6", "--owner", "bank", "--dataset-id", "loans-2024",
            "--kms-endpoint", kms_url, "--region", "eu-west-1", "--json",
        ]
    )
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert report["dataset_id"] == "loans-2024" and report["record_count"] == 50
    assert report["encryption_context"]["max_epsilon"] == "2.5"
    with open(out, "rb") as fh:
        header = read_header(fh)
        # KMS itself releases the key only with the bound context.
        key = kms.decrypt(
            CiphertextBlob=header.encrypted_data_key, EncryptionContext=dict(header.encryption_context)
        )["Plaintext"]
        table = pa.Table.from_batches(list(iter_record_batches(iter_plaintext(fh, header, key))))
    assert table.column("a").to_pylist() == list(range(50))
    with pytest.raises(ClientError):
        kms.decrypt(
            CiphertextBlob=header.encrypted_data_key,
            EncryptionContext={**header.encryption_context, "max_epsilon": "250.0"},
        )


def test_cli_summary(tmp_path: Path, kms_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    key_id = boto3.client("kms", endpoint_url=kms_url, region_name="us-east-1").create_key()["KeyMetadata"]["KeyId"]
    src = tmp_path / "d.npz"
    write_npz(src, 12)
    rc = main(
        ["seal", str(src), "--model-owner-key", "arn:aws:kms:us-east-1:111122223333:key/model-owner", "--key-id", key_id, "--out", str(tmp_path / "o.sealed"), "--ledger", LEDGER, "--max-epsilon", "1",
         "--delta", "1e-5", "--owner", "o", "--kms-endpoint", kms_url]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert text.startswith("sealed 12 records -> ") and "epsilon=1.0 delta=1e-05" in text


def test_cli_errors_are_one_line(tmp_path: Path, kms_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "d.npz"
    write_npz(src, 5)
    base = ["seal", str(src), "--model-owner-key", "arn:aws:kms:us-east-1:111122223333:key/model-owner", "--out", str(tmp_path / "o.sealed"), "--owner", "o", "--kms-endpoint", kms_url,
            "--ledger", LEDGER]
    assert main([*base, "--key-id", "no-such-key", "--max-epsilon", "1", "--delta", "1e-5"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert [line for line in err if line.startswith("hermetic: error:")] == [err[-1]]
    assert "KMS Encrypt" in err[-1]
    assert main([*base, "--key-id", "k", "--max-epsilon", "1", "--delta", "2"]) == 1
    assert "delta" in capsys.readouterr().err
    assert main([*base, "--key-id", "k", "--max-epsilon", "1", "--delta", "0.1", "--chunk-size", "0"]) == 1
    assert not (tmp_path / "o.sealed").exists()
    with pytest.raises(SystemExit) as usage:
        main(["seal", str(src), "--model-owner-key", "arn:aws:kms:us-east-1:111122223333:key/model-owner", "--out", "x"])
    assert usage.value.code == 2


def test_cli_missing_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["seal", str(tmp_path / "nope.csv"), "--model-owner-key", "arn:aws:kms:us-east-1:111122223333:key/model-owner", "--key-id", "k", "--ledger", LEDGER, "--out", str(tmp_path / "o"),
               "--max-epsilon", "1", "--delta", "0.1", "--owner", "o"])
    assert rc == 1
    assert "no such file" in capsys.readouterr().err


@pytest.mark.parametrize("missing", ["--owner", "--key-id"])
def test_cli_requires_owner_and_key_without_local(
    tmp_path: Path, missing: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The owner goes into the encryption context: never the login name by accident.
    monkeypatch.setenv("USER", "someone")
    src = tmp_path / "d.npz"
    write_npz(src, 5)
    argv = ["seal", str(src), "--model-owner-key", "arn:aws:kms:us-east-1:111122223333:key/model-owner", "--out", str(tmp_path / "o.sealed"), "--ledger", LEDGER, "--max-epsilon", "1", "--delta", "1e-5",
            "--owner", "o", "--key-id", "k"]
    at = argv.index(missing)
    del argv[at : at + 2]
    with pytest.raises(SystemExit) as usage:
        main(argv)
    assert usage.value.code == 2
    assert f"{missing} is required" in capsys.readouterr().err
    assert not (tmp_path / "o.sealed").exists()


def test_cli_says_when_the_dataset_id_was_derived(tmp_path: Path, kms_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    key_id = boto3.client("kms", endpoint_url=kms_url, region_name="us-east-1").create_key()["KeyMetadata"]["KeyId"]
    src = tmp_path / "d.npz"
    write_npz(src, 12)
    base = ["seal", str(src), "--model-owner-key", "arn:aws:kms:us-east-1:111122223333:key/model-owner", "--key-id", key_id, "--ledger", LEDGER, "--max-epsilon", "1", "--delta", "1e-5", "--owner", "o",
            "--kms-endpoint", kms_url]
    assert main([*base, "--out", str(tmp_path / "a.sealed")]) == 0
    expected = derived_dataset_id([src], "o")
    text = capsys.readouterr().out
    assert f"dataset_id       {expected} (derived" in text
    assert "public metadata  the record count (12)" in text
    assert "plaintext" not in text
    assert main([*base, "--out", str(tmp_path / "b.sealed"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["dataset_id"], report["dataset_id_source"]) == (expected, "derived")
    assert "plaintext_sha256" not in report


def test_cli_local_without_an_appliance(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "d.npz"
    write_npz(src, 5)
    base = ["seal", str(src), "--model-owner-key", "arn:aws:kms:us-east-1:111122223333:key/model-owner", "--out", str(tmp_path / "o.sealed"), "--ledger", LEDGER, "--max-epsilon", "1", "--delta", "1e-5",
            "--local", str(tmp_path / "none")]
    assert main(base) == 1
    assert "hermetic local up" in capsys.readouterr().err
    assert main([*base, "--kms-endpoint", "http://127.0.0.1:1"]) == 1
    assert "exclude each other" in capsys.readouterr().err
    assert not (tmp_path / "o.sealed").exists()


def test_cli_the_data_owner_names_the_model_owners_keys(
    tmp_path: Path, kms_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    kms = boto3.client("kms", endpoint_url=kms_url, region_name="eu-west-1")
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    src = tmp_path / "d.npz"
    write_npz(src, 5)
    base = ["seal", str(src), "--key-id", key_id, "--out", str(tmp_path / "o.sealed"), "--owner", "o",
            "--kms-endpoint", kms_url, "--region", "eu-west-1", "--ledger", LEDGER, "--max-epsilon", "1",
            "--delta", "1e-5"]
    with pytest.raises(SystemExit):
        main(base)
    assert "--model-owner-key is required" in capsys.readouterr().err
    # An alias name would resolve in the caller's account: the parent's, when the enclave seals.
    with pytest.raises(SystemExit):
        main([*base, "--model-owner-key", "alias/model-owner"])
    assert "resolves in the parent's account" in capsys.readouterr().err
    b, a = "arn:aws:kms:eu-west-1:111122223333:key/b", "arn:aws:kms:eu-west-1:111122223333:alias/a"
    assert main([*base, "--model-owner-key", b, "--model-owner-key", a, "--model-owner-key", b, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["encryption_context"]["model_owner_keys"] == f"{a},{b}"
