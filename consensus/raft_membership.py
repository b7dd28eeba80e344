"""Single-server membership changes (Raft thesis §4.1, §4.2.1), as pure functions.

A group's membership is a ``ConfState``: sorted, disjoint ``voters`` and ``learners``. A change
is a ``ConfChange`` carried (encoded) by an ``EntryKind.CONFIG`` log entry.

Rules the core follows, and why they are safe:

- A change takes effect on a node when the node *applies* its entry (etcd's choice, not the
  thesis's "on append"): the leader in ``RaftNode.advance``, every other node likewise. A node
  therefore never has to roll a membership back when its log is truncated.
- One change at a time: the leader proposes a change only once the previous one is applied on
  the leader, and a new leader proposes none before it has applied every entry up to its own
  first entry (so it has committed an entry of its term first — the fix of the single-server
  bug Ongaro described on raft-dev in 2015).
- A node does not campaign while it knows committed CONFIG entries it has not applied; since
  AppendEntries carry the leader's commit index, a node holding change *k+1* knows that change
  *k* is committed, so any two nodes deciding elections use memberships at most one change apart,
  and the majorities of two such memberships always overlap.
- Applying a change sets one node's status absolutely (voter, learner or absent), so replaying
  changes that are already reflected (after a restart) leaves the membership unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from consensus.core import NodeId
from consensus.errors import (
    ConfChangeError,
    DecodeError,
    LocalProtocolError,
    RaftInvariantError,
    SnapshotUnavailableError,
)
from consensus.messages import (
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    decode,
    encode,
)
from consensus.raft_progress import Progress
from consensus.storage import Storage

_T = ConfChangeType


def make_conf_state(voters: Iterable[NodeId], learners: Iterable[NodeId] = ()) -> ConfState:
    """A ``ConfState`` with sorted, de-duplicated members (learners that are voters dropped)."""
    vs = tuple(sorted(set(voters)))
    ls = tuple(sorted(set(learners) - set(vs)))
    return ConfState(vs, ls)


def apply_change(cs: ConfState, change: ConfChange) -> ConfState:
    """The membership after ``change``; total (never fails): the node's status is set to what
    the change says whatever it was, so the caller validates *before proposing*."""
    voters = set(cs.voters) - {change.node}
    learners = set(cs.learners) - {change.node}
    if change.type in (_T.ADD_VOTER, _T.PROMOTE_LEARNER):
        voters.add(change.node)
    elif change.type is _T.ADD_LEARNER:
        learners.add(change.node)
    return make_conf_state(voters, learners)


def bootstrap_entries(voters: Iterable[NodeId]) -> tuple[list[Entry], HardState]:
    """Write a group's founding membership into its log (etcd's bootstrap): one ADD_VOTER
    CONFIG entry per voter (sorted) at indices ``1..n`` of term 1, all committed. The founding
    node's driver appends the entries to its empty storage and sets the hard state before
    constructing its ``RaftNode`` with ``voters=()``; every node that joins later starts empty,
    also with ``voters=()``, and learns the whole membership history from the log (or from a
    snapshot), so no node needs to be told the founding voters."""
    ids = sorted(set(voters))
    if not ids:
        raise LocalProtocolError("a group is founded with at least one voter")
    entries = [
        Entry(i, 1, EntryKind.CONFIG, encode_change(ConfChange(ConfChangeType.ADD_VOTER, v)))
        for i, v in enumerate(ids, start=1)
    ]
    return entries, HardState(term=1, vote=None, commit=len(entries))


def encode_change(change: ConfChange) -> bytes:
    """The data of the CONFIG entry carrying ``change``."""
    return encode(change)


def decode_change(entry: Entry) -> ConfChange:
    """The change a committed CONFIG entry carries; ``RaftInvariantError`` if it holds anything
    else (only a leader writes these entries, so this means corruption)."""
    try:
        change = decode(entry.data)
    except DecodeError as e:
        raise RaftInvariantError(f"CONFIG entry {entry.index} is unreadable: {e.reason}") from None
    if not isinstance(change, ConfChange):
        raise RaftInvariantError(f"CONFIG entry {entry.index} holds a {type(change).__name__}")
    return change


def check_change(
    cs: ConfState,
    change: ConfChange,
    *,
    progress: Mapping[NodeId, Progress],
    last_index: int,
    max_promote_lag: int,
) -> None:
    """Refuse (``ConfChangeError``) a change that is not a valid single-server step from ``cs``;
    ``progress`` and ``last_index`` are the leader's, for the learner catch-up check."""
    if not isinstance(change, ConfChange):
        raise LocalProtocolError(f"expected a ConfChange, got {type(change).__name__}")
    node = change.node
    if not isinstance(node, str) or not node:
        raise LocalProtocolError(f"a member id must be a non-empty str, got {node!r}")
    is_voter, is_learner = node in cs.voters, node in cs.learners
    kind = change.type
    if kind is _T.ADD_VOTER:
        if is_voter:
            raise ConfChangeError(f"{node} is already a voter")
        if is_learner:
            raise ConfChangeError(f"{node} is a learner: promote it with PROMOTE_LEARNER")
    elif kind is _T.ADD_LEARNER:
        if is_voter:
            raise ConfChangeError(f"{node} is a voter: remove it first to make it a learner")
        if is_learner:
            raise ConfChangeError(f"{node} is already a learner")
    elif kind is _T.PROMOTE_LEARNER:
        if not is_learner:
            raise ConfChangeError(f"{node} is not a learner")
        pr = progress.get(node)
        match = pr.match if pr is not None else 0
        if last_index - match > max_promote_lag:
            raise ConfChangeError(
                f"learner {node} has not caught up: it holds up to {match}, the leader's log "
                f"ends at {last_index} (allowed lag {max_promote_lag})"
            )
    elif kind is _T.REMOVE_VOTER:
        if not is_voter:
            raise ConfChangeError(f"{node} is not a voter")
        if len(cs.voters) == 1:
            raise ConfChangeError(f"{node} is the last voter; a group needs one")
    elif kind is _T.REMOVE_LEARNER:
        if not is_learner:
            raise ConfChangeError(f"{node} is not a learner")
    else:  # pragma: no cover - the enum is closed
        raise LocalProtocolError(f"unknown change type {kind!r}")


def snapshot_index(storage: Storage) -> int:
    """Index of the storage's latest snapshot (0 if none)."""
    try:
        return storage.snapshot().meta.index
    except SnapshotUnavailableError:
        return 0


def replay_conf(conf: ConfState, storage: Storage, applied: int) -> ConfState:
    """The membership as of ``applied`` on a node starting over ``storage``: ``conf`` (the
    stored one, as of the latest snapshot) plus the CONFIG entries after the snapshot that the
    state machine has already applied (those after ``applied`` are applied as it goes)."""
    lo = max(snapshot_index(storage) + 1, storage.first_index())
    if applied >= lo:
        for e in storage.entries(lo, applied + 1):
            if e.kind is EntryKind.CONFIG:
                conf = apply_change(conf, decode_change(e))
    return conf
