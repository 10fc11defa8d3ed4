"""Certificate path from the document's leaf to the pinned root.

Two layers, on purpose:
1. An explicit walk of exactly the path NSM describes — leaf, then cabundle in
   reverse, then the pinned root — with one typed error per failure (broken
   link, untrusted root, validity, basicConstraints/pathLen, keyUsage).
2. cryptography's RFC 5280 path validator (`x509.verification`) over the same
   certificates with the pinned root as the only trust anchor, as a catch-all for
   what a hand-written walk could miss (unknown critical extensions, malformed
   extension encodings, name chaining rules). It handles real AWS chains, needs
   no OpenSSL store plumbing, and takes the verification time explicitly; that
   is why it was chosen over pyOpenSSL's X509Store.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.exceptions import UnsupportedAlgorithm as _CryptoUnsupported
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import SignatureAlgorithmOID
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from enclave.attestation.errors import UnsupportedAlgorithm
from parent.verify.errors import (
    BadBasicConstraints,
    BadCertificate,
    BadKeyUsage,
    CertificateExpired,
    CertificateNotYetValid,
    ChainBroken,
    ChainError,
    UntrustedRoot,
)

log = logging.getLogger(__name__)

_ECDSA_SIGNATURES = frozenset({
    SignatureAlgorithmOID.ECDSA_WITH_SHA256,
    SignatureAlgorithmOID.ECDSA_WITH_SHA384,
    SignatureAlgorithmOID.ECDSA_WITH_SHA512,
})
_ISSUER_CURVES = (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)
_MAX_PATH_DEPTH = 10


def verify_chain(
    certificate: bytes, cabundle: Sequence[bytes], root_der: bytes, at: datetime
) -> tuple[x509.Certificate, ...]:
    """Validate leaf -> reversed(cabundle) -> pinned root at `at`; return the path, leaf first."""
    if not cabundle:
        raise UntrustedRoot("cabundle is empty; nothing chains to the pinned root")
    root = _load(root_der, "pinned root certificate")
    leaf = _load(certificate, "leaf certificate")
    bundle = [_load(der, f"cabundle[{i}]") for i, der in enumerate(cabundle)]
    # cabundle is [root, intermediates...]. Normally its first entry is the pinned
    # root itself; otherwise that first entry must be issued by the pinned root.
    intermediates = bundle[1:] if cabundle[0] == root_der else bundle
    path = [leaf, *reversed(intermediates), root]
    if len(path) > _MAX_PATH_DEPTH:
        raise ChainError(f"certificate path has {len(path)} certificates, more than {_MAX_PATH_DEPTH}")
    names = [_describe(cert) for cert in path]

    _check_algorithms(path, names)
    _check_links(path, names)
    _check_validity(path, names, at)
    _check_basic_constraints(path, names)
    _check_key_usage(path, names)
    _check_with_library(leaf, list(reversed(intermediates)), root, at)
    log.debug("certificate path ok at %s: %s", at.isoformat(), " <- ".join(reversed(names)))
    return tuple(path)


def _load(der: bytes, what: str) -> x509.Certificate:
    try:
        cert = x509.load_der_x509_certificate(der)
        # cryptography parses fields lazily; touch them all now so a malformed
        # name or extension is reported as such, not as a crash later on.
        cert.subject.rfc4514_string()
        cert.issuer.rfc4514_string()
        _ = cert.not_valid_before_utc, cert.not_valid_after_utc, cert.signature_algorithm_oid
        _ = list(cert.extensions)
    except Exception as err:
        raise BadCertificate(f"{what} is not a valid DER X.509 certificate") from err
    return cert


def _describe(cert: x509.Certificate) -> str:
    common_names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    if common_names:
        value = common_names[0].value
        return value if isinstance(value, str) else value.decode("utf-8", "replace")
    return cert.subject.rfc4514_string() or "<empty subject>"


def _check_algorithms(path: list[x509.Certificate], names: list[str]) -> None:
    for cert, name in zip(path, names, strict=True):
        try:
            key = cert.public_key()
        except (ValueError, _CryptoUnsupported) as err:
            raise UnsupportedAlgorithm(f"certificate {name!r} has an unsupported public key") from err
        if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, _ISSUER_CURVES):
            raise UnsupportedAlgorithm(f"certificate {name!r} does not have an ECDSA P-256/384/521 key")
        if cert.signature_algorithm_oid not in _ECDSA_SIGNATURES:
            raise UnsupportedAlgorithm(f"certificate {name!r} is not signed with ECDSA")
    leaf_key = path[0].public_key()
    if not isinstance(leaf_key, ec.EllipticCurvePublicKey) or not isinstance(leaf_key.curve, ec.SECP384R1):
        raise UnsupportedAlgorithm("leaf certificate key is not P-384, as ES384 requires")


def _check_links(path: list[x509.Certificate], names: list[str]) -> None:
    for index in range(len(path) - 1):
        child, issuer = path[index], path[index + 1]
        is_last_link = index + 1 == len(path) - 1
        try:
            child.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature, _CryptoUnsupported) as err:
            if is_last_link:
                raise UntrustedRoot(
                    f"certificate {names[index]!r} does not chain to the pinned root {names[-1]!r}"
                ) from err
            raise ChainBroken(
                f"certificate {names[index]!r} is not issued by {names[index + 1]!r}"
            ) from err


def _check_validity(path: list[x509.Certificate], names: list[str], at: datetime) -> None:
    for cert, name in zip(path, names, strict=True):
        if at < cert.not_valid_before_utc:
            raise CertificateNotYetValid(
                f"certificate {name!r} is not valid before {cert.not_valid_before_utc.isoformat()}"
                f" (checked at {at.isoformat()})"
            )
        if at > cert.not_valid_after_utc:
            raise CertificateExpired(
                f"certificate {name!r} expired at {cert.not_valid_after_utc.isoformat()}"
                f" (checked at {at.isoformat()})"
            )


_E = TypeVar("_E", bound=x509.ExtensionType)


def _extension(cert: x509.Certificate, kind: type[_E]) -> x509.Extension[_E] | None:
    try:
        return cert.extensions.get_extension_for_class(kind)
    except x509.ExtensionNotFound:
        return None


def _check_basic_constraints(path: list[x509.Certificate], names: list[str]) -> None:
    leaf_bc = _extension(path[0], x509.BasicConstraints)
    if leaf_bc is not None and leaf_bc.value.ca:
        raise BadBasicConstraints(f"leaf certificate {names[0]!r} is a CA certificate")
    for depth in range(1, len(path)):
        cert, name = path[depth], names[depth]
        bc = _extension(cert, x509.BasicConstraints)
        if bc is None or not bc.value.ca:
            raise BadBasicConstraints(f"issuer {name!r} is not marked as a CA (basicConstraints)")
        # pathLen counts the CA certificates below this one, the leaf excluded.
        below = depth - 1
        if bc.value.path_length is not None and below > bc.value.path_length:
            raise BadBasicConstraints(
                f"issuer {name!r} allows {bc.value.path_length} CAs below it, the path has {below}"
            )


def _check_key_usage(path: list[x509.Certificate], names: list[str]) -> None:
    leaf_ku = _extension(path[0], x509.KeyUsage)
    if leaf_ku is None or not leaf_ku.value.digital_signature:
        raise BadKeyUsage(f"leaf certificate {names[0]!r} lacks keyUsage digitalSignature")
    for cert, name in zip(path[1:], names[1:], strict=True):
        ku = _extension(cert, x509.KeyUsage)
        if ku is None or not ku.value.key_cert_sign:
            raise BadKeyUsage(f"issuer {name!r} lacks keyUsage keyCertSign")


# RFC 5280 CA profile, except that authorityKeyIdentifier is optional: AWS
# intermediates carry it, but it adds nothing to a path we already pin end to end.
_CA_POLICY = ExtensionPolicy.webpki_defaults_ca().may_be_present(
    x509.AuthorityKeyIdentifier, Criticality.AGNOSTIC, None
)
# The leaf is an NSM signing certificate, not a TLS one: no SAN/EKU profile applies;
# its basicConstraints and keyUsage are checked explicitly above.
_EE_POLICY = ExtensionPolicy.permit_all()


def _check_with_library(
    leaf: x509.Certificate,
    intermediates: list[x509.Certificate],
    root: x509.Certificate,
    at: datetime,
) -> None:
    verifier = (
        PolicyBuilder()
        .store(Store([root]))
        .time(at)
        .max_chain_depth(_MAX_PATH_DEPTH)
        .extension_policies(ca_policy=_CA_POLICY, ee_policy=_EE_POLICY)
        .build_client_verifier()
    )
    try:
        verifier.verify(leaf, intermediates)
    except VerificationError as err:
        raise ChainError(f"certificate path rejected by RFC 5280 validation: {err}") from err
