"""Where the parent reads sealed files from: a local path or `s3://bucket/key`.

The parent only ever handles ciphertext; a source is read once, front to
back, in bounded chunks, so relaying a multi-gigabyte file takes constant
memory.
"""
from __future__ import annotations

import abc
import logging
import os
from typing import Any, BinaryIO

from enclave.errors import DatasetError

log = logging.getLogger(__name__)


class SourceNotFound(DatasetError):
    """The sealed file does not exist (or is not readable)."""


class SourceReadError(DatasetError):
    """Reading the sealed file failed midway."""


class SealedSource(abc.ABC):
    """An opened sealed file: `read(n)` returns up to n bytes, b"" at the end."""

    uri: str
    size: int | None

    @abc.abstractmethod
    def read(self, n: int) -> bytes:
        """Up to `n` bytes; fewer only at the end or when the backend returns short."""

    @abc.abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> SealedSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LocalSource(SealedSource):
    def __init__(self, path: str) -> None:
        self.uri = path
        try:
            self._file: BinaryIO = open(path, "rb")
            self.size = os.fstat(self._file.fileno()).st_size
        except FileNotFoundError:
            raise SourceNotFound(f"sealed file {path} does not exist") from None
        except IsADirectoryError:
            raise SourceNotFound(f"sealed file {path} is a directory") from None
        except OSError as exc:
            raise SourceNotFound(f"cannot open sealed file {path}: {exc.strerror or exc}") from None

    def read(self, n: int) -> bytes:
        try:
            return self._file.read(n)
        except OSError as exc:
            raise SourceReadError(f"reading {self.uri} failed: {exc.strerror or exc}") from None

    def close(self) -> None:
        self._file.close()


class S3Source(SealedSource):
    """A streaming GetObject body; nothing is buffered beyond the chunk asked for."""

    def __init__(self, client: Any, bucket: str, key: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        self.uri = f"s3://{bucket}/{key}"
        self._errors = (BotoCoreError, ClientError, OSError)
        try:
            response = client.get_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "NoSuchBucket", "404", "NotFound"):
                raise SourceNotFound(f"sealed file {self.uri} does not exist ({code})") from None
            raise SourceNotFound(f"cannot get {self.uri}: {code or exc}") from None
        except (BotoCoreError, OSError) as exc:
            raise SourceNotFound(f"cannot get {self.uri}: {exc}") from None
        self._body = response["Body"]
        length = response.get("ContentLength")
        self.size = int(length) if length is not None else None

    def read(self, n: int) -> bytes:
        try:
            data: bytes = self._body.read(n)
            return data
        except self._errors as exc:
            raise SourceReadError(f"reading {self.uri} failed: {exc}") from None

    def close(self) -> None:
        self._body.close()


def parse_s3_uri(uri: str) -> tuple[str, str]:
    rest = uri[len("s3://") :]
    bucket, slash, key = rest.partition("/")
    if not bucket or not slash or not key:
        raise DatasetError(f"S3 URI {uri!r} must look like s3://bucket/key")
    return bucket, key


def open_source(uri: str, s3_client: Any | None = None) -> SealedSource:
    """Open a sealed file at a local path (or file:// URL) or `s3://bucket/key`."""
    if uri.startswith("s3://"):
        bucket, key = parse_s3_uri(uri)
        if s3_client is None:
            import boto3

            s3_client = boto3.client("s3")
        return S3Source(s3_client, bucket, key)
    if uri.startswith("file://"):
        uri = uri[len("file://") :]
    elif "://" in uri:
        raise DatasetError(f"unsupported dataset location {uri!r}: use a path or s3://bucket/key")
    return LocalSource(uri)


class BytesSource(SealedSource):
    """Bytes already in memory (a public evaluation set, a checkpoint to resume)."""

    def __init__(self, data: bytes, uri: str = "memory:") -> None:
        self.uri = uri
        self._data = memoryview(data)
        self._pos = 0
        self.size = len(data)

    def read(self, n: int) -> bytes:
        chunk = self._data[self._pos : self._pos + n]
        self._pos += len(chunk)
        return bytes(chunk)

    def close(self) -> None:
        self._data.release()
