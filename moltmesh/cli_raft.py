"""``moltmesh raft status|recover``.

``recover --voters A,B`` is offline surgery for a group that lost quorum for good: run it on
each survivor's data directory (the node stopped), with the same voter list. It applies every
entry in that node's log (committed or not, like etcd's --force-new-cluster) to the KV, writes
a snapshot of it whose membership is exactly the given voters, and drops the log (in an
order that a crash at any point leaves a directory the node starts from); started
again, the survivors elect a leader among themselves and the autopilot takes it from there.
Run it on the survivor with the longest log first if they may differ.

It holds the data directory's lock (``<data-dir>/lock``) from start to end, so it refuses to
run while a node (or another command) uses the directory, and it creates nothing: the
directory must already hold Raft state (``<data-dir>/raft``).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

B32_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz234567")
"""The alphabet of node ids (lower-case RFC 4648 base32, see ``moltmesh.identity``)."""


def add_parser(sub: Any) -> None:
    from moltmesh.cli import add_node_config_flags, add_tls_flags, plain_doc

    raft = sub.add_parser("raft", help="Raft group status and offline recovery")
    rsub = raft.add_subparsers(dest="raft_command", metavar="ACTION", required=True)
    st = rsub.add_parser("status", help="role, term, leader, commit index and voters (JSON)")
    add_node_config_flags(st)
    add_tls_flags(st)
    st.set_defaults(func=cmd_status)
    rec = rsub.add_parser(
        "recover", help="restore a group that lost quorum for good (node stopped)",
        description=plain_doc(__doc__), formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    add_node_config_flags(rec)
    rec.add_argument(
        "--voters", required=True, metavar="ID,ID",
        help="comma-separated node ids of the survivors (16 base32 characters each, as "
        "`moltmesh status` shows them)",
    )  # fmt: skip
    rec.set_defaults(func=cmd_recover)


def cmd_status(args: argparse.Namespace) -> int:
    from moltmesh.cli_kv import _call, _fail

    code, body = _call(args, "GET", "/v1/raft/status")
    if code != 200:
        return _fail(code, body)
    print(json.dumps(body, indent=1))
    return 0


@dataclass(frozen=True, slots=True)
class Recovered:
    """What ``recover_dir`` did: the snapshot written, and the membership the log held before
    (voters and learners of its last configuration)."""

    index: int
    term: int
    previous_voters: tuple[str, ...]
    previous_learners: tuple[str, ...]


def recover(raft_dir: Path, voters: list[str]) -> tuple[int, int]:
    """Rewrite ``raft_dir`` as described in the module docstring; returns (index, term) of the
    snapshot written. The caller holds the data directory's lock."""
    done = recover_dir(raft_dir, voters)
    return done.index, done.term


def recover_dir(raft_dir: Path, voters: list[str]) -> Recovered:
    """``recover``, also returning the membership of the log's last configuration.

    ``ValueError`` when ``voters`` is empty or ``raft_dir`` holds no Raft state."""
    from consensus.errors import CompactedError
    from consensus.kv import KvStore
    from consensus.messages import ConfState, EntryKind, HardState, Snapshot, SnapshotMeta
    from consensus.raft_membership import apply_change, decode_change, make_conf_state
    from moltmesh.raft.wal import DiskStorage

    if not voters:
        raise ValueError("--voters names at least one node")
    s = DiskStorage.open(raft_dir)
    try:
        conf = s.snapshot().meta.conf_state if s.has_snapshot() else ConfState()
        kv = KvStore.restore(s.snapshot().data) if s.has_snapshot() else KvStore()
        last = s.last_index()
        lo = kv.applied_index + 1
        try:
            entries = s.entries(lo, last + 1) if lo <= last else []
        except CompactedError:
            entries = []
        for e in entries:
            kv.apply_entry(e)
            if e.kind is EntryKind.CONFIG:
                conf = apply_change(conf, decode_change(e))
        index = kv.applied_index
        if index == 0:
            raise ValueError(f"{raft_dir} holds no Raft state to recover")
        term = max(s.term(index), s.hard_state.term)
    except BaseException:
        s.close()
        raise
    snap = Snapshot(SnapshotMeta(index, term, make_conf_state(voters)), kv.snapshot())
    s.reset_to_snapshot(snap, HardState(term, None, index))  # crash-safe, closes ``s``
    return Recovered(index, term, tuple(conf.voters), tuple(conf.learners))


def parse_voters(text: str) -> list[str]:
    """The node ids of ``--voters`` (sorted, without duplicates); ``UsageError`` naming the
    first one that is not a node id."""
    from moltmesh.cli import UsageError
    from moltmesh.identity import NODE_ID_CHARS

    voters = sorted({v.strip() for v in text.split(",") if v.strip()})
    if not voters:
        raise UsageError(f"--voters {text!r} names no node; give comma-separated node ids")
    for v in voters:
        if len(v) != NODE_ID_CHARS or not set(v) <= B32_CHARS:
            raise UsageError(
                f"--voters: {v!r} is not a node id ({NODE_ID_CHARS} lower-case base32 "
                "characters, as `moltmesh status` shows them)"
            )
    return voters


def holds_raft_state(raft_dir: Path) -> bool:
    """Whether ``raft_dir`` has a log segment or a snapshot (checked without creating anything)."""
    return raft_dir.is_dir() and (
        any((raft_dir / "wal").glob("seg-*.log")) or any((raft_dir / "snap").glob("snap-*.snap"))
    )


def cmd_recover(args: argparse.Namespace) -> int:
    from consensus.errors import ConsensusError
    from moltmesh.cli import UsageError, config_from
    from moltmesh.dirlock import DataDirLock

    config = config_from(args)
    voters = parse_voters(args.voters)
    raft_dir = config.data_dir / "raft"
    if not holds_raft_state(raft_dir):
        raise UsageError(
            f"{raft_dir} holds no Raft state: is {config.data_dir} the data directory of a "
            "mesh member?"
        )
    with DataDirLock(config.data_dir, "moltmesh raft recover"):
        try:
            done = recover_dir(raft_dir, voters)
        except (ValueError, ConsensusError) as e:
            raise UsageError(f"cannot recover {raft_dir}: {e}") from None
    known = set(done.previous_voters) | set(done.previous_learners)
    strangers = [v for v in voters if v not in known]
    if strangers:
        print(
            f"warning: {', '.join(strangers)} {'was' if len(strangers) == 1 else 'were'} not "
            f"in the log's last configuration (voters {', '.join(done.previous_voters) or '-'}"
            f"; learners {', '.join(done.previous_learners) or '-'})",
            file=sys.stderr,
        )
    print(
        f"recovered: snapshot at index {done.index} (term {done.term}) with voters "
        f"{', '.join(voters)}"
    )
    return 0
