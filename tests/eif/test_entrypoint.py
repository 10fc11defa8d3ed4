"""The image entrypoint (eif/entrypoint.py) and the enclave's `python -m enclave` entry point."""
from __future__ import annotations

import importlib.util
import logging
import sys
from pathlib import Path
from types import ModuleType

import pytest

from enclave.__main__ import build_parser, config_from_args, main
from enclave.errors import ConfigError
from enclave.transport.address import TcpAddress, VsockAddress

ROOT = Path(__file__).resolve().parents[2]


def load_entrypoint() -> ModuleType:
    spec = importlib.util.spec_from_file_location("hermetic_eif_entrypoint", ROOT / "eif" / "entrypoint.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ENTRY = load_entrypoint()


def test_runtime_command_line_is_fixed_in_the_image() -> None:
    argv = ENTRY.runtime_argv("/usr/local/bin/python3", "eu-west-1")
    assert argv == [
        "/usr/local/bin/python3", "-m", "enclave",
        "--listen", "vsock://any:5000",
        "--kms-relay", "vsock://3:8000",
        "--kms-url", "https://kms.eu-west-1.amazonaws.com",
        "--kms-forward-port", "443",
        "--s3-relay", "vsock://3:8001",
        "--s3-url", "https://s3.eu-west-1.amazonaws.com",
        "--s3-forward-host", "127.0.0.2",
        "--s3-forward-port", "443",
    ]
    # ... and it is a command line `python -m enclave` accepts.
    args = build_parser().parse_args(argv[3:])
    assert args.listen == VsockAddress(0xFFFFFFFF, 5000)
    assert args.kms_relay == VsockAddress(3, 8000)
    config = config_from_args(args)
    assert config.kms_forward_port == 443
    # The S3 relay (budget ledgers) on its own vsock port, its forwarder on its own loopback address.
    assert config.s3_relay == VsockAddress(3, 8001) and config.s3_url == "https://s3.eu-west-1.amazonaws.com"
    assert (config.s3_forward_host, config.s3_forward_port) == ("127.0.0.2", 443)


@pytest.mark.parametrize("region", ["", "us-east-1;rm", "eu west", "../x"])
def test_region_is_validated(region: str) -> None:
    with pytest.raises(SystemExit):
        ENTRY.runtime_argv("python3", region)


def test_hosts_entry_is_added_once() -> None:
    base = "127.0.0.1 localhost\n::1 localhost ip6-localhost\n"
    once = ENTRY.hosts_with_kms(base, "kms.us-east-1.amazonaws.com")
    assert once == base + "127.0.0.1 kms.us-east-1.amazonaws.com\n"
    assert ENTRY.hosts_with_kms(once, "kms.us-east-1.amazonaws.com") == once
    # An empty /etc/hosts (as in a fresh enclave rootfs) also gets localhost.
    assert ENTRY.hosts_with_kms("", "kms.x.amazonaws.com") == "127.0.0.1 localhost\n127.0.0.1 kms.x.amazonaws.com\n"
    # A commented-out mapping does not count.
    commented = "# 127.0.0.1 kms.x.amazonaws.com\n127.0.0.1 localhost\n"
    assert ENTRY.hosts_with_kms(commented, "kms.x.amazonaws.com").endswith("127.0.0.1 kms.x.amazonaws.com\n")


def test_hosts_map_kms_and_s3_to_their_forwarders() -> None:
    base = "127.0.0.1 localhost\n"
    hosts = ENTRY.hosts_for_region(base, "eu-west-1")
    assert hosts == base + "127.0.0.1 kms.eu-west-1.amazonaws.com\n127.0.0.2 s3.eu-west-1.amazonaws.com\n"
    assert ENTRY.hosts_for_region(hosts, "eu-west-1") == hosts
    with pytest.raises(SystemExit):
        ENTRY.hosts_for_region(base, "eu west")


def test_ifreq_layout_matches_linux() -> None:
    # struct ifreq is 40 bytes on x86_64: char ifr_name[16] then a union (flags: short).
    assert ENTRY._IFREQ.size == 40
    packed = ENTRY._IFREQ.pack(b"lo", ENTRY.IFF_UP)
    assert packed[:3] == b"lo\x00" and packed[16:18] == (1).to_bytes(2, sys.byteorder)


def test_defaults_and_local_addresses() -> None:
    args = build_parser().parse_args(["--kms-url", "https://kms.us-east-1.amazonaws.com"])
    assert str(args.listen) == "vsock://any:5000" and str(args.kms_relay) == "vsock://3:8000"
    args = build_parser().parse_args([
        "--listen", "tcp://127.0.0.1:0", "--kms-relay", "unix:///tmp/relay.sock",
        "--kms-url", "http://127.0.0.1:{port}", "--kms-forward-port", "0",
    ])
    config = config_from_args(args)
    assert config.control == TcpAddress("127.0.0.1", 0) and config.kms_forward_port == 0


@pytest.mark.parametrize("url", ["http://kms.us-east-1.amazonaws.com", "ftp://x", "http://127.0.0.1.evil.example"])
def test_plain_http_only_for_loopback(url: str) -> None:
    with pytest.raises(ConfigError, match="https"):
        config_from_args(build_parser().parse_args(["--kms-url", url]))


def test_s3_relay_is_optional_and_tls_only() -> None:
    kms = ["--kms-url", "https://kms.eu-west-1.amazonaws.com"]
    config = config_from_args(build_parser().parse_args(kms))
    assert config.s3_relay is None
    config = config_from_args(build_parser().parse_args(
        [*kms, "--s3-relay", "vsock://3:8001", "--s3-url", "https://s3.eu-west-1.amazonaws.com"]))
    assert config.s3_relay == VsockAddress(3, 8001) and config.s3_url == "https://s3.eu-west-1.amazonaws.com"
    assert (config.s3_forward_host, config.s3_forward_port) == ("127.0.0.2", 443)
    with pytest.raises(ConfigError, match="--s3-url must be https"):
        config_from_args(build_parser().parse_args(
            [*kms, "--s3-relay", "vsock://3:8001", "--s3-url", "http://s3.eu-west-1.amazonaws.com"]))
    for half in (["--s3-relay", "vsock://3:8001"], ["--s3-url", "https://s3.eu-west-1.amazonaws.com"]):
        with pytest.raises(ConfigError, match="go together"):
            config_from_args(build_parser().parse_args([*kms, *half]))


@pytest.mark.parametrize("argv", [["--kms-url", "https://k", "--listen", "vsock://2:5000"],
                                  ["--kms-url", "https://k", "--kms-forward-port", "70000"],
                                  []])
def test_usage_errors(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(argv)
    assert exc.value.code == 2


def test_without_an_nsm_it_exits_1_with_a_reason(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    # No /dev/nsm and no libnsm.so here: the production path must refuse, never fall back to a mock.
    caplog.set_level(logging.ERROR, logger="enclave")
    code = main(["--listen", f"unix://{tmp_path}/ctl.sock", "--kms-relay", f"unix://{tmp_path}/relay.sock",
                 "--kms-url", "https://kms.us-east-1.amazonaws.com"])
    assert code == 1
    assert any("cannot start" in r.getMessage() and "NSM" in r.getMessage() for r in caplog.records)
    assert not (tmp_path / "ctl.sock").exists()


def test_the_production_runtime_opens_s3_ledgers(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # `python -m enclave` wires S3 ledgers (protected slots only), never the default of none.
    import enclave.__main__ as entry

    built: list[dict[str, object]] = []

    class Recorded:
        def __init__(self, config: object, nsm: object, **kwargs: object) -> None:
            built.append(kwargs)
            raise ConfigError("recorded")

    class NoDevice:
        def close(self) -> None:
            pass

    monkeypatch.setattr(entry, "DeviceNsm", NoDevice)
    monkeypatch.setattr(entry, "SocketEnclave", Recorded)
    assert main(["--listen", f"unix://{tmp_path}/ctl.sock", "--kms-relay", f"unix://{tmp_path}/relay.sock",
                 "--kms-url", "https://kms.us-east-1.amazonaws.com"]) == 1
    assert built == [{"s3_ledgers": True}]
