"""Typed errors of the mesh layer. Each message names the problem so a user can act on it."""

from __future__ import annotations


class MeshError(Exception):
    """Base class of the mesh layer's errors."""


class CredentialError(MeshError):
    """Mesh credentials are missing, unreadable or inconsistent (the message says which file)."""


class CertificateError(MeshError):
    """A certificate is not valid for this mesh: wrong CA, wrong node id, expired, revoked."""


class ClockSkewError(CertificateError):
    """This device's clock is too far from the mesh's: ``skew_s`` > 0 means ours is behind."""

    def __init__(self, message: str, skew_s: float) -> None:
        super().__init__(message)
        self.skew_s = skew_s


class TokenError(MeshError):
    """A join token is malformed, unknown, already used, expired or its secret is wrong."""


class AdmissionError(MeshError):
    """A peer refused us, or we refused a peer; ``reason`` is the short refusal reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RevocationError(MeshError):
    """A revocation list is not signed by this mesh's CA or is malformed."""
