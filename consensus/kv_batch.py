"""Which KV proposals share a Raft entry: the grouping rule of ``Batch`` entries.

A proposer (the node's Raft driver; the simulator's clients) hands over the commands proposed
together, in proposal order. Runs of commands that may be batched (``batch_key``) and touch
distinct keys share one entry; a repeated key, a command that may not be batched (it goes
alone), ``MAX_BATCH_COMMANDS`` commands or ``max_bytes`` of encoded commands start the next
entry. A group of one is proposed as the plain command (``entry_data``), so a lone write's
entry is what it was before batching.

Pure functions: no clock, no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence

from consensus.kv_types import (
    MAX_BATCH_COMMANDS,
    MAX_COMMAND_BYTES,
    Cas,
    Delete,
    KvCommand,
    Put,
    batch_key,
    encode_batch,
)

BATCH_BYTES = MAX_COMMAND_BYTES // 2
"""Encoded commands one ``Batch`` entry carries at most by default (a larger one goes alone)."""
BIN_HEADER_BYTES = 5
"""msgpack's bin header, at most: what each command adds to a batch besides its bytes."""


def group_commands(
    commands: Sequence[tuple[KvCommand | None, bytes]],
    max_commands: int = MAX_BATCH_COMMANDS,
    max_bytes: int = BATCH_BYTES,
) -> list[list[int]]:
    """Positions in ``commands`` (each ``(command or None when only its bytes are known, its
    encoded bytes)``, in proposal order) grouped into entries; see the module docstring.
    Every position appears exactly once, in order; a group of more than one holds batchable
    commands on distinct keys, at most ``max_commands`` of them and ``max_bytes`` of
    encoded commands (msgpack headers counted)."""
    groups: list[list[int]] = []
    group: list[int] = []
    keys: set[str] = set()
    size = 0
    for pos, (cmd, data) in enumerate(commands):
        t = type(cmd)
        key = cmd.key if t is Put or t is Delete or t is Cas else _key_or_none(cmd)  # type: ignore[union-attr]
        cost = len(data) + BIN_HEADER_BYTES
        if group and (
            key is None or key in keys or len(group) == max_commands or size + cost > max_bytes
        ):
            groups.append(group)
            group, size = [], 0
            keys.clear()
        if key is None:
            groups.append([pos])
            continue
        group.append(pos)
        keys.add(key)
        size += cost
    if group:
        groups.append(group)
    return groups


def _key_or_none(cmd: KvCommand | None) -> str | None:
    return None if cmd is None else batch_key(cmd)


def entry_data(datas: Sequence[bytes]) -> bytes:
    """The data of the entry proposing the encoded commands ``datas`` (one group): the
    command itself when alone, else the ``Batch`` of them."""
    if len(datas) == 1:
        return datas[0]
    return encode_batch(datas)
