"""The driver's proposal deadlines (``moltmesh.raft.outcomes.Deadlines``): whatever order the
deadlines come in (one timeout for most writes, others mixed in), every waiting proposal
expires exactly once, at its own deadline and not before, and answered ones are dropped."""

from __future__ import annotations

import asyncio
import random

from moltmesh.raft.outcomes import Deadlines, _Proposal


async def test_proposals_expire_at_their_own_deadline_in_any_arrival_order() -> None:
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    loop = asyncio.get_running_loop()
    q = Deadlines()
    due: dict[int, float] = {}  # id(proposal) -> deadline
    waiting: list[_Proposal] = []
    now = 0.0
    for step in range(2000):
        now += rng.random() * 0.01
        # mostly one timeout (deadlines in order), sometimes a shorter or longer one
        timeout = 5.0 if rng.random() < 0.8 else rng.choice([0.001, 0.5, 60.0])
        p = _Proposal(1, loop.create_future())
        q.add(now + timeout, p)
        due[id(p)] = now + timeout
        waiting.append(p)
        answered = rng.choice(waiting).future
        if rng.random() < 0.7 and not answered.done():  # an answer arrives for it
            answered.set_result(None)
        if rng.random() < 0.3:
            probe = now + rng.random() * 10
            expired, nxt = q.pop_expired(probe)
            for e in expired:
                assert not e.future.done() and due[id(e)] <= probe, f"seed {seed}, step {step}"
                e.future.set_result(None)
            left = [x for x in waiting if not x.future.done()]
            assert all(due[id(x)] > probe for x in left), f"seed {seed}, step {step}"
            assert nxt == (min(due[id(x)] for x in left) if left else None), f"seed {seed}"
            waiting = left
    expired, nxt = q.pop_expired(float("inf"))
    assert {id(e) for e in expired} == {id(x) for x in waiting if not x.future.done()}
    assert nxt is None and len(q) == 0, f"seed {seed}"
