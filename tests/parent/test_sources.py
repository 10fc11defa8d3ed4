from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from enclave.errors import DatasetError
from parent.sources import (
    LocalSource,
    S3Source,
    SourceNotFound,
    open_source,
    parse_s3_uri,
)
from tests.parent.proxy.moto_s3 import s3_client  # noqa: F401 - fixture

DATA = os.urandom(300_000)


def _read_all(source: Any, n: int = 65536) -> bytes:
    parts = []
    while chunk := source.read(n):
        assert len(chunk) <= n
        parts.append(chunk)
    return b"".join(parts)


def test_local_path_and_file_url(tmp_path: Path) -> None:
    path = tmp_path / "d.sealed"
    path.write_bytes(DATA)
    for uri in (str(path), f"file://{path}"):
        with open_source(uri) as src:
            assert isinstance(src, LocalSource)
            assert src.size == len(DATA)
            assert _read_all(src) == DATA


def test_local_missing_and_directory(tmp_path: Path) -> None:
    with pytest.raises(SourceNotFound, match="does not exist"):
        open_source(str(tmp_path / "nope"))
    with pytest.raises(SourceNotFound, match="directory"):
        open_source(str(tmp_path))


def test_unsupported_scheme_and_bad_s3_uri() -> None:
    with pytest.raises(DatasetError, match="unsupported"):
        open_source("https://example.com/x")
    for bad in ("s3://", "s3://bucket", "s3://bucket/", "s3:///key"):
        with pytest.raises(DatasetError, match="s3://bucket/key"):
            parse_s3_uri(bad)


def test_s3_streaming_read(s3_client: Any) -> None:  # noqa: F811
    s3_client.put_object(Bucket="sealed", Key="dir/a.sealed", Body=DATA)
    with open_source("s3://sealed/dir/a.sealed", s3_client=s3_client) as src:
        assert isinstance(src, S3Source)
        assert src.uri == "s3://sealed/dir/a.sealed"
        assert src.size == len(DATA)
        assert _read_all(src, 10_000) == DATA


def test_s3_missing_key_and_bucket(s3_client: Any) -> None:  # noqa: F811
    with pytest.raises(SourceNotFound, match="NoSuchKey"):
        open_source("s3://sealed/missing", s3_client=s3_client)
    with pytest.raises(SourceNotFound, match="NoSuchBucket"):
        open_source("s3://no-such-bucket/x", s3_client=s3_client)
