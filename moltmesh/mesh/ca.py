"""The mesh certificate authority and node certificates (Ed25519, via ``cryptography``).

A CA is a self-signed Ed25519 certificate whose subject names the mesh. A node certificate binds
a node's own Ed25519 identity key (``moltmesh.identity``) to its node id: the subject common name
is the node id, the URI SAN is ``urn:moltmesh:<mesh id>:node:<node id>``, and the id must equal
``node_id_for(public key)`` — so a certificate can never name a node whose key it does not hold.
Node certificates are valid for TLS server and client use, begin ``backdate`` seconds in the past
(devices' clocks drift) and are due for renewal at ⅔ of their validity.

Times are ``datetime`` in UTC, passed in by the caller (tests choose them; nothing here reads the
clock except the ``utcnow`` helper).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from moltmesh.identity import node_id_for
from moltmesh.mesh.errors import CertificateError, ClockSkewError

CA_LIFETIME = dt.timedelta(days=3650)
URI_PREFIX = "urn:moltmesh:"
FINGERPRINT_CHARS = 52  # base32 of a SHA-256 digest, unpadded


CA_KEY_USAGE = x509.KeyUsage(
    digital_signature=True, key_cert_sign=True, crl_sign=True,
    content_commitment=False, key_encipherment=False, data_encipherment=False,
    key_agreement=False, encipher_only=False, decipher_only=False,
)  # fmt: skip
NODE_EKU = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH])


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the certificate's DER, lower-case base32 without padding (52 chars)."""
    digest = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).digest()
    return base64.b32encode(digest).decode("ascii").rstrip("=").lower()


def raw_public_key(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def create_ca(mesh_id: str, now: dt.datetime) -> tuple[Ed25519PrivateKey, x509.Certificate]:
    """A new CA key and its self-signed certificate for mesh ``mesh_id``."""
    key = Ed25519PrivateKey.generate()
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "moltmesh"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"moltmesh mesh {mesh_id} CA"),
        ]
    )
    pub = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(pub)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(CA_KEY_USAGE, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(pub), critical=False)
        .sign(key, None)
    )
    return key, cert


def make_csr(key: Ed25519PrivateKey) -> bytes:
    """A DER certificate signing request for the node key ``key`` (proves we hold it)."""
    node_id = node_id_for(raw_public_key(key.public_key()))
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node_id)]))
        .sign(key, None)
    )
    return csr.public_bytes(serialization.Encoding.DER)


def csr_public_key(csr_der: bytes) -> Ed25519PublicKey:
    """The Ed25519 key of a DER CSR whose self-signature is valid; ``CertificateError`` else."""
    try:
        csr = x509.load_der_x509_csr(csr_der)
        key = csr.public_key()
        valid = csr.is_signature_valid
    except (ValueError, TypeError) as e:
        raise CertificateError(f"malformed certificate request: {e}") from None
    if not isinstance(key, Ed25519PublicKey) or not valid:
        raise CertificateError("certificate request is not a self-signed Ed25519 request")
    return key


def issue_node_cert(
    ca_key: Ed25519PrivateKey,
    ca_cert: x509.Certificate,
    mesh_id: str,
    public_key: Ed25519PublicKey,
    now: dt.datetime,
    lifetime: dt.timedelta,
    backdate: dt.timedelta,
) -> x509.Certificate:
    """A node certificate for ``public_key``; its node id is derived from the key."""
    node_id = node_id_for(raw_public_key(public_key))
    return (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "moltmesh"),
                    x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, mesh_id),
                    x509.NameAttribute(NameOID.COMMON_NAME, node_id),
                ]
            )
        )
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - backdate)
        .not_valid_after(now + lifetime)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(NODE_EKU, critical=False)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(f"{URI_PREFIX}{mesh_id}:node:{node_id}")]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, None)
    )


def node_id_of(cert: x509.Certificate) -> str:
    """The node id a certificate names, checked against its key; ``CertificateError`` if not."""
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    key = cert.public_key()
    if len(names) != 1 or not isinstance(key, Ed25519PublicKey):
        raise CertificateError("not a moltmesh node certificate")
    node_id = str(names[0].value)
    if node_id != node_id_for(raw_public_key(key)):
        raise CertificateError(f"certificate names node {node_id} but holds another node's key")
    return node_id


def signed_by(cert: x509.Certificate, ca_cert: x509.Certificate) -> bool:
    """True when ``cert`` is issued by ``ca_cert`` and its signature verifies."""
    ca_key = ca_cert.public_key()
    if cert.issuer != ca_cert.subject or not isinstance(ca_key, Ed25519PublicKey):
        return False
    try:
        ca_key.verify(cert.signature, cert.tbs_certificate_bytes)
    except InvalidSignature:
        return False
    return True


def check_validity(cert: x509.Certificate, now: dt.datetime, what: str = "certificate") -> None:
    """Raise ``ClockSkewError`` if ``now`` is before the start, ``CertificateError`` if expired.

    A certificate issued with a backdated start that still starts in our future means *our*
    clock is behind the issuer's by at least the difference: that is reported by name.
    """
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    if now < start:
        behind = (start - now).total_seconds()
        raise ClockSkewError(
            f"this device's clock is at least {behind:.0f} s behind the mesh's: the {what} "
            f"starts at {start.isoformat()} but the clock says {now.isoformat()} — fix the clock",
            skew_s=behind,
        )
    if now >= end:
        raise CertificateError(f"the {what} expired at {end.isoformat()}")


def verify_node_cert(cert: x509.Certificate, ca_cert: x509.Certificate, now: dt.datetime) -> str:
    """Check ``cert`` is a current node certificate of this CA; return its node id."""
    if not signed_by(cert, ca_cert):
        raise CertificateError("certificate is not issued by this mesh's CA")
    check_validity(cert, now, "node certificate")
    return node_id_of(cert)


def renewal_time(cert: x509.Certificate) -> dt.datetime:
    """When ``cert`` is due for renewal: ⅔ of the way through its validity."""
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    return start + (end - start) * 2 / 3


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def cert_der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def load_cert(data: bytes) -> x509.Certificate:
    """Load a PEM or DER certificate; ``CertificateError`` if it is neither."""
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError as e:
        raise CertificateError(f"not a certificate: {e}") from None


def key_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def load_ca_key(data: bytes) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:
        raise CertificateError(f"not a PEM private key: {e}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise CertificateError(f"the CA key must be Ed25519, not {type(key).__name__}")
    return key
