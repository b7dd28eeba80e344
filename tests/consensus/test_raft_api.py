"""The driver-facing contract: config validation, Ready/advance, deadlines, restart, determinism."""

from __future__ import annotations

import hashlib
import random
import subprocess
import sys
from pathlib import Path

import pytest

from consensus.errors import ConfigError, LocalProtocolError
from consensus.messages import (
    AppendEntries,
    ConfChange,
    ConfChangeType,
    Entry,
    EntryKind,
    HardState,
    VoteRequest,
)
from consensus.raft import RaftConfig, RaftNode, Role
from consensus.storage import MemoryStorage
from tests.consensus.raft_net import Net, cfg

IDS3 = ["a", "b", "c"]
ROOT = Path(__file__).resolve().parents[2]


# --- config -------------------------------------------------------------------------------------


@pytest.mark.parametrize("preset", [RaftConfig.lan, RaftConfig.local, RaftConfig.wan])
def test_presets_are_valid(preset: object) -> None:
    conf = preset()  # type: ignore[operator]
    assert conf.validate() is conf
    assert conf.election_timeout_min > 2 * conf.heartbeat_interval


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"election_timeout_min": 10_000, "heartbeat_interval": 10_000}, "heartbeat"),
        ({"election_timeout_min": 300_000, "election_timeout_max": 300_000}, "below"),
        ({"election_timeout_min": 400_000, "election_timeout_max": 300_000}, "below"),
        ({"heartbeat_interval": 0}, "positive"),
        ({"election_timeout_min": -5}, "positive"),
        ({"max_inflight_msgs": 0}, "positive"),
        ({"max_entries_per_msg": -1}, "positive"),
        ({"max_bytes_per_msg": 1 << 30}, "frame"),
        ({"heartbeat_interval": 1.5}, "integer"),
        ({"pre_vote": 1}, "bool"),
    ],
)
def test_validate_rejects_nonsense_with_a_clear_message(changes: dict, words: str) -> None:
    conf = _raw(**changes)
    with pytest.raises(ConfigError, match=words):
        conf.validate()


def _raw(**changes: object) -> RaftConfig:
    base = RaftConfig.local()
    fields = {f: getattr(base, f) for f in base.__dataclass_fields__}
    fields.update(changes)
    return RaftConfig(**fields)  # type: ignore[arg-type]


def test_node_refuses_an_invalid_config() -> None:
    with pytest.raises(ConfigError):
        RaftNode("a", IDS3, MemoryStorage(), _raw(heartbeat_interval=0), random.Random(0))


def test_a_node_without_membership_waits_to_be_contacted() -> None:
    node = RaftNode("a", [], MemoryStorage(), RaftConfig.local(), random.Random(0))
    assert node.voters == () and node.next_deadline() is None
    node.campaign(0)
    assert node.role is Role.FOLLOWER and not node.has_ready()


def test_raft_node_offers_the_core_protocol() -> None:
    node = RaftNode("a", IDS3, MemoryStorage(), RaftConfig.local(), random.Random(0))
    for name in ("step", "tick", "next_deadline", "has_ready", "ready"):
        assert callable(getattr(node, name)), name
    assert node.id == "a"


# --- Ready / advance ----------------------------------------------------------------------------


def test_ready_carries_state_to_persist_with_the_messages_that_depend_on_it() -> None:
    node = RaftNode("a", IDS3, MemoryStorage(), cfg(pre_vote=False), random.Random(0))
    assert not node.has_ready()
    node.campaign(0)
    assert node.has_ready()
    rd = node.ready()
    assert rd.hard_state == HardState(term=1, vote="a", commit=0)
    assert all(isinstance(m, VoteRequest) for m in rd.messages)
    assert not node.has_ready()  # outstanding until advance
    with pytest.raises(LocalProtocolError):
        node.ready()
    node.advance(rd)
    assert not node.has_ready()


def test_hard_state_appears_only_when_it_changed() -> None:
    st = MemoryStorage()
    node = RaftNode("c", IDS3, st, cfg(pre_vote=False), random.Random(0))
    node.step(VoteRequest("a", "c", 2, 0, 0), 0)
    rd = node.ready()
    assert rd.hard_state is not None
    node.advance(rd)
    node.step(VoteRequest("a", "c", 2, 0, 0), 0)  # the same request again
    rd = node.ready()
    assert rd.hard_state is None and len(rd.messages) == 1
    node.advance(rd)


def test_advance_requires_the_last_ready() -> None:
    node = RaftNode("a", IDS3, MemoryStorage(), cfg(), random.Random(0))
    node.campaign(0)
    rd = node.ready()
    with pytest.raises(LocalProtocolError):
        node.advance(type(rd)())
    node.advance(rd)


def test_follower_ready_hands_out_entries_then_commits_them() -> None:
    st = MemoryStorage()
    node = RaftNode("b", IDS3, st, cfg(), random.Random(0))
    ents = (Entry(1, 1, EntryKind.NOOP), Entry(2, 1, data=b"x"))
    node.step(AppendEntries("a", "b", 1, 0, 0, ents, commit=2), 0)
    rd = node.ready()
    assert rd.entries == list(ents) and rd.committed == list(ents)
    assert rd.hard_state == HardState(term=1, vote=None, commit=2)
    st.append(rd.entries)
    st.set_hard_state(rd.hard_state)
    node.advance(rd)
    assert node.applied_index == 2 and node.last_index == 2
    assert not node.has_ready()


def test_steps_between_ready_and_advance_wait_for_the_next_ready() -> None:
    st = MemoryStorage()
    node = RaftNode("b", IDS3, st, cfg(), random.Random(0))
    node.step(AppendEntries("a", "b", 1, 0, 0, (Entry(1, 1),), commit=0), 0)
    rd1 = node.ready()
    # A conflicting append arrives while rd1 is being persisted.
    node.step(AppendEntries("c", "b", 2, 0, 0, (Entry(1, 2),), commit=1), 5)
    st.append(rd1.entries)
    node.advance(rd1)
    rd2 = node.ready()
    assert rd2.entries == [Entry(1, 2)]  # the replaced entry is still to be persisted
    assert rd2.committed == [Entry(1, 2)]
    st.append(rd2.entries)
    node.advance(rd2)
    assert st.all_entries() == [Entry(1, 2)]


# --- timers -------------------------------------------------------------------------------------


def test_leader_deadline_is_its_next_heartbeat_or_quorum_check() -> None:
    net = Net(IDS3, seed=1)
    lead = net.wait_leader()
    conf = net.config
    deadline = net[lead].next_deadline()
    assert deadline is not None and net.now < deadline <= net.now + conf.heartbeat_interval


def test_late_tick_fires_each_timer_once() -> None:
    node = RaftNode("a", IDS3, MemoryStorage(), cfg(), random.Random(0))
    node.tick(10**12)  # far beyond the deadline: one election, not thousands
    assert node.role is Role.PRE_CANDIDATE
    assert len(node.ready().messages) == 2


def test_non_voter_never_campaigns() -> None:
    node = RaftNode("z", IDS3, MemoryStorage(), cfg(), random.Random(0))
    assert node.next_deadline() is None
    node.campaign(0)
    assert node.role is Role.FOLLOWER


# --- restart and determinism --------------------------------------------------------------------


def test_restarted_node_reapplies_committed_entries_after_its_applied_index() -> None:
    net = Net(IDS3, seed=4)
    lead = net.wait_leader()
    for k in range(5):
        net.propose(lead, bytes([k]))
    net.advance(net.config.heartbeat_interval)
    f = next(i for i in IDS3 if i != lead)
    st = net.storages[f]
    again = RaftNode(f, IDS3, st, net.config, random.Random(0), applied=3)
    assert again.term == net[f].term and again.last_index == net[f].last_index
    rd = again.ready()
    assert [e.index for e in rd.committed] == list(range(4, st.hard_state.commit + 1))


def trace_digest(seed: int) -> str:
    """A run touching every feature (election, replication, a learner joining, compaction and
    InstallSnapshot, ReadIndex, leadership transfer), hashed."""
    net = Net(["a", "b", "c", "d", "e"], seed=seed)
    lead = net.wait_leader()
    for k in range(10):
        net.propose(lead, bytes([k]))
    net.compact(lead)
    net.add_node("f")
    net[lead].propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER, "f"), net.now)
    net.deliver()
    net.isolate(lead)
    net.run_until(lambda: net.leader() not in (None, lead))
    new = net.wait_leader()
    net[new].read_index(b"r", net.now)
    net.heal()
    net.advance(net.config.election_timeout_max)
    net[new].transfer_leadership(lead, net.now)
    net.advance(net.config.election_timeout_max)
    return hashlib.sha256(repr((net.delivered, net.read_states)).encode()).hexdigest()


def test_same_seed_gives_the_same_trace() -> None:
    assert trace_digest(7) == trace_digest(7)
    assert trace_digest(7) != trace_digest(8)


def test_trace_does_not_depend_on_the_hash_seed() -> None:
    code = "from tests.consensus.test_raft_api import trace_digest; print(trace_digest(7))"
    digests = {
        subprocess.run(
            [sys.executable, "-c", code],
            cwd=ROOT,
            env={"PYTHONHASHSEED": hs, "PATH": ""},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for hs in ("0", "12345")
    }
    assert len(digests) == 1 and digests == {trace_digest(7)}
