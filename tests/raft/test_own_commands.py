"""The leader applies the KV commands it proposed itself without decoding their entries again
(issue 8, throughput); followers decode theirs; every voter ends in the same state."""

from __future__ import annotations

import asyncio

from consensus.kv import KvStore
from tests.raft.localnet import eventually, three_voters_led_by_a


async def test_the_leader_applies_its_own_commands_undecoded(tmp_path, monkeypatch) -> None:
    async with three_voters_led_by_a(tmp_path) as net:
        a = net.nodes["a"]
        decoded: dict[int, int] = {}  # id(store) -> entries it decoded
        inner = KvStore.apply

        def counting(store: KvStore, index: int, data: bytes):  # type: ignore[no-untyped-def]
            decoded[id(store)] = decoded.get(id(store), 0) + 1
            return inner(store, index, data)

        monkeypatch.setattr(KvStore, "apply", counting)
        await asyncio.gather(*(a.kv.put(f"k{i}", f"v{i}".encode()) for i in range(40)))
        await a.kv.cas("k0", (await a.kv.get("k0"))[0].mod_revision, b"new")  # type: ignore[union-attr]
        await a.kv.delete("k1")
        last = a.driver.node.last_index
        await eventually(lambda: all(n.driver.kv.applied_index >= last for n in net.nodes.values()),
                         10, "every voter applied every write")  # fmt: skip
        assert decoded.get(id(a.driver.kv), 0) == 0
        for name in ("b", "c"):
            assert decoded[id(net.nodes[name].driver.kv)] >= 42
        states = [n.driver.kv.snapshot() for n in net.nodes.values()]
        assert states[0] == states[1] == states[2]
