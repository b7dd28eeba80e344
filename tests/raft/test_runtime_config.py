"""The runtime sizes Raft messages for the mesh's frame limit (issue 8)."""

from __future__ import annotations

import pytest

from moltmesh.raft.runtime import MSG_FRACTION_OF_FRAME, TIMINGS, raft_config


@pytest.mark.parametrize("timing", sorted(TIMINGS))
def test_a_raft_message_is_at_most_a_quarter_of_a_frame(timing: str) -> None:
    frame = 1024 * 1024
    rc = raft_config(timing, frame)
    assert rc.max_bytes_per_msg <= frame // MSG_FRACTION_OF_FRAME
    assert rc.election_timeout_min == TIMINGS[timing]().election_timeout_min  # timing kept


def test_a_preset_already_below_the_cap_is_unchanged() -> None:
    assert raft_config("local", 8 * 2**20) == TIMINGS["local"]()
