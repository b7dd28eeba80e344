"""Grouping simulated KV writes into Raft entries by the node driver's rules.

The node's Raft driver (``moltmesh.raft.driver.RaftDriver._flush_proposals``) proposes the KV
commands that arrive in one turn of its loop as one ``Batch`` entry while they may be batched
(``consensus.kv_types.batch_key``) and touch distinct keys; a repeated key, a command that may
not be batched, ``MAX_BATCH_COMMANDS`` commands or ``BATCH_BYTES`` of them start the next
entry, and a group of one is proposed as the plain command. ``sim.kv_clients`` holds the writes
aimed at one node for ``KvClientSpec.batch_ms`` of virtual time and groups them here, so the
simulator drives the same entries the node writes (``sim`` may not import the driver itself:
DESIGN §1).

Pure functions and counters: no clock, no randomness.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from consensus.kv_types import (
    MAX_BATCH_COMMANDS,
    MAX_COMMAND_BYTES,
    Batch,
    KvCommand,
    batch_key,
    encode_command,
)

BATCH_BYTES = MAX_COMMAND_BYTES // 2
"""Encoded commands one ``Batch`` entry carries at most (the driver's ``BATCH_BYTES``)."""
BIN_HEADER_BYTES = 5
"""msgpack's bin header, at most: what each command adds to a batch besides its bytes."""


def group_commands(
    commands: Sequence[tuple[KvCommand, bytes]],
    max_commands: int = MAX_BATCH_COMMANDS,
    max_bytes: int = BATCH_BYTES,
) -> list[list[int]]:
    """Positions in ``commands`` (each ``(command, its encoded bytes)``, in proposal order)
    grouped into entries by the driver's rules; see the module docstring. Every position
    appears exactly once, in order; a group of more than one holds batchable commands on
    distinct keys, at most ``max_commands`` of them and ``max_bytes`` of encoded commands."""
    groups: list[list[int]] = []
    group: list[int] = []
    keys: set[str] = set()
    size = 0
    for pos, (cmd, data) in enumerate(commands):
        key = batch_key(cmd)
        if group and (
            key is None or key in keys or len(group) == max_commands or size + len(data) > max_bytes
        ):
            groups.append(group)
            group, size = [], 0
            keys.clear()
        if key is None:
            groups.append([pos])
            continue
        group.append(pos)
        keys.add(key)
        size += len(data) + BIN_HEADER_BYTES
    if group:
        groups.append(group)
    return groups


def entry_data(datas: Sequence[bytes]) -> bytes:
    """The data of the entry proposing the encoded commands ``datas`` (one group): the
    command itself when alone, else the ``Batch`` of them."""
    if len(datas) == 1:
        return datas[0]
    return encode_command(Batch(tuple(datas)))


@dataclass(slots=True)
class BatchStats:
    """What the clients' batching did over a run (all zero when it is off)."""

    entries: int = 0
    """Entries proposed from held writes (batches and single commands alike)."""
    batch_entries: int = 0
    """Of those, ``Batch`` entries (two commands or more)."""
    batched_writes: int = 0
    """Writes proposed inside ``Batch`` entries."""
    max_batch: int = 0
    """Most writes in one entry."""
    batches_applied: int = 0
    """``Batch`` entries whose proposer applied them and handed each member its result."""
    dropped: int = 0
    """Held writes never proposed because their node crashed first."""

    def proposed(self, writes: int) -> None:
        """Count one entry proposed with ``writes`` held writes."""
        self.entries += 1
        self.max_batch = max(self.max_batch, writes)
        if writes > 1:
            self.batch_entries += 1
            self.batched_writes += writes
