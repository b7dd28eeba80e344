"""The SWIM membership rules, one test per rule, on the member table (``consensus.swim_state``).

Cluster of five (a..e) seen from ``a`` with memberlist's LAN preset: the suspicion minimum is
4 s (4 × max(1, log10 5) × 1 s), the Lifeguard maximum 24 s, and k = 4 − 2 = 2 confirmations.
"""

from __future__ import annotations

from dataclasses import replace

from consensus.lifeguard import Awareness, remaining_suspicion_time
from consensus.swim_config import SwimConfig, lan
from consensus.swim_messages import MemberState, MemberStatus, Meta, Update, UpdateKind
from consensus.swim_state import MemberTable
from consensus.swim_types import EventKind

S = 1_000_000
MIN = 4 * S
MAX = 24 * S


class Table:
    """A member table of ``a`` with peers b..e, recording its callbacks."""

    def __init__(self, config: SwimConfig | None = None, peers: str = "bcde") -> None:
        self.config = config or lan()
        self.added: list[str] = []
        self.timers: list[tuple[int, str]] = []
        self.t = MemberTable(
            "a",
            Meta("a"),
            0,
            self.config,
            Awareness(self.config.awareness_max_multiplier),
            0,
            self.added.append,
            lambda when, node: self.timers.append((when, node)),
        )
        for p in peers:
            self.t.preload(MemberState(p, MemberStatus.ALIVE, 0, 0, Meta(p)), 0)
        self.added.clear()

    def status(self, node: str) -> MemberStatus:
        return self.t.members[node].status

    def events(self) -> list[tuple[EventKind, str, int]]:
        out = [(e.kind, e.node, e.incarnation) for e in self.t.events]
        self.t.events.clear()
        return out

    def queued(self, node: str) -> Update | None:
        return self.t.broadcasts.pending(node)


def alive(node: str, inc: int, mv: int = 0, meta: Meta | None = None) -> Update:
    return Update(UpdateKind.ALIVE, node, inc, node, mv, meta or Meta(node))


# ---- suspicion ---------------------------------------------------------------------------


def test_suspect_marks_an_alive_member_suspect_with_the_lifeguard_maximum() -> None:
    tb = Table()
    tb.t.suspect("b", 0, "c", 10 * S)
    assert tb.status("b") == MemberStatus.SUSPECT
    assert tb.events() == [(EventKind.SUSPECTED, "b", 0)]
    assert tb.timers == [(10 * S + MAX, "b")]
    assert tb.queued("b") == Update(UpdateKind.SUSPECT, "b", 0, "c")


def test_independent_confirmations_shrink_the_timer_down_to_the_minimum() -> None:
    tb = Table()
    tb.t.suspect("b", 0, "c", 0)
    tb.t.suspect("b", 0, "c", 1 * S)  # the same accuser again: no confirmation
    assert len(tb.timers) == 1
    tb.t.suspect("b", 0, "d", 1 * S)
    assert tb.timers[-1] == (remaining_suspicion_time(1, 2, 0, MIN, MAX), "b")
    assert tb.timers[-1][0] < MAX
    assert tb.queued("b") == Update(UpdateKind.SUSPECT, "b", 0, "d")  # re-broadcast
    tb.t.suspect("b", 0, "e", 2 * S)
    assert tb.timers[-1] == (MIN, "b")
    tb.t.suspect("b", 0, "a", 2 * S)  # k reached
    assert len(tb.timers) == 3
    assert tb.events() == [(EventKind.SUSPECTED, "b", 0)]


def test_without_lifeguard_the_suspicion_lasts_the_minimum() -> None:
    tb = Table(lan().without_lifeguard())
    tb.t.suspect("b", 0, "c", 0)
    assert tb.timers == [(MIN, "b")]


def test_small_clusters_expect_no_confirmations() -> None:
    tb = Table(peers="bc")  # n = 3 < k + 2: the timer is the minimum from the start
    tb.t.suspect("b", 0, "c", 0)
    assert tb.timers == [(MIN, "b")]


def test_suspicion_timeout_declares_the_member_dead_from_us() -> None:
    tb = Table()
    tb.t.suspect("b", 0, "c", 0)
    assert tb.t.suspicion_due("b", MAX)
    tb.t.suspicion_expired("b", MAX)
    assert tb.status("b") == MemberStatus.DEAD
    evs = tb.t.events
    assert [(e.kind, e.source) for e in evs] == [
        (EventKind.SUSPECTED, "c"),
        (EventKind.DEAD, "a"),
    ]
    assert tb.queued("b") == Update(UpdateKind.DEAD, "b", 0, "a")


def test_alive_with_higher_incarnation_clears_the_suspicion() -> None:
    tb = Table()
    tb.t.suspect("b", 0, "c", 0)
    tb.t.alive(alive("b", 1), 1 * S)
    assert tb.status("b") == MemberStatus.ALIVE
    assert not tb.t.suspicion_due("b", MAX)
    assert tb.events()[-1] == (EventKind.ALIVE, "b", 1)
    assert tb.queued("b") == alive("b", 1)


# ---- incarnation ordering ------------------------------------------------------------------


def test_stale_updates_are_ignored() -> None:
    tb = Table()
    tb.t.alive(alive("b", 5), 0)
    tb.events()
    tb.t.suspect("b", 4, "c", 0)  # older than what we know
    tb.t.dead("b", 4, "c", 0)
    tb.t.alive(alive("b", 5), 0)  # not newer
    tb.t.alive(alive("b", 3), 0)
    assert tb.status("b") == MemberStatus.ALIVE
    assert tb.t.members["b"].incarnation == 5
    assert tb.events() == []


def test_suspect_at_a_higher_incarnation_is_accepted() -> None:
    tb = Table()
    tb.t.suspect("b", 7, "c", 0)
    assert (tb.status("b"), tb.t.members["b"].incarnation) == (MemberStatus.SUSPECT, 7)


def test_suspect_at_a_higher_incarnation_restarts_a_stale_suspicion() -> None:
    # Regression: we suspected b at 0 and missed its refutation (ALIVE 1). A suspicion of b
    # at 1, long after ours began, is a new accusation: it must not confirm our stale timer
    # (which would be due at once and kill b before it could refute the new suspicion).
    tb = Table()
    tb.t.suspect("b", 0, "c", 0)
    tb.t.suspect("b", 0, "d", 1 * S)  # one confirmation of the suspicion at 0
    tb.events()
    tb.t.suspect("b", 1, "e", 20 * S)
    assert (tb.status("b"), tb.t.members["b"].incarnation) == (MemberStatus.SUSPECT, 1)
    assert tb.timers[-1] == (20 * S + MAX, "b")  # a fresh timer, at the Lifeguard maximum
    assert not tb.t.suspicion_due("b", remaining_suspicion_time(1, 2, 0, MIN, MAX))
    assert tb.events() == [(EventKind.SUSPECTED, "b", 1)]
    assert tb.queued("b") == Update(UpdateKind.SUSPECT, "b", 1, "e")
    tb.t.suspect("b", 1, "c", 21 * S)  # confirmations now count towards the new one
    assert tb.timers[-1] == (20 * S + remaining_suspicion_time(1, 2, 0, MIN, MAX), "b")


def test_dead_at_a_higher_incarnation_than_our_suspicion_is_only_a_suspicion() -> None:
    tb = Table()
    tb.t.suspect("b", 0, "c", 0)
    tb.events()
    tb.t.dead("b", 1, "d", 30 * S)  # our suspicion is old, but of a refuted incarnation
    assert (tb.status("b"), tb.t.members["b"].incarnation) == (MemberStatus.SUSPECT, 1)
    assert tb.events() == [(EventKind.SUSPECTED, "b", 1)]
    tb.t.dead("b", 1, "e", 30 * S + MIN)  # suspected at 1 for the minimum: believed
    assert tb.events() == [(EventKind.DEAD, "b", 1)]


def test_alive_at_the_same_incarnation_does_not_clear_a_suspicion() -> None:
    tb = Table()
    tb.t.suspect("b", 2, "c", 0)
    tb.t.alive(alive("b", 2), 0)
    assert tb.status("b") == MemberStatus.SUSPECT


def test_dead_about_a_member_we_hold_alive_is_taken_as_a_suspicion() -> None:
    tb = Table()
    tb.t.dead("b", 0, "c", 0)
    assert tb.status("b") == MemberStatus.SUSPECT
    assert tb.events() == [(EventKind.SUSPECTED, "b", 0)]
    assert tb.queued("b") == Update(UpdateKind.SUSPECT, "b", 0, "c")
    tb.t.dead("b", 0, "d", 1 * S)  # before our minimum timeout: only a confirmation
    assert tb.status("b") == MemberStatus.SUSPECT
    assert tb.timers[-1][0] < MAX
    tb.t.dead("b", 0, "e", MIN)  # suspected for the minimum: the death is believed
    assert tb.status("b") == MemberStatus.DEAD
    assert tb.events() == [(EventKind.DEAD, "b", 0)]
    assert tb.queued("b") == Update(UpdateKind.DEAD, "b", 0, "e")


def test_an_outbid_accusation_of_ourselves_re_disseminates_our_alive() -> None:
    tb = Table()
    tb.t.suspect("a", 0, "b", 0)
    assert tb.t.me.incarnation == 1
    tb.t.broadcasts.take(1400, limit=1)  # our refutation was sent (and missed by c)
    assert tb.queued("a") is None
    tb.t.suspect("a", 0, "c", 1 * S)
    assert tb.t.me.incarnation == 1  # no new incarnation, no health penalty
    assert tb.t.awareness.score == 1
    assert tb.queued("a") == alive("a", 1)


def test_dead_member_comes_back_only_with_a_higher_incarnation() -> None:
    tb = Table()
    tb.t.suspect("b", 3, "c", 0)
    tb.t.dead("b", 3, "c", MIN)
    assert tb.events() == [(EventKind.SUSPECTED, "b", 3), (EventKind.DEAD, "b", 3)]
    tb.t.alive(alive("b", 3), 0)
    tb.t.suspect("b", 3, "d", 0)  # a dead member is not suspected again
    tb.t.dead("b", 3, "d", 0)  # nor killed twice
    assert tb.events() == []
    tb.t.alive(alive("b", 4), 5 * S)
    assert tb.status("b") == MemberStatus.ALIVE
    assert tb.events() == [(EventKind.ALIVE, "b", 4)]


def test_dead_from_the_member_itself_means_it_left() -> None:
    tb = Table()
    tb.t.dead("b", 0, "b", 0)
    assert tb.status("b") == MemberStatus.LEFT
    assert tb.events() == [(EventKind.LEFT, "b", 0)]
    tb.t.alive(alive("b", 1), 0)  # rejoined after leaving
    assert tb.events() == [(EventKind.JOINED, "b", 1)]


def test_unknown_members_join_on_alive_and_are_ignored_otherwise() -> None:
    tb = Table()
    tb.t.suspect("x", 0, "b", 0)
    tb.t.dead("y", 0, "b", 0)
    assert "x" not in tb.t.members and "y" not in tb.t.members
    tb.t.alive(alive("z", 2), 0)
    assert tb.events() == [(EventKind.JOINED, "z", 2)]
    assert tb.added == ["z"]
    assert tb.t.peers[-1] == "z"


# ---- refutation ----------------------------------------------------------------------------


def test_suspicion_of_ourselves_is_refuted_with_a_higher_incarnation() -> None:
    tb = Table()
    tb.t.suspect("a", 0, "b", 0)
    assert tb.t.me.incarnation == 1
    assert tb.t.me.status == MemberStatus.ALIVE
    assert tb.t.awareness.score == 1  # being suspected hints at our own poor health
    assert tb.queued("a") == alive("a", 1)
    tb.t.dead("a", 9, "c", 0)  # outbid whatever incarnation the accuser used
    assert tb.t.me.incarnation == 10
    assert tb.events() == []


def test_alive_about_ourselves_is_refuted_when_newer_or_different() -> None:
    tb = Table()
    tb.t.alive(alive("a", 0), 0)  # identical: nothing to do
    assert tb.t.me.incarnation == 0 and len(tb.t.broadcasts) == 0
    tb.t.alive(alive("a", 0, meta=Meta("elsewhere")), 0)  # an impostor or our former self
    assert tb.t.me.incarnation == 1
    tb.t.alive(alive("a", 4, mv=3), 0)
    assert (tb.t.me.incarnation, tb.t.me.meta_version) == (5, 3)
    assert tb.queued("a") == alive("a", 5, mv=3)


def test_a_leaving_member_never_refutes() -> None:
    tb = Table()
    tb.t.leave(0)
    assert tb.queued("a") == Update(UpdateKind.DEAD, "a", 0, "a")
    tb.t.suspect("a", 0, "b", 0)
    tb.t.dead("a", 0, "b", 0)
    tb.t.alive(alive("a", 3), 0)
    assert tb.t.me.incarnation == 0
    assert tb.t.me.status == MemberStatus.LEFT


# ---- metadata versions ---------------------------------------------------------------------


def test_higher_meta_version_replaces_metadata_at_the_same_incarnation() -> None:
    tb = Table()
    heavy = Meta("b", tier="heavy")
    tb.t.alive(alive("b", 0, mv=1, meta=heavy), 0)
    assert tb.t.members["b"].meta == heavy
    assert tb.events() == [(EventKind.UPDATED, "b", 0)]
    tb.t.alive(alive("b", 0, mv=1, meta=Meta("b", tier="light")), 0)  # same version: ignored
    tb.t.alive(alive("b", 0, mv=0, meta=Meta("b")), 0)  # older version: ignored
    assert tb.t.members["b"].meta == heavy
    assert tb.events() == []


def test_metadata_of_a_suspect_member_updates_without_clearing_the_suspicion() -> None:
    tb = Table()
    tb.t.suspect("b", 0, "c", 0)
    tb.t.alive(alive("b", 0, mv=1, meta=Meta("b", cpu_load=90)), 0)
    assert tb.status("b") == MemberStatus.SUSPECT
    assert tb.t.members["b"].meta.cpu_load == 90
    assert tb.events()[-1] == (EventKind.UPDATED, "b", 0)


def test_metadata_over_budget_is_refused() -> None:
    tb = Table(replace(lan(), meta_budget=64))
    big = Meta("b", models=tuple(f"model-{i}" for i in range(20)))
    tb.t.alive(alive("b", 1, meta=big), 0)
    assert tb.t.members["b"].incarnation == 0
    tb.t.alive(alive("new", 0, meta=big), 0)
    assert "new" not in tb.t.members


def test_set_meta_bumps_the_version_and_queues_it() -> None:
    tb = Table()
    tb.t.set_meta(Meta("a", tier="standard"))
    assert tb.t.me.meta_version == 1
    assert tb.queued("a") == alive("a", 0, mv=1, meta=Meta("a", tier="standard"))


# ---- push-pull merge -----------------------------------------------------------------------


def test_merge_of_a_remote_state() -> None:
    tb = Table()
    remote = (
        MemberState("b", MemberStatus.DEAD, 0, 0, Meta("b")),  # dead there: suspect here
        MemberState("c", MemberStatus.LEFT, 0, 0, Meta("c")),
        MemberState("d", MemberStatus.SUSPECT, 0, 0, Meta("d")),
        MemberState("f", MemberStatus.ALIVE, 3, 1, Meta("f", tier="light")),
        MemberState("a", MemberStatus.DEAD, 2, 0, Meta("a")),  # us: refute
    )
    tb.t.merge(remote, "e", 0)
    assert [tb.status(n) for n in "bcdf"] == [
        MemberStatus.SUSPECT,
        MemberStatus.LEFT,
        MemberStatus.SUSPECT,
        MemberStatus.ALIVE,
    ]
    assert tb.t.members["f"].meta.tier == "light"
    assert tb.t.me.incarnation == 3
    assert {e.kind for e in tb.t.events} == {
        EventKind.SUSPECTED,
        EventKind.LEFT,
        EventKind.JOINED,
    }


def test_merged_suspicion_does_not_confirm_ours() -> None:
    # Regression: a push-pull peer holding b SUSPECT may only have heard it from the same
    # accuser; counting the peer as an independent confirmation shrank the Lifeguard timer.
    tb = Table()
    tb.t.suspect("b", 0, "c", 0)
    for peer in "de":
        tb.t.merge((MemberState("b", MemberStatus.SUSPECT, 0, 0, Meta("b")),), peer, 1 * S)
        tb.t.merge((MemberState("b", MemberStatus.DEAD, 0, 0, Meta("b")),), peer, 1 * S)
    assert tb.timers == [(MAX, "b")]
    assert tb.t.suspicions["b"].confirmations == 0


def test_full_state_lists_every_record_in_insertion_order() -> None:
    tb = Table()
    tb.t.suspect("c", 0, "b", 0)
    tb.t.suspicion_expired("c", MAX)
    states = tb.t.full_state()
    assert [s.node for s in states] == ["a", "b", "c", "d", "e"]
    assert states[2].status == MemberStatus.DEAD
