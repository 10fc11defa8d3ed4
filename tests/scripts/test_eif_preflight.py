"""scripts/eif-preflight.sh (run by `make eif` first) against fake docker, nitro-cli and id.

The host the docs name is Amazon Linux 2023: its docker package is Docker 25 and it has no
mmdebstrap or buildah, so the image is built in a privileged Debian container (a warning).
nitro-cli needs 1.3.0+ with Docker 25+ and has open issues with 26+.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.scripts.fakes import SCRIPTS, FakeHost, fake_host

PREFLIGHT = str(SCRIPTS / "eif-preflight.sh")

DOCKER = r'''
case "$1" in
  info) [ -n "$FAKE_ENGINE" ] || { echo "Cannot connect to the Docker daemon" >&2; exit 1; }; echo "Server Version: $FAKE_ENGINE";;
  version) [ -n "$FAKE_ENGINE" ] || exit 1; echo "$FAKE_ENGINE";;
  *) echo "unexpected docker call" >&2; exit 3;;
esac
'''
NITRO = 'case "$1" in --version) echo "Nitro CLI $FAKE_NITRO";; *) exit 3;; esac'

# Amazon Linux 2023 as installed by docs/DEPLOY.md.
AL2023 = {"FAKE_ENGINE": "25.0.13", "FAKE_NITRO": "1.4.2"}


@pytest.fixture
def host(tmp_path: Path) -> FakeHost:
    h = fake_host(tmp_path)
    h.add("docker", DOCKER)
    h.add("nitro-cli", NITRO)
    h.non_root()
    return h


def test_al2023_passes_and_says_the_image_is_built_in_a_container(host: FakeHost) -> None:
    out = host.run([PREFLIGHT], path_tail="/bin", **AL2023)
    assert out.returncode == 0, out.stderr
    assert "warning: no mmdebstrap and buildah as root here" in out.stderr
    assert "Docker 25.0.13, nitro-cli 1.4.2, image built with a privileged debian:bookworm container: OK" in out.stderr
    assert "E48" not in out.stderr  # Docker 25: no nitro-cli warning


def test_root_with_the_debian_tools_builds_here(host: FakeHost) -> None:
    host.add("id", 'case "$1" in -u) echo 0;; -un) echo root;; *) echo "uid=0(root)";; esac')
    host.add("mmdebstrap", "exit 0")
    host.add("buildah", "exit 0")
    out = host.run([PREFLIGHT], path_tail="/bin", **AL2023)
    assert out.returncode == 0, out.stderr
    assert "warning" not in out.stderr and "image built with mmdebstrap and buildah here: OK" in out.stderr


def test_builder_image_can_be_named(host: FakeHost) -> None:
    out = host.run([PREFLIGHT], path_tail="/bin", **AL2023, EIF_BUILDER_IMAGE="debian:bookworm-20261201")
    assert out.returncode == 0 and "privileged debian:bookworm-20261201 container" in out.stderr

@pytest.mark.parametrize(("engine", "nitro", "ok"), [
    ("25.0.13", "1.2.2", False),  # shiplift-era nitro-cli: E50 with Docker 25+
    ("24.0.5", "1.2.2", True),
    ("25.0.13", "1.3.0", True),
])
def test_old_nitro_cli_with_docker_25(host: FakeHost, engine: str, nitro: str, ok: bool) -> None:
    out = host.run([PREFLIGHT], path_tail="/bin", **AL2023 | {"FAKE_ENGINE": engine, "FAKE_NITRO": nitro})
    assert (out.returncode == 0) is ok, out.stderr
    if not ok:
        assert "nitro-cli 1.2.2 cannot use Docker Engine 25.0.13" in out.stderr and "E50" in out.stderr
        assert "dnf upgrade -y aws-nitro-enclaves-cli" in out.stderr


@pytest.mark.parametrize("engine", ["26.1.3", "27.3.1", "29.1.2"])
def test_docker_26_and_later_warns_about_nitro_cli(host: FakeHost, engine: str) -> None:
    out = host.run([PREFLIGHT], path_tail="/bin", **AL2023 | {"FAKE_ENGINE": engine})
    assert out.returncode == 0, out.stderr
    assert f"warning: Docker Engine {engine}" in out.stderr and "#629" in out.stderr and "E48" in out.stderr


def test_no_engine_and_no_nitro_cli_are_both_named(host: FakeHost) -> None:
    (host.bin / "nitro-cli").unlink()
    out = host.run([PREFLIGHT], path_tail="/bin", **AL2023 | {"FAKE_ENGINE": ""})
    assert out.returncode == 1
    assert "missing or too old (2)" in out.stderr
    assert "no Docker engine answers" in out.stderr and "systemctl enable --now docker" in out.stderr
    assert "no nitro-cli" in out.stderr and "dnf install -y aws-nitro-enclaves-cli" in out.stderr


def test_no_docker_command(host: FakeHost) -> None:
    (host.bin / "docker").unlink()
    out = host.run([PREFLIGHT], path_tail="/bin", **AL2023, DOCKER="docker-not-here")
    assert out.returncode == 1 and "no 'docker-not-here' command" in out.stderr


def test_skip(host: FakeHost) -> None:
    out = host.run([PREFLIGHT], path_tail="/bin", **AL2023, EIF_SKIP_PREFLIGHT="1")
    assert out.returncode == 0 and "not checked" in out.stderr and host.calls() == []


def test_make_eif_stops_before_any_docker_build(host: FakeHost, tmp_path: Path) -> None:
    out = host.run([str(SCRIPTS / "eif-build.sh")], **AL2023 | {"FAKE_ENGINE": ""}, EIF_OUT=str(tmp_path / "x.eif"),
                   EIF_MEASUREMENTS=str(tmp_path / "m.json"))
    assert out.returncode == 1
    assert "no Docker engine answers" in out.stderr
    assert not [c for c in host.calls() if "build" in c.split()[1:3]]
    assert not (tmp_path / "x.eif").exists()
