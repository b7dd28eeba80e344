"""Devices behind one address (a NAT, a provisioning bench) joining at once: the CA holder takes
2 at a time from one address and closes the others before challenging them; they try again
after a back-off and all join (review11 M1: they failed with a bare "stream closed")."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from moltmesh.identity import load_or_create_identity
from moltmesh.mesh.drops import DropReason, Transport
from moltmesh.mesh.join import join
from tests.mesh.helpers import init_holder, mesh_config, serve

pytestmark = pytest.mark.both_loops


async def test_six_devices_behind_one_address_all_join(tmp_path: Path) -> None:
    holder = await serve(init_holder(tmp_path / "a"), mesh_config())
    try:
        tokens = holder.state.tokens()
        now = time.time()
        made = [tokens.create(holder.state.ca_fingerprint, holder.address, 600, now)
                for _ in range(6)]  # fmt: skip
        joins = [join(token, load_or_create_identity(tmp_path / f"d{i}"), tmp_path / f"d{i}",
                      mesh_config()) for i, token in enumerate(made)]  # fmt: skip
        states = await asyncio.wait_for(asyncio.gather(*joins), 60)
        assert len({s.node_cert.serial_number for s in states}) == 6
        assert holder.drops.get(DropReason.JOIN_LIMIT, Transport.TCP) >= 1  # some waited
    finally:
        await holder.streams.close()
