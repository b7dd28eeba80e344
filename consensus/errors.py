"""Typed errors of the consensus layer.

Following h11, errors say whose fault they are:

- ``LocalProtocolError``: the caller (our own driver or code) broke a contract — a bug here.
- ``RemoteProtocolError``: a peer sent something malformed — expected, dropped and counted by the
  driver, never raised into its event loop.

Everything else is a named condition a caller handles (``NotLeader``, ``ConfigError``, storage
errors).
"""

from __future__ import annotations


class ConsensusError(Exception):
    """Base class of every error raised by ``consensus``."""


class LocalProtocolError(ConsensusError):
    """The caller broke a contract of a core or codec (a programming error on our side)."""


class RemoteProtocolError(ConsensusError):
    """A peer sent input that is not valid under the protocol."""


class DecodeError(RemoteProtocolError):
    """Bytes from the network could not be decoded into a typed message.

    ``reason`` is a short human-readable explanation (which field, what was wrong). Decoding
    never raises anything else: no ``KeyError``, ``TypeError`` or ``ValueError`` leaks out.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class EncodeError(LocalProtocolError):
    """A message handed to ``encode`` does not match its declared schema or is too large."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ConfigError(ConsensusError, ValueError):
    """A configuration value is nonsense (for example election timeout ≤ heartbeat interval)."""


class NotLeader(ConsensusError):
    """A leader-only operation was attempted on a node that is not the leader.

    ``leader_hint`` is the node this node currently believes to be leader, or ``None`` when it
    knows of none (an election is under way); the caller may retry there.
    """

    def __init__(self, leader_hint: str | None) -> None:
        super().__init__(f"not the leader (leader hint: {leader_hint!r})")
        self.leader_hint = leader_hint


class LeadershipTransferring(NotLeader):
    """The leader is handing leadership to ``leader_hint`` and accepts no proposals meanwhile;
    the caller retries at the hint (or here, if the transfer aborts)."""

    def __init__(self, leader_hint: str | None) -> None:
        super().__init__(leader_hint)
        self.args = (f"leadership is being transferred to {leader_hint!r}",)


class ConfChangeError(ConsensusError):
    """A membership change was refused by the leader before being proposed (another change is
    pending, the learner has not caught up, the node is already a voter, ...). ``reason`` says
    which; nothing was appended."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class StorageError(ConsensusError):
    """Base class of the conditions a ``Storage`` reports to the core."""


class CompactedError(StorageError):
    """The requested index is below the first available index (compacted into a snapshot)."""


class UnavailableError(StorageError):
    """The requested index is above the last index in storage."""


class SnapshotUnavailableError(StorageError):
    """No snapshot is available (yet); the caller may retry later."""


class SnapshotOutOfDateError(StorageError):
    """A snapshot older than (or as old as) the one storage holds was offered or requested."""


class RaftInvariantError(LocalProtocolError):
    """A Raft safety invariant would be violated (e.g. truncating a committed entry).

    This signals a bug or corrupted storage; the node must stop rather than continue.
    """
