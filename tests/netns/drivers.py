"""Start the test drivers inside a bed's host: discovery-only, or the mesh met by mDNS."""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

from tests.netns.bed import Host, NetBed
from tests.netns.procs import JsonLinesProcess

REPO = Path(__file__).resolve().parents[2]


def start_driver(
    bed: NetBed,
    host: Host,
    node: str,
    mesh: str,
    *,
    interfaces: str = "all",
    probe: bool = False,
    extra: tuple[str, ...] = (),
) -> JsonLinesProcess:
    """Run ``tests.netns.discovery_driver`` inside ``host``; it is killed with the bed."""
    argv = [sys.executable, "-m", "tests.netns.discovery_driver", "--node", node,
            "--mesh", mesh, "--interfaces", interfaces, *(() if probe else ("--no-probe",)),
            *extra]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO)}
    return JsonLinesProcess.start(
        f"{host.label}:{node}", functools.partial(bed.popen, host), argv, cwd=REPO, env=env
    )


def start_mesh_driver(
    bed: NetBed,
    host: Host,
    data_dir: Path,
    *,
    expect_peers: int,
    seed: int,
    preset: str = "local",
    label: str = "",
) -> JsonLinesProcess:
    """Run ``tests.netns.mesh_driver`` for the credentials in ``data_dir`` inside ``host``."""
    argv = [sys.executable, "-m", "tests.netns.mesh_driver", "--data-dir", str(data_dir),
            "--host", host.address, "--expect-peers", str(expect_peers), "--seed", str(seed),
            "--preset", preset]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO)}
    return JsonLinesProcess.start(
        f"{host.label}:{label or data_dir.name}", functools.partial(bed.popen, host), argv,
        cwd=REPO, env=env,
    )  # fmt: skip
