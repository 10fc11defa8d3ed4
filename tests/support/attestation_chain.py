"""Test-local P-384 CA chains and attestation documents in the exact AWS shape.

Independent of the production MockNsm on purpose: these builders can produce
every defect the verifier must refuse (wrong flags, bad key usage, odd encodings).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import cbor2
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

# A fixed verification time keeps every test independent of the wall clock.
AT = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)
PROTECTED_ES384 = bytes.fromhex("a1013822")  # {1: -35}
ABSENT = object()

KEY_USAGE_FLAGS = (
    "digital_signature",
    "content_commitment",
    "key_encipherment",
    "data_encipherment",
    "key_agreement",
    "key_cert_sign",
    "crl_sign",
    "encipher_only",
    "decipher_only",
)
CA_USAGE = frozenset({"key_cert_sign", "crl_sign", "digital_signature"})
LEAF_USAGE = frozenset({"digital_signature", "content_commitment"})


@dataclass(frozen=True)
class Issued:
    cert: x509.Certificate
    key: Any  # private key

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(Encoding.DER)

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(Encoding.PEM)


@dataclass(frozen=True)
class CertSpec:
    """How to issue one certificate; defaults give a well-formed AWS-like cert."""

    common_name: str
    ca: bool | None = True  # None: omit basicConstraints entirely
    path_length: int | None = None
    key_usage: frozenset[str] | None = CA_USAGE  # None: omit keyUsage entirely
    not_before: datetime = AT - timedelta(days=10)
    not_after: datetime = AT + timedelta(days=10)
    curve: ec.EllipticCurve = field(default_factory=ec.SECP384R1)
    extra_extensions: tuple[tuple[x509.ExtensionType, bool], ...] = ()
    private_key: Any = None  # reuse a key (e.g. to mint a twin certificate)


def new_key(curve: ec.EllipticCurve | None = None) -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(curve or ec.SECP384R1())


def issue(spec: CertSpec, issuer: Issued | None) -> Issued:
    """Issue `spec` signed by `issuer` (self-signed when issuer is None)."""
    key = spec.private_key or new_key(spec.curve)
    name = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Hermetic Test"),
        x509.NameAttribute(NameOID.COMMON_NAME, spec.common_name),
    ])
    signer_key = key if issuer is None else issuer.key
    issuer_name = name if issuer is None else issuer.cert.subject
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(spec.not_before)
        .not_valid_after(spec.not_after)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
            critical=False,
        )
    if spec.ca is not None:
        builder = builder.add_extension(
            x509.BasicConstraints(ca=spec.ca, path_length=spec.path_length if spec.ca else None),
            critical=True,
        )
    if spec.key_usage is not None:
        flags = {flag: flag in spec.key_usage for flag in KEY_USAGE_FLAGS}
        if not flags["key_agreement"]:
            flags["encipher_only"] = flags["decipher_only"] = False
        builder = builder.add_extension(x509.KeyUsage(**flags), critical=True)
    for extension, critical in spec.extra_extensions:
        builder = builder.add_extension(extension, critical=critical)
    return Issued(cert=builder.sign(signer_key, hashes.SHA384()), key=key)


@dataclass(frozen=True)
class TestChain:
    root: Issued
    intermediates: tuple[Issued, ...]  # nearest-to-root first, as cabundle orders them
    leaf: Issued

    __test__ = False  # not a pytest test class

    @property
    def cabundle(self) -> tuple[bytes, ...]:
        return (self.root.der, *(i.der for i in self.intermediates))

    @property
    def root_der(self) -> bytes:
        return self.root.der


def root_spec(**overrides: Any) -> CertSpec:
    base = CertSpec(
        common_name="hermetic-test-root",
        not_before=AT - timedelta(days=365),
        not_after=AT + timedelta(days=3650),
    )
    return replace(base, **overrides)


def intermediate_spec(n: int = 0, **overrides: Any) -> CertSpec:
    base = CertSpec(common_name=f"hermetic-test-intermediate-{n}", path_length=None)
    return replace(base, **overrides)


def leaf_spec(**overrides: Any) -> CertSpec:
    base = CertSpec(
        common_name="i-0123456789abcdef0-enc0123456789abcdef.test",
        ca=False,
        key_usage=LEAF_USAGE,
        not_before=AT - timedelta(hours=1),
        not_after=AT + timedelta(hours=2),
    )
    return replace(base, **overrides)


def make_chain(
    *,
    root: CertSpec | None = None,
    intermediates: Iterable[CertSpec] | None = None,
    leaf: CertSpec | None = None,
) -> TestChain:
    """root -> intermediates... -> leaf; one intermediate unless told otherwise."""
    root_issued = issue(root or root_spec(), None)
    issuer = root_issued
    issued: list[Issued] = []
    for spec in intermediates if intermediates is not None else [intermediate_spec()]:
        issuer = issue(spec, issuer)
        issued.append(issuer)
    leaf_issued = issue(leaf or leaf_spec(), issuer)
    return TestChain(root=root_issued, intermediates=tuple(issued), leaf=leaf_issued)


def default_pcrs() -> dict[int, bytes]:
    # Distinct, recognisable 48-byte values; PCR3/4 set as on a real instance.
    return {index: bytes([index]) * 48 for index in range(16)}


def payload_fields(
    chain: TestChain,
    *,
    module_id: Any = "i-0123456789abcdef0-enc0123456789abcdef",
    digest: Any = "SHA384",
    timestamp: Any = None,
    pcrs: Any = None,
    certificate: Any = None,
    cabundle: Any = None,
    public_key: Any = None,
    user_data: Any = None,
    nonce: Any = None,
) -> list[tuple[Any, Any]]:
    """Payload map entries in NSM's order; ABSENT drops a key, None encodes CBOR null."""
    entries = [
        ("module_id", module_id),
        ("digest", digest),
        ("timestamp", int(AT.timestamp() * 1000) if timestamp is None else timestamp),
        ("pcrs", default_pcrs() if pcrs is None else pcrs),
        ("certificate", chain.leaf.der if certificate is None else certificate),
        ("cabundle", list(chain.cabundle) if cabundle is None else cabundle),
        ("public_key", public_key),
        ("user_data", user_data),
        ("nonce", nonce),
    ]
    return [(k, v) for k, v in entries if v is not ABSENT]


def encode_payload(entries: list[tuple[Any, Any]], *, indefinite: bool = False) -> bytes:
    """CBOR map of `entries`; indefinite=True writes 0xBF ... 0xFF as newer NSM versions do."""
    if not indefinite:
        return cbor2.dumps(dict(entries))
    body = b"".join(cbor2.dumps(k) + cbor2.dumps(v) for k, v in entries)
    return b"\xbf" + body + b"\xff"


def raw_signature(key: ec.EllipticCurvePrivateKey, protected: bytes, payload: bytes) -> bytes:
    to_be_signed = cbor2.dumps(["Signature1", protected, b"", payload])
    r, s = decode_dss_signature(key.sign(to_be_signed, ec.ECDSA(hashes.SHA384())))
    size = (key.curve.key_size + 7) // 8
    return r.to_bytes(size, "big") + s.to_bytes(size, "big")


def cose_sign1(
    payload: bytes,
    key: ec.EllipticCurvePrivateKey,
    *,
    protected: bytes = PROTECTED_ES384,
    unprotected: Mapping[Any, Any] | None = None,
    signature: bytes | None = None,
    tagged: bool = False,
) -> bytes:
    sig = raw_signature(key, protected, payload) if signature is None else signature
    message = [protected, dict(unprotected or {}), payload, sig]
    return cbor2.dumps(cbor2.CBORTag(18, message) if tagged else message)


def make_document(
    chain: TestChain,
    *,
    indefinite: bool = False,
    tagged: bool = False,
    signing_key: ec.EllipticCurvePrivateKey | None = None,
    **fields: Any,
) -> bytes:
    payload = encode_payload(payload_fields(chain, **fields), indefinite=indefinite)
    return cose_sign1(payload, signing_key or chain.leaf.key, tagged=tagged)


def split(document: bytes) -> list[Any]:
    """The four COSE members of an untagged document, for surgical edits in tests."""
    item = cbor2.loads(document)
    if isinstance(item, cbor2.CBORTag):
        item = item.value
    return list(item)


def join(members: list[Any], *, tagged: bool = False) -> bytes:
    return cbor2.dumps(cbor2.CBORTag(18, members) if tagged else members)
