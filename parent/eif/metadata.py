"""The EIF metadata section and how `nitro-cli describe-eif` prints it.

The section is `serde_json::to_vec(&EifIdentityInfo)` (image-format crate,
src/defs/mod.rs)::

    {"ImageName": str, "ImageVersion": str,
     "BuildMetadata": {"BuildTime": str, "BuildTool": str, "BuildToolVersion": str,
                       "OperatingSystem": str, "KernelVersion": str},
     "DockerInfo": <docker inspect of the image>, "CustomMetadata": <the --metadata file, or null>}

nitro-cli reads it back into that struct (`EifReader::from_eif`): a missing field or a
field of the wrong type fails the whole describe-eif; unknown fields are ignored.
describe-eif then prints `ImageName` and `ImageVersion` at the top level and a
`Metadata` object flattened from it (`MetadataDescribeInfo` in nitro-cli's
src/common/json_output.rs): the five BuildMetadata fields, `DockerInfo`, and the
keys of `CustomMetadata` merged in (`#[serde(flatten)]`; null adds nothing, and a
value that is not an object cannot be flattened, so describe-eif fails on it).
nitro-cli's serde_json keeps objects in a BTreeMap, so every nested object prints with
sorted keys; so does `describe()` here.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from parent.eif.errors import EifBadMetadata

BUILD_FIELDS = ("BuildTime", "BuildTool", "BuildToolVersion", "OperatingSystem", "KernelVersion")


@dataclass(frozen=True)
class EifIdentity:
    """EifIdentityInfo: who built the image, from what, with which tool."""

    image_name: str
    image_version: str
    build: dict[str, str]  # the BuildMetadata fields, in BUILD_FIELDS order
    docker_info: Any
    custom: dict[str, Any] | None

    def describe(self) -> dict[str, Any]:
        """describe-eif's "Metadata" object."""
        out: dict[str, Any] = dict(self.build)
        out["DockerInfo"] = sorted_json(self.docker_info)
        # A custom key equal to one above is printed twice by nitro-cli; a JSON
        # reader (jq, json.loads) keeps the later one, the custom value.
        for key, value in sorted_json(self.custom or {}).items():
            out[key] = value
        return out


def sorted_json(value: Any) -> Any:
    """`value` with every object's keys sorted, as serde_json's BTreeMap prints them."""
    if isinstance(value, dict):
        return {key: sorted_json(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [sorted_json(item) for item in value]
    return value


def parse_metadata(data: bytes) -> EifIdentity:
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise EifBadMetadata("metadata section is not UTF-8 JSON") from None
    if not isinstance(value, dict):
        raise EifBadMetadata("metadata section is not a JSON object")
    for key in ("ImageName", "ImageVersion", "BuildMetadata", "DockerInfo", "CustomMetadata"):
        if key not in value:
            raise EifBadMetadata(f"metadata section has no {key} field")
    for key in ("ImageName", "ImageVersion"):
        if not isinstance(value[key], str):
            raise EifBadMetadata(f"metadata {key} is not a string")
    build = value["BuildMetadata"]
    if not isinstance(build, dict):
        raise EifBadMetadata("metadata BuildMetadata is not a JSON object")
    for key in BUILD_FIELDS:
        if not isinstance(build.get(key), str):
            raise EifBadMetadata(f"metadata BuildMetadata.{key} is missing or not a string")
    custom = value["CustomMetadata"]
    if custom is not None and not isinstance(custom, dict):
        raise EifBadMetadata("metadata CustomMetadata is neither an object nor null (describe-eif cannot print it)")
    return EifIdentity(
        image_name=value["ImageName"],
        image_version=value["ImageVersion"],
        build={key: build[key] for key in BUILD_FIELDS},
        docker_info=value["DockerInfo"],
        custom=custom,
    )


__all__ = ["BUILD_FIELDS", "EifIdentity", "parse_metadata", "sorted_json"]
