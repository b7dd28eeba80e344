"""TLS 1.3 contexts for the mesh, and our own check of the peer after the handshake.

- Members talk mutual TLS: both sides present a node certificate issued by the mesh CA, and both
  verify the other's chain against that CA only (never the system store).
- The server also accepts connections *without* a client certificate (``CERT_OPTIONAL``) so that
  new devices can join; such connections are only ever handed to the join protocol, and only on a
  CA holder. A client certificate that *is* presented must verify, or the handshake fails.
- Python's ``ssl`` has no verify callback, so who the peer is is checked after the handshake by
  ``check_peer``: a current certificate of this CA, naming the expected node id, not revoked.
- Hostnames are not checked (nodes are reached by address); the node id check replaces it.

In TLS 1.3 the server verifies the client's certificate after the client considers the handshake
done: a refused client "connects" and sees EOF (or an alert) only on its first read.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl

from cryptography import x509

from moltmesh.mesh import ca
from moltmesh.mesh.errors import AdmissionError, CertificateError
from moltmesh.mesh.store import MeshState


def _base(purpose: int) -> ssl.SSLContext:
    ctx = ssl.SSLContext(purpose)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    return ctx


def server_context(state: MeshState, accept_joins: bool) -> ssl.SSLContext:
    """Server side: our node certificate; clients verified against the mesh CA."""
    ctx = _base(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(state.node_cert_path, state.node_key_path)
    ctx.load_verify_locations(cadata=ca.cert_pem(state.ca_cert).decode("ascii"))
    ctx.verify_mode = ssl.CERT_OPTIONAL if accept_joins else ssl.CERT_REQUIRED
    return ctx


def client_context(state: MeshState) -> ssl.SSLContext:
    """Client side: our node certificate; the server verified against the mesh CA."""
    ctx = _base(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cadata=ca.cert_pem(state.ca_cert).decode("ascii"))
    ctx.load_cert_chain(state.node_cert_path, state.node_key_path)
    return ctx


def join_client_context() -> ssl.SSLContext:
    """For a device without credentials: encrypt, trust nothing yet.

    The server's certificate is checked by the join protocol against the CA whose fingerprint
    the token carries, before the token's secret is sent.
    """
    ctx = _base(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def peer_certificate(writer: asyncio.StreamWriter) -> x509.Certificate | None:
    """The certificate the peer presented on this TLS stream, or ``None``."""
    sslobj = writer.get_extra_info("ssl_object")
    der = sslobj.getpeercert(binary_form=True) if sslobj is not None else None
    return x509.load_der_x509_certificate(der) if der else None


def check_peer(
    cert: x509.Certificate | None,
    state: MeshState,
    now: dt.datetime,
    expected: str | None = None,
) -> str:
    """The peer's node id, once it is a current member that is not revoked (and is ``expected``).

    Raises ``AdmissionError`` whose ``reason`` is one of ``no certificate``, ``bad certificate``,
    ``revoked``, ``wrong node``.
    """
    if cert is None:
        raise AdmissionError("no certificate")
    try:
        node_id = ca.verify_node_cert(cert, state.ca_cert, now)
    except CertificateError as e:
        raise AdmissionError(f"bad certificate: {e}") from None
    if state.is_revoked(node_id):
        raise AdmissionError("revoked")
    if expected is not None and node_id != expected:
        raise AdmissionError(f"wrong node: expected {expected}, certificate names {node_id}")
    return node_id
