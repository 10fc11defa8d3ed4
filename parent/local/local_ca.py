"""A local P-384 certificate chain shaped like the AWS Nitro attestation PKI.

AWS signs attestation documents with a short-lived leaf under a chain rooted in the
"aws.nitro-enclaves" root (30 years, CA). The local stand-in mirrors that shape::

    root            CN=mock.nitro-enclaves                 CA, pathlen 2, ~30 years
    intermediate 1  CN=<hex>.mock-region-1.mock.nitro-enclaves        CA, pathlen 1
    intermediate 2  CN=<hex>.zonal.mock-region-1.mock.nitro-enclaves  CA, pathlen 0
    leaf            CN=i-mock<hex>-enc<hex>.mock.aws   not CA, digitalSignature, 3 hours

All keys are P-384, all signatures ECDSA-SHA384. Keys and certificates live as PEM
files in ``<state_dir>/local-ca/`` (private keys 0600, every file written atomically);
the root key never leaves that folder. ``load_or_create`` is idempotent and safe
against concurrent callers (a lock file serialises creation): the root, once made,
is never replaced, so anything that pinned ``root_der`` stays valid. Intermediates
are re-issued only when missing, invalid or within 30 days of expiry.

Root and intermediates are back-dated by a year so that documents stamped by a test
clock somewhat in the past still chain; leaves are valid from their issue time.
"""
from __future__ import annotations

import fcntl
import logging
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from enclave.errors import ConfigError
from parent.storage import write_atomic

__all__ = [
    "INTERMEDIATE_COUNT",
    "LEAF_VALIDITY",
    "LocalCa",
    "LocalCaError",
]

log = logging.getLogger(__name__)

CA_DIRNAME = "local-ca"
INTERMEDIATE_COUNT = 2
LEAF_VALIDITY = timedelta(hours=3)
ROOT_VALIDITY = timedelta(days=30 * 365)
INTERMEDIATE_VALIDITY = timedelta(days=3 * 365)
RENEW_BEFORE = timedelta(days=30)
BACKDATE = timedelta(days=365)

_CURVE = ec.SECP384R1()
_HASH = hashes.SHA384()


class LocalCaError(ConfigError):
    """The local CA's state folder is inconsistent or unusable."""


@dataclass(frozen=True)
class _Issuer:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _name(common_name: str, *, leaf: bool = False) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COUNTRY_NAME, "US")]
    if leaf:
        attrs += [
            x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "Washington"),
            x509.NameAttribute(NameOID.LOCALITY_NAME, "Seattle"),
        ]
    attrs += [
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Hermetic"),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Mock Nitro"),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ]
    return x509.Name(attrs)


def _ca_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=False,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


def _leaf_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def _build(
    *,
    subject: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    issuer: _Issuer | None,
    signing_key: ec.EllipticCurvePrivateKey,
    not_before: datetime,
    not_after: datetime,
    path_length: int | None,
    ca: bool,
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject if issuer is None else issuer.cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length), critical=True)
        .add_extension(_ca_usage() if ca else _leaf_usage(), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
            critical=False,
        )
    return builder.sign(signing_key, _HASH)


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    write_atomic(path, data, mode)


def _save(directory: Path, stem: str, issued: _Issuer) -> None:
    key_pem = issued.key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # Key first: a cert without its key would make the next load fail loudly.
    _write_atomic(directory / f"{stem}.key.pem", key_pem, 0o600)
    _write_atomic(
        directory / f"{stem}.crt.pem", issued.cert.public_bytes(serialization.Encoding.PEM), 0o644
    )


def _load(directory: Path, stem: str) -> _Issuer | None:
    key_path = directory / f"{stem}.key.pem"
    cert_path = directory / f"{stem}.crt.pem"
    if not key_path.exists() and not cert_path.exists():
        return None
    if not key_path.exists() or not cert_path.exists():
        raise LocalCaError(f"local CA {stem} is half present in {directory}: remove or restore it")
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise LocalCaError(f"local CA {stem} in {directory} is unreadable: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(
        key.curve, ec.SECP384R1
    ):
        raise LocalCaError(f"local CA {stem} key in {directory} is not a P-384 key")
    if key.public_key() != cert.public_key():
        raise LocalCaError(f"local CA {stem} key and certificate in {directory} do not match")
    return _Issuer(cert=cert, key=key)


def _issued_by(child: x509.Certificate, parent: x509.Certificate) -> bool:
    try:
        child.verify_directly_issued_by(parent)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


class LocalCa:
    """The local attestation PKI: a persisted root and intermediates, fresh leaves."""

    def __init__(self, directory: Path, root: _Issuer, intermediates: tuple[_Issuer, ...]):
        self.directory = directory
        self._root = root
        self._intermediates = intermediates

    @classmethod
    def load_or_create(cls, state_dir: Path) -> LocalCa:
        """Load the CA from `state_dir`, creating whatever is missing (idempotent)."""
        directory = Path(state_dir) / CA_DIRNAME
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        with open(directory / ".lock", "a+b") as lock_file:
            fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX)
            try:
                return cls._load_or_create_locked(directory)
            finally:
                fcntl.flock(lock_file.fileno(), fcntl.LOCK_UN)

    @classmethod
    def _load_or_create_locked(cls, directory: Path) -> LocalCa:
        now = _utcnow()
        root = _load(directory, "root")
        if root is None:
            key = ec.generate_private_key(_CURVE)
            cert = _build(
                subject=_name("mock.nitro-enclaves"),
                public_key=key.public_key(),
                issuer=None,
                signing_key=key,
                not_before=now - BACKDATE,
                not_after=now + ROOT_VALIDITY,
                path_length=INTERMEDIATE_COUNT,
                ca=True,
            )
            root = _Issuer(cert=cert, key=key)
            _save(directory, "root", root)
            log.info("created local mock-NSM root CA in %s", directory)
        elif not _issued_by(root.cert, root.cert):
            raise LocalCaError(f"local CA root in {directory} is not self-signed")

        chain: list[_Issuer] = []
        parent = root
        renewed = False
        for depth in range(1, INTERMEDIATE_COUNT + 1):
            stem = f"intermediate-{depth}"
            current = None if renewed else _load(directory, stem)
            if current is not None and (
                not _issued_by(current.cert, parent.cert)
                or current.cert.not_valid_after_utc - RENEW_BEFORE < now
            ):
                current = None
            if current is None:
                key = ec.generate_private_key(_CURVE)
                label = os.urandom(8).hex()
                common_name = (
                    f"{label}.mock-region-1.mock.nitro-enclaves"
                    if depth == 1
                    else f"{label}.zonal.mock-region-1.mock.nitro-enclaves"
                )
                cert = _build(
                    subject=_name(common_name),
                    public_key=key.public_key(),
                    issuer=parent,
                    signing_key=parent.key,
                    not_before=now - BACKDATE,
                    not_after=now + INTERMEDIATE_VALIDITY,
                    path_length=INTERMEDIATE_COUNT - depth,
                    ca=True,
                )
                current = _Issuer(cert=cert, key=key)
                _save(directory, stem, current)
                # Everything below a re-issued CA must be re-issued too.
                renewed = True
                log.info("issued local mock-NSM %s in %s", stem, directory)
            chain.append(current)
            parent = current
        return cls(directory, root, tuple(chain))

    # ------------------------------------------------------------ public view

    @property
    def root_certificate(self) -> x509.Certificate:
        return self._root.cert

    @property
    def root_der(self) -> bytes:
        return self._root.cert.public_bytes(serialization.Encoding.DER)

    @property
    def root_pem(self) -> bytes:
        return self._root.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def root_cert_path(self) -> Path:
        return self.directory / "root.crt.pem"

    @property
    def intermediates(self) -> tuple[x509.Certificate, ...]:
        """Intermediate certificates, from the one under the root down."""
        return tuple(i.cert for i in self._intermediates)

    @property
    def cabundle(self) -> tuple[bytes, ...]:
        """DER certificates as an attestation document carries them: root first."""
        return (self.root_der,) + tuple(
            c.public_bytes(serialization.Encoding.DER) for c in self.intermediates
        )

    def issue_leaf(
        self, now: datetime | None = None, *, common_name: str | None = None
    ) -> tuple[ec.EllipticCurvePrivateKey, bytes]:
        """A fresh P-384 key and its DER leaf certificate, valid from `now` for 3 hours."""
        when = _utcnow() if now is None else now
        if when.tzinfo is None:
            raise LocalCaError("issue_leaf needs a timezone-aware time")
        # X.509 times have whole seconds: round down so the leaf covers `now` itself.
        start = when.astimezone(UTC).replace(microsecond=0)
        if common_name is None:
            common_name = f"i-mock{os.urandom(7).hex()[:13]}-enc{os.urandom(8).hex()}.mock.aws"
        key = ec.generate_private_key(_CURVE)
        issuer = self._intermediates[-1] if self._intermediates else self._root
        cert = _build(
            subject=_name(common_name, leaf=True),
            public_key=key.public_key(),
            issuer=issuer,
            signing_key=issuer.key,
            not_before=start,
            not_after=start + LEAF_VALIDITY,
            path_length=None,
            ca=False,
        )
        return key, cert.public_bytes(serialization.Encoding.DER)
