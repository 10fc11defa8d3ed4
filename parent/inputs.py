"""Reading the files people hand to the CLI: bounded, with one-line errors."""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from enclave.attestation.document import PCR_COUNT, PCR_VALUE_SIZES
from enclave.errors import ConfigError
from parent.verify.errors import ImageNotPinned
from parent.verify.policy import IMAGE_PCR

HEX_RE = re.compile(r"[0-9a-fA-F]+")


def read_bounded(name: str, limit: int, what: str, error: type[ConfigError] = ConfigError) -> bytes:
    """The bytes of file `name` ('-' for stdin), refusing more than `limit` (`error` names the input's kind)."""
    try:
        if name == "-":
            data = sys.stdin.buffer.read(limit + 1)
        else:
            with open(name, "rb") as handle:
                data = handle.read(limit + 1)
    except OSError as err:
        raise error(f"cannot read {what} {name}: {err.strerror}") from None
    if len(data) > limit:
        raise error(f"{what} {name} is larger than {limit} bytes")
    return data


def load_certificate_der(path: Path, what: str = "root certificate") -> bytes:
    """A PEM or DER X.509 certificate file, as DER."""
    try:
        blob = Path(path).read_bytes()
    except OSError as err:
        raise ConfigError(f"cannot read {what} {path}: {err.strerror}") from None
    try:
        if b"-----BEGIN" in blob:
            cert = x509.load_pem_x509_certificate(blob)
        else:
            cert = x509.load_der_x509_certificate(blob)
    except ValueError:
        raise ConfigError(f"{what} {path} is not a PEM or DER X.509 certificate") from None
    return cert.public_bytes(Encoding.DER)


def parse_hex(text: str) -> bytes:
    """argparse type: a hex string, optionally 0x-prefixed (empty allowed)."""
    cleaned = text.strip().removeprefix("0x").removeprefix("0X")
    if len(cleaned) % 2 or (cleaned and not HEX_RE.fullmatch(cleaned)):
        raise argparse.ArgumentTypeError(f"not a hex string: {text!r}")
    return bytes.fromhex(cleaned)


def parse_pcr(text: str) -> tuple[int, bytes]:
    """argparse type for --pcr N=HEX: a PCR index and a 32-, 48- or 64-byte value."""
    index_text, sep, value_text = text.partition("=")
    if not sep or not index_text.strip().isdigit():
        raise argparse.ArgumentTypeError(f"expected N=HEX, got {text!r}")
    index = int(index_text)
    if not 0 <= index < PCR_COUNT:
        raise argparse.ArgumentTypeError(f"PCR index {index} is outside 0..{PCR_COUNT - 1}")
    value = parse_hex(value_text)
    if len(value) not in PCR_VALUE_SIZES:
        raise argparse.ArgumentTypeError(f"PCR{index} value must be 32, 48 or 64 bytes, got {len(value)}")
    return index, value


def pcr_values(parser: argparse.ArgumentParser, given: list[tuple[int, bytes]] | None) -> dict[int, bytes]:
    """The repeated --pcr options as {index: value}; one index given two values is a usage error (exit 2)."""
    pcrs: dict[int, bytes] = {}
    for index, value in given or ():
        if pcrs.get(index, value) != value:
            parser.error(f"--pcr {index} given twice with different values")
        pcrs[index] = value
    return pcrs


MAX_MEASUREMENTS_SIZE = 64 * 1024
_PCR_NAME = re.compile(r"^PCR([0-9]{1,2})$")
_SHA384_HEX = re.compile(r"^[0-9a-fA-F]{96}$")


def load_measurements(path: Path) -> dict[int, bytes]:
    """{index: value} of every PCRn in a nitro-cli measurements file (or a bare {"PCR0": HEX, ...})."""
    raw = read_bounded(str(path), MAX_MEASUREMENTS_SIZE, "measurements file")
    try:
        doc = json.loads(raw)
    except ValueError as err:
        raise ConfigError(f"measurements file {path} is not valid JSON: {err}") from None
    if isinstance(doc, dict) and isinstance(doc.get("Measurements"), dict):
        doc = doc["Measurements"]
    if not isinstance(doc, dict):
        raise ConfigError(f"measurements file {path} must hold a JSON object")
    pcrs: dict[int, bytes] = {}
    for name, value in doc.items():
        match = _PCR_NAME.match(name)
        if match is None:
            if name == "HashAlgorithm":
                continue
            raise ConfigError(f"measurements file {path}: unexpected entry {name!r}")
        index = int(match.group(1))
        if index >= PCR_COUNT or not isinstance(value, str) or not _SHA384_HEX.match(value):
            raise ConfigError(f"measurements file {path}: {name} must be PCR0..PCR{PCR_COUNT - 1}, 96 hex digits")
        pcrs[index] = bytes.fromhex(value)
    if not pcrs:
        raise ConfigError(f"measurements file {path} names no PCR")
    return pcrs


IMAGE_NOT_PINNED = (f"image not pinned: pass --measurements FILE or --pcr {IMAGE_PCR}=HEX (the published "
                    f"measurement of the enclave image); without PCR{IMAGE_PCR} a document from any image would verify")


def pinned_pcrs(parser: argparse.ArgumentParser, given: list[tuple[int, bytes]] | None,
                measurements: Path | None) -> dict[int, bytes]:
    """The PCRs a verify command requires: --pcr and --measurements together, PCR0 among them.

    The same PCR from both with different values is a usage error (exit 2); no PCR0 is
    ImageNotPinned (exit 1): a verifier that names no image calls any image's document valid.
    """
    pcrs = pcr_values(parser, given)
    if measurements is not None:
        for index, value in load_measurements(measurements).items():
            if pcrs.get(index, value) != value:
                parser.error(f"--pcr {index} differs from PCR{index} in {measurements}")
            pcrs[index] = value
    if IMAGE_PCR not in pcrs:
        raise ImageNotPinned(IMAGE_NOT_PINNED)
    return pcrs
