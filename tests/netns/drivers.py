"""Start the discovery-only driver (``tests.netns.discovery_driver``) inside a bed's host."""

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
