"""``moltmesh raft status|recover``.

``recover --voters A,B`` is offline surgery for a group that lost quorum for good: run it on
each survivor's data directory (the node stopped), with the same voter list. It applies every
entry in that node's log (committed or not, like etcd's --force-new-cluster) to the KV, writes
a snapshot of it whose membership is exactly the given voters, and drops the log (in an
order that a crash at any point leaves a directory the node starts from); started
again, the survivors elect a leader among themselves and the autopilot takes it from there.
Run it on the survivor with the longest log first if they may differ.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def add_parser(sub: Any) -> None:
    from moltmesh.cli import add_node_config_flags

    raft = sub.add_parser("raft", help="Raft group status and offline recovery")
    rsub = raft.add_subparsers(dest="raft_command", metavar="ACTION", required=True)
    st = rsub.add_parser("status", help="role, term, leader, commit index and voters (JSON)")
    add_node_config_flags(st)
    st.set_defaults(func=cmd_status)
    rec = rsub.add_parser(
        "recover", help="restore a group that lost quorum for good (node stopped)",
        description=__doc__,
    )  # fmt: skip
    add_node_config_flags(rec)
    rec.add_argument("--voters", required=True, help="comma-separated node ids of the survivors")
    rec.set_defaults(func=cmd_recover)


def cmd_status(args: argparse.Namespace) -> int:
    from moltmesh.cli_kv import _call, _fail

    code, body = _call(args, "GET", "/v1/raft/status")
    if code != 200:
        return _fail(code, body)
    print(json.dumps(body, indent=1))
    return 0


def recover(raft_dir: Path, voters: list[str]) -> tuple[int, int]:
    """Rewrite ``raft_dir`` as described in the module docstring; returns (index, term) of the
    snapshot written."""
    from consensus.errors import CompactedError
    from consensus.kv import KvStore
    from consensus.messages import HardState, Snapshot, SnapshotMeta
    from consensus.raft_membership import make_conf_state
    from moltmesh.raft.wal import DiskStorage

    if not voters:
        raise ValueError("--voters names at least one node")
    s = DiskStorage.open(raft_dir)
    kv = KvStore.restore(s.snapshot().data) if s.has_snapshot() else KvStore()
    last = s.last_index()
    lo = kv.applied_index + 1
    try:
        entries = s.entries(lo, last + 1) if lo <= last else []
    except CompactedError:
        entries = []
    for e in entries:
        kv.apply_entry(e)
    index = kv.applied_index
    if index == 0:
        raise ValueError(f"{raft_dir} holds no Raft state to recover")
    term = max(s.term(index), s.hard_state.term)
    snap = Snapshot(SnapshotMeta(index, term, make_conf_state(voters)), kv.snapshot())
    s.reset_to_snapshot(snap, HardState(term, None, index))  # crash-safe, closes ``s``
    return index, term


def _node_answers(url_file: Path) -> bool:
    """Whether the node that wrote ``url_file`` still answers (a killed one leaves the file)."""
    import urllib.error
    import urllib.request

    try:
        url = url_file.read_text().strip()
    except OSError:
        return False
    try:
        urllib.request.urlopen(f"{url}/v2/health/live", timeout=2).close()
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False
    return True


def cmd_recover(args: argparse.Namespace) -> int:
    from moltmesh.cli import config_from
    from moltmesh.identity import API_URL_FILE

    config = config_from(args)
    if _node_answers(config.data_dir / API_URL_FILE):
        print(f"a node runs on {config.data_dir}; stop it first", flush=True)
        return 2
    voters = [v.strip() for v in args.voters.split(",") if v.strip()]
    index, term = recover(config.data_dir / "raft", voters)
    print(f"recovered: snapshot at index {index} (term {term}) with voters {', '.join(voters)}")
    return 0
