"""scripts/eif-preflight.sh (run by `make eif` first) against fake docker and nitro-cli.

The host the docs name is Amazon Linux 2023: its docker package is Docker 25 with a
buildx 0.12 that reports "v0.0.0+unknown", and its default builder is the engine's own
(driver "docker"). The reproducible build needs a builder with BuildKit 0.13+ that is
not the engine's; nitro-cli needs 1.3.0+ with Docker 25+ and has open issues with 26+.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.scripts.fakes import SCRIPTS, FakeHost, fake_host

PREFLIGHT = str(SCRIPTS / "eif-preflight.sh")

# `docker buildx inspect` as buildx prints it: "Buildkit:" up to 0.12, "BuildKit version:" after.
DOCKER = r'''
case "$1" in
  info) [ -n "$FAKE_ENGINE" ] || { echo "Cannot connect to the Docker daemon" >&2; exit 1; }; echo "Server Version: $FAKE_ENGINE";;
  version) [ -n "$FAKE_ENGINE" ] || exit 1; echo "$FAKE_ENGINE";;
  buildx)
    case "$2" in
      version) [ -n "$FAKE_BUILDX" ] || { echo "docker: 'buildx' is not a docker command." >&2; exit 1; }
               echo "github.com/docker/buildx $FAKE_BUILDX 30feaa1a915b869ebc2eea6328624b49facd4bfb";;
      inspect) [ -n "$FAKE_DRIVER" ] || { echo "ERROR: no builder" >&2; exit 1; }
               printf 'Name:          %s\nDriver:        %s\nLast Activity: 2026-01-01 00:00:00 +0000 UTC\n\nNodes:\n' "$FAKE_BUILDER" "$FAKE_DRIVER"
               printf 'Name:             %s0\nEndpoint:         unix:///var/run/docker.sock\nDriver Options:   image="x"\nStatus:           running\n' "$FAKE_BUILDER"
               [ -n "$FAKE_BUILDKIT" ] && printf '%s %s\n' "${FAKE_KIT_LABEL:-BuildKit version:}" "$FAKE_BUILDKIT"
               echo "Platforms:        linux/amd64, linux/386";;
      *) echo "unexpected buildx call" >&2; exit 3;;
    esac;;
  *) echo "unexpected docker call" >&2; exit 3;;
esac
'''
NITRO = 'case "$1" in --version) echo "Nitro CLI $FAKE_NITRO";; *) exit 3;; esac'

# Amazon Linux 2023 as installed by docs/DEPLOY.md, before any builder is created.
AL2023 = {
    "FAKE_ENGINE": "25.0.13", "FAKE_BUILDX": "v0.0.0+unknown", "FAKE_BUILDER": "default",
    "FAKE_DRIVER": "docker", "FAKE_BUILDKIT": "v0.12.5", "FAKE_KIT_LABEL": "Buildkit:", "FAKE_NITRO": "1.4.2",
}
# ... and after `docker buildx create --driver docker-container ... --bootstrap`.
AL2023_READY = AL2023 | {"FAKE_BUILDER": "hermetic-eif", "FAKE_DRIVER": "docker-container", "FAKE_BUILDKIT": "v0.23.2"}


@pytest.fixture
def host(tmp_path: Path) -> FakeHost:
    h = fake_host(tmp_path)
    h.add("docker", DOCKER)
    h.add("nitro-cli", NITRO)
    return h


def test_al2023_default_builder_is_refused_with_the_commands_to_run(host: FakeHost) -> None:
    out = host.run([PREFLIGHT], **AL2023)
    assert out.returncode == 1
    assert "cannot build the EIF here: missing or too old (1):" in out.stderr
    assert "builder 'default' is the engine's built-in one (driver docker, BuildKit 0.12.5)" in out.stderr
    assert ("docker buildx create --name hermetic-eif --driver docker-container "
            "--driver-opt image=moby/buildkit:v0.23.2 --bootstrap") in out.stderr
    assert "make eif BUILDX_BUILDER=hermetic-eif" in out.stderr
    # buildx without a version (as Amazon Linux packages it) is a warning, not a failure.
    assert "reports no version" in out.stderr and "warning" in out.stderr


def test_al2023_with_a_docker_container_builder_passes(host: FakeHost) -> None:
    out = host.run([PREFLIGHT], **AL2023_READY)
    assert out.returncode == 0, out.stderr
    assert "Docker 25.0.13" in out.stderr and "BuildKit 0.23.2" in out.stderr and out.stderr.endswith("OK\n")
    assert "E48" not in out.stderr  # Docker 25: no nitro-cli warning
    assert "docker buildx inspect --bootstrap" in host.calls()


@pytest.mark.parametrize("label", ["Buildkit:", "BuildKit version:"])
def test_builder_with_buildkit_older_than_0_13_is_refused(host: FakeHost, label: str) -> None:
    out = host.run([PREFLIGHT], **AL2023_READY | {"FAKE_BUILDKIT": "v0.12.5", "FAKE_KIT_LABEL": label})
    assert out.returncode == 1
    assert "runs BuildKit 0.12.5; rewrite-timestamp needs 0.13.0 or later" in out.stderr
    assert "docker buildx rm hermetic-eif" in out.stderr


def test_builder_without_a_version_is_refused(host: FakeHost) -> None:
    out = host.run([PREFLIGHT], **AL2023_READY | {"FAKE_BUILDKIT": ""})
    assert out.returncode == 1 and "reports no BuildKit version" in out.stderr


@pytest.mark.parametrize(("buildx", "ok"), [("v0.9.1", False), ("v0.10.0", True), ("v0.12.1", True),
                                            ("v0.30.1-desktop.1", True)])
def test_buildx_minimum_is_0_10(host: FakeHost, buildx: str, ok: bool) -> None:
    out = host.run([PREFLIGHT], **AL2023_READY | {"FAKE_BUILDX": buildx})
    assert (out.returncode == 0) is ok, out.stderr
    if not ok:
        assert "docker buildx 0.9.1 is older than 0.10.0" in out.stderr


def test_missing_buildx(host: FakeHost) -> None:
    out = host.run([PREFLIGHT], **AL2023_READY | {"FAKE_BUILDX": ""})
    assert out.returncode == 1 and "'docker buildx' is missing" in out.stderr


@pytest.mark.parametrize(("engine", "nitro", "ok"), [
    ("25.0.13", "1.2.2", False),  # shiplift-era nitro-cli: E50 with Docker 25+
    ("24.0.5", "1.2.2", True),
    ("25.0.13", "1.3.0", True),
])
def test_old_nitro_cli_with_docker_25(host: FakeHost, engine: str, nitro: str, ok: bool) -> None:
    out = host.run([PREFLIGHT], **AL2023_READY | {"FAKE_ENGINE": engine, "FAKE_NITRO": nitro})
    assert (out.returncode == 0) is ok, out.stderr
    if not ok:
        assert "nitro-cli 1.2.2 cannot use Docker Engine 25.0.13" in out.stderr and "E50" in out.stderr
        assert "dnf upgrade -y aws-nitro-enclaves-cli" in out.stderr


@pytest.mark.parametrize("engine", ["26.1.3", "27.3.1", "29.1.2"])
def test_docker_26_and_later_warns_about_nitro_cli(host: FakeHost, engine: str) -> None:
    out = host.run([PREFLIGHT], **AL2023_READY | {"FAKE_ENGINE": engine})
    assert out.returncode == 0, out.stderr
    assert f"warning: Docker Engine {engine}" in out.stderr and "#629" in out.stderr and "E48" in out.stderr


def test_no_engine_and_no_nitro_cli_are_both_named(host: FakeHost) -> None:
    (host.bin / "nitro-cli").unlink()
    out = host.run([PREFLIGHT], **AL2023_READY | {"FAKE_ENGINE": ""})
    assert out.returncode == 1
    assert "missing or too old (2)" in out.stderr
    assert "no Docker engine answers" in out.stderr and "systemctl enable --now docker" in out.stderr
    assert "no nitro-cli" in out.stderr and "dnf install -y aws-nitro-enclaves-cli" in out.stderr


def test_no_docker_command(host: FakeHost) -> None:
    (host.bin / "docker").unlink()
    out = host.run([PREFLIGHT], path_tail="/bin", **AL2023_READY, DOCKER="docker-not-here")
    assert out.returncode == 1 and "no 'docker-not-here' command" in out.stderr


def test_skip(host: FakeHost) -> None:
    out = host.run([PREFLIGHT], **AL2023, EIF_SKIP_PREFLIGHT="1")
    assert out.returncode == 0 and "not checked" in out.stderr and host.calls() == []


def test_make_eif_stops_before_any_docker_build(host: FakeHost, tmp_path: Path) -> None:
    out = host.run([str(SCRIPTS / "eif-build.sh")], **AL2023, EIF_OUT=str(tmp_path / "x.eif"),
                   EIF_MEASUREMENTS=str(tmp_path / "m.json"))
    assert out.returncode == 1
    assert "engine's built-in one" in out.stderr
    assert not [c for c in host.calls() if "build" in c.split()[1:3]]
    assert not (tmp_path / "x.eif").exists()
