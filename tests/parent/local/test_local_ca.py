"""LocalCa: AWS-shaped P-384 chain, persisted atomically with private keys 0600."""
from __future__ import annotations

import stat
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID, SignatureAlgorithmOID

from parent.local import local_ca
from parent.local.local_ca import LocalCa, LocalCaError

NOW = datetime(2030, 5, 17, 12, 30, 45, 678000, tzinfo=UTC)


def _cn(cert: x509.Certificate) -> str:
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def test_second_load_returns_the_same_chain(tmp_path: Path) -> None:
    first = LocalCa.load_or_create(tmp_path)
    second = LocalCa.load_or_create(tmp_path)
    assert second.root_der == first.root_der
    assert second.cabundle == first.cabundle
    assert second.root_pem.startswith(b"-----BEGIN CERTIFICATE-----")
    pem_cert = x509.load_pem_x509_certificate(second.root_pem)
    assert pem_cert.public_bytes(serialization.Encoding.DER) == first.root_der
    assert LocalCa.load_or_create(tmp_path / "other").root_der != first.root_der


def test_files_and_permissions(tmp_path: Path) -> None:
    ca = LocalCa.load_or_create(tmp_path)
    directory = ca.directory
    assert directory == tmp_path / "local-ca"
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    names = sorted(p.name for p in directory.iterdir() if not p.name.startswith("."))
    assert names == [
        "intermediate-1.crt.pem", "intermediate-1.key.pem",
        "intermediate-2.crt.pem", "intermediate-2.key.pem",
        "root.crt.pem", "root.key.pem",
    ]
    for name in names:
        mode = stat.S_IMODE((directory / name).stat().st_mode)
        assert mode == (0o600 if name.endswith(".key.pem") else 0o644), name
    # No temporary files left behind by the atomic writes.
    assert not [p for p in directory.iterdir() if p.name.endswith(".tmp")]
    assert ca.root_cert_path.read_bytes() == ca.root_pem


def test_root_shape(tmp_path: Path) -> None:
    root = LocalCa.load_or_create(tmp_path).root_certificate
    assert root.issuer == root.subject
    root.verify_directly_issued_by(root)
    basic = root.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical and basic.value.ca and basic.value.path_length == 2
    usage = root.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign and not usage.digital_signature
    lifetime = root.not_valid_after_utc - root.not_valid_before_utc
    assert timedelta(days=29 * 365) < lifetime < timedelta(days=32 * 365)
    key = root.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp384r1"
    assert root.signature_algorithm_oid == SignatureAlgorithmOID.ECDSA_WITH_SHA384
    assert _cn(root) == "mock.nitro-enclaves"


def test_intermediates_chain_down_from_the_root(tmp_path: Path) -> None:
    ca = LocalCa.load_or_create(tmp_path)
    assert len(ca.cabundle) == 3 and ca.cabundle[0] == ca.root_der
    parent = ca.root_certificate
    for depth, cert in enumerate(ca.intermediates, start=1):
        cert.verify_directly_issued_by(parent)
        basic = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        assert basic.ca and basic.path_length == 2 - depth
        assert cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
        assert cert.signature_algorithm_oid == SignatureAlgorithmOID.ECDSA_WITH_SHA384
        parent = cert
    assert _cn(ca.intermediates[0]).endswith(".mock-region-1.mock.nitro-enclaves")
    assert _cn(ca.intermediates[1]).endswith(".zonal.mock-region-1.mock.nitro-enclaves")


def test_leaf_shape(tmp_path: Path) -> None:
    ca = LocalCa.load_or_create(tmp_path)
    key, der = ca.issue_leaf(NOW, common_name="i-mock0123456789abc-enc0123456789abcdef.mock.aws")
    leaf = x509.load_der_x509_certificate(der)
    leaf.verify_directly_issued_by(ca.intermediates[-1])
    assert leaf.public_key() == key.public_key()
    assert key.curve.name == "secp384r1"
    assert leaf.not_valid_before_utc == NOW.replace(microsecond=0)
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc == timedelta(hours=3)
    basic = leaf.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical and not basic.value.ca
    usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and not usage.key_cert_sign
    assert leaf.signature_algorithm_oid == SignatureAlgorithmOID.ECDSA_WITH_SHA384
    assert _cn(leaf) == "i-mock0123456789abc-enc0123456789abcdef.mock.aws"
    _, other = ca.issue_leaf(NOW)
    assert other != der
    assert _cn(x509.load_der_x509_certificate(other)).endswith(".mock.aws")


def test_leaf_needs_an_aware_time(tmp_path: Path) -> None:
    ca = LocalCa.load_or_create(tmp_path)
    with pytest.raises(LocalCaError):
        ca.issue_leaf(datetime(2030, 1, 1))


def test_half_present_root_is_refused(tmp_path: Path) -> None:
    ca = LocalCa.load_or_create(tmp_path)
    (ca.directory / "root.key.pem").unlink()
    with pytest.raises(LocalCaError, match="half present"):
        LocalCa.load_or_create(tmp_path)


def test_mismatched_key_is_refused(tmp_path: Path) -> None:
    ca = LocalCa.load_or_create(tmp_path)
    other = LocalCa.load_or_create(tmp_path / "other")
    (ca.directory / "root.key.pem").write_bytes((other.directory / "root.key.pem").read_bytes())
    with pytest.raises(LocalCaError, match="do not match"):
        LocalCa.load_or_create(tmp_path)


def test_expiring_intermediates_are_reissued_under_the_same_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = LocalCa.load_or_create(tmp_path)
    monkeypatch.setattr(local_ca, "RENEW_BEFORE", timedelta(days=100 * 365))
    second = LocalCa.load_or_create(tmp_path)
    assert second.root_der == first.root_der
    assert second.cabundle[1:] != first.cabundle[1:]
    second.intermediates[0].verify_directly_issued_by(second.root_certificate)
    second.intermediates[1].verify_directly_issued_by(second.intermediates[0])


def test_lost_intermediate_is_reissued_with_everything_below(tmp_path: Path) -> None:
    first = LocalCa.load_or_create(tmp_path)
    for suffix in ("key", "crt"):
        (first.directory / f"intermediate-1.{suffix}.pem").unlink()
    second = LocalCa.load_or_create(tmp_path)
    assert second.root_der == first.root_der
    assert second.cabundle[2] != first.cabundle[2]
    second.intermediates[1].verify_directly_issued_by(second.intermediates[0])


def test_concurrent_creation_yields_one_root(tmp_path: Path) -> None:
    roots: list[bytes] = []
    barrier = threading.Barrier(4)

    def load() -> None:
        barrier.wait()
        roots.append(LocalCa.load_or_create(tmp_path).root_der)

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(roots) == 4 and len(set(roots)) == 1
