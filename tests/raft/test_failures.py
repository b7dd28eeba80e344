"""Real processes: concurrent clients on every node with a leader `kill -9` in the middle; the
history is linearizable; the dead voter is replaced; the killed node restarts from its log
(with a torn tail appended, as a crash mid-write leaves it) and catches up; `raft recover`
brings back a group that lost quorum for good."""

from __future__ import annotations

import contextlib
import random
import signal
import struct
import threading
import zlib
from pathlib import Path

import pytest

from moltmesh.cli import main
from moltmesh.mesh import store
from sim.linearizability import Verdict, check
from tests.raft.history import Recorder, client, resolve_unknown_indices
from tests.raft.procs import http, mesh_of, start, status, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def leader_of(nodes) -> object | None:  # type: ignore[no-untyped-def]
    for n in nodes:
        if n.proc.poll() is None and status(n).get("is_leader"):
            return n
    return None


def tear_tail(data_dir: Path) -> None:
    """Append half a record to the last segment: a write the crash interrupted."""
    seg = sorted((data_dir / "raft" / "wal").glob("seg-*.log"))[-1]
    with open(seg, "ab") as f:
        header = struct.pack("<III", 200, zlib.crc32((200).to_bytes(4, "little")), 0)
        f.write(header + b"partial")  # the header made it to disk, most of the payload not


@pytest.mark.parametrize("voters", [3, 5])
def test_linearizable_through_leader_kill_replacement_and_restart(tmp_path, voters):
    seed = random.randrange(2**32)
    print(f"seed {seed}")
    rng = random.Random(seed)
    with mesh_of(tmp_path, voters + 1) as (_dirs, procs, _):
        nodes = list(procs.values())
        wait_for(
            lambda: (
                len(status(nodes[0]).get("voters", [])) == voters
                and status(nodes[0]).get("learners")
            ),
            f"{voters} voters and a learner",
        )
        rec = Recorder()
        stop = threading.Event()
        threads = [threading.Thread(target=client,
                                    args=(rec, i, n, rng.randrange(2**32), stop), daemon=True)
                   for i, n in enumerate(nodes)]  # fmt: skip
        for t in threads:
            t.start()
        wait_for(lambda: len(rec.ops) >= 40, "a first part of the history")
        old = wait_for(lambda: leader_of(nodes), "the leader")
        old_id = store.load(old.data_dir).node_id
        old.stop(signal.SIGKILL)
        rest = [n for n in nodes if n is not old]
        wait_for(lambda: (lead := leader_of(rest)) is not None and lead is not old, "new leader")
        n_before = len(rec.ops)
        wait_for(lambda: len(rec.ops) >= n_before + 40, "writes under the new leader")
        stop.set()
        for t in threads:
            t.join(30)
        # the dead voter is replaced (the learner promoted) after the stabilization period
        wait_for(lambda: (s := status(rest[0])) and old_id not in s["voters"]
                 and len(s["voters"]) == voters, "replacement")  # fmt: skip
        print(f"{len(rec.ops)} operations, {sum(o.ret is None for o in rec.ops)} unknown")
        result = check(resolve_unknown_indices(rec.ops))
        if result.verdict is not Verdict.OK:
            for op in sorted(rec.ops, key=lambda o: o.call):
                print(op)
        assert result.verdict is Verdict.OK, (seed, result.problems[:5])
        # the killed node restarts from its log, past a torn tail, and catches up
        tear_tail(old.data_dir)
        code, _last = http(rest[0], "PUT", "/v1/kv/after-restart", b"1")
        assert code == 200
        seed_addr = (store.mesh_dir(rest[0].data_dir) / "stream-address").read_text().strip()
        with start(old.data_dir, seed_addr) as again:

            def caught_up() -> bool:
                c, _body = http(again, "GET", "/v1/kv/after-restart?consistency=stale")
                return c == 200

            wait_for(caught_up, "the restarted node catches up")
            assert any("torn" in line or "raft.started" in line for line in again.stdout)


def test_raft_recover_restores_a_group_that_lost_quorum(tmp_path):
    with mesh_of(tmp_path, 3) as (_dirs, procs, _):
        nodes = list(procs.values())
        wait_for(lambda: len(status(nodes[0]).get("voters", [])) == 3, "3 voters")
        code, put = http(nodes[0], "PUT", "/v1/kv/keep", b"me")
        assert code == 200, put
        survivor = nodes[2]
        # The survivor must hold the write in its own Raft log, as a voter: a stale read can be
        # served from its follow-stream copy before its log caught up (under load it then knew
        # no membership, ran no election timer and kept its last leader forever).
        wait_for(lambda: (s := status(survivor)).get("member") and len(s["voters"]) == 3
                 and s["applied_index"] >= put["revision"], "in the survivor's log")  # fmt: skip
        for n in nodes[:2]:
            n.stop(signal.SIGKILL)
        wait_for(lambda: not status(survivor).get("leader"), "survivor sees no leader")
        code, body = http(survivor, "PUT", "/v1/kv/keep?timeout=1", b"lost")
        assert code == 503, body
        survivor.stop(signal.SIGKILL)
        sid = store.load(survivor.data_dir).node_id
        assert main(["raft", "recover", "--data-dir", str(survivor.data_dir), "--voters", sid]) == 0
        with contextlib.ExitStack() as stack:
            back = stack.enter_context(start(survivor.data_dir, "127.0.0.1:9"))
            wait_for(lambda: status(back).get("is_leader"), "the survivor leads alone")
            code, got = http(back, "GET", "/v1/kv/keep")
            assert code == 200 and got["value"] == "me"
            assert http(back, "PUT", "/v1/kv/keep", b"again")[0] == 200
