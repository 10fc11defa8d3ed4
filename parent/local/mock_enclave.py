"""Run the enclave runtime as a local process with a MockNsm injected.

This is the only place where the production runtime meets local stand-ins: the
enclave package stays free of them, and the mock's PCRs are measured from the
enclave package's code (or from another copy of it, to play a modified image).
"""
from __future__ import annotations

import logging
from pathlib import Path

from enclave.ledger.local import local_backends
from enclave.transport.address import Address
from enclave.wiring import RuntimeConfig, SocketEnclave
from parent.appliance import LEDGER_DIR
from parent.local.local_ca import LocalCa
from parent.local.measure import measure_enclave_package
from parent.local.mock_nsm import MockNsm

log = logging.getLogger(__name__)


def measurements_json(pcrs: dict[int, bytes]) -> dict[str, str]:
    """The nitro-cli describe-eif "Measurements" shape (hex PCRs)."""
    return {"HashAlgorithm": "Sha384 { ... }", **{f"PCR{i}": pcrs[i].hex() for i in sorted(pcrs)}}


def build_runtime(
    *,
    state_dir: Path,
    control: Address,
    kms_relay: Address,
    kms_url: str = "http://127.0.0.1:{port}",
    measure_dir: Path | None = None,
    ledger_dir: Path | None = None,
) -> SocketEnclave:
    ca = LocalCa.load_or_create(state_dir)
    pcrs = measure_enclave_package(measure_dir)
    nsm = MockNsm(ca, pcrs=pcrs)
    log.info("mock enclave PCR0 %s", pcrs[0].hex())
    config = RuntimeConfig(control=control, kms_relay=kms_relay, kms_url=kms_url)
    # The one place unprotected (local-directory) ledger slots are accepted: see enclave.ledger.local.
    ledgers = local_backends(Path(ledger_dir) if ledger_dir is not None else Path(state_dir) / LEDGER_DIR)
    return SocketEnclave(config, nsm, ledgers=ledgers)
