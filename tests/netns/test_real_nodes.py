"""Real ``moltmesh node`` processes in separate namespaces: joining over the bed's bridge.

The CA holder runs on h0's bridge address; a new device on h1 joins with a token that names that
address, so every byte of the join crosses the bridge. A cut with TCP reset between h0 and h2
makes h2's join fail with a clear error (connection refused) instead of hanging.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from moltmesh.mesh import store
from tests.netns.bed import NetBed
from tests.netns.nodes import RealNode, moltmesh

pytestmark = [pytest.mark.netns, pytest.mark.integration]

MESH_PORT = "8471"


def test_a_device_joins_over_the_bridge_and_a_reset_cut_refuses_the_join(
    make_bed: Callable[[int], NetBed], tmp_path: Path
) -> None:
    bed = make_bed(3)
    holder_host, joiner_host, cut_host = bed.hosts
    holder_dir, joiner_dir, cut_dir = tmp_path / "h0", tmp_path / "h1", tmp_path / "h2"
    init = moltmesh(bed, holder_host, "mesh", "init", "--data-dir", str(holder_dir))
    assert init.returncode == 0, init.stderr
    holder = RealNode.start(bed, holder_host, holder_dir, "--mesh-host", holder_host.address,
                            "--mesh-port", MESH_PORT)  # fmt: skip
    holder.wait_serving()
    address = f"{holder_host.address}:{MESH_PORT}"
    tokens = []
    for _ in range(2):
        made = moltmesh(bed, holder_host, "mesh", "token", "--data-dir", str(holder_dir),
                        "--address", address)  # fmt: skip
        assert made.returncode == 0, made.stderr
        tokens.append(made.stdout.strip())

    joiner = RealNode.start(bed, joiner_host, joiner_dir, "--mesh-host", joiner_host.address,
                            "--mesh-port", MESH_PORT, "--token", tokens[0])  # fmt: skip
    assert joiner.wait_line("joined mesh").split()[2] == store.load(holder_dir).mesh_id
    joiner.wait_serving()
    assert store.load(joiner_dir).ca_fingerprint == store.load(holder_dir).ca_fingerprint

    bed.cut(holder_host, cut_host, reset=True)
    refused = moltmesh(bed, cut_host, "node", "--data-dir", str(cut_dir), "--no-bundled-models",
                       "--token", tokens[1], timeout=30)  # fmt: skip
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "cannot join" in refused.stderr and "Errno 111" in refused.stderr, (
        refused.stderr
    )  # ECONNREFUSED
    assert not store.has_mesh(cut_dir)

    for node in (joiner, holder):
        assert node.stop() == 0
