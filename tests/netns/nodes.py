"""Real ``moltmesh`` processes inside a bed's hosts: ``moltmesh node`` and one-shot commands.

    node = RealNode.start(bed, host, data_dir, "--mesh-host", host.address, "--mesh-port", "8471")
    node.wait_serving()
    out = moltmesh(bed, host, "mesh", "token", "--data-dir", str(data_dir))
    node.stop()

Each command runs inside the host's namespace, so it reaches the others only over the bed's
bridge (and through its cuts). Processes are killed with the bed in any case.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from tests.netns.bed import Host, NetBed

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 60.0


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO)}


def moltmesh(
    bed: NetBed, host: Host, *args: str, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """Run ``moltmesh ARGS`` to completion inside ``host``."""
    argv = ["ip", "netns", "exec", host.ns, sys.executable, "-m", "moltmesh", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=_env(),
                          cwd=REPO)  # fmt: skip


def mesh_view(bed: NetBed, host: Host, data_dir: Path) -> dict[str, str]:
    """Member id → status as the running node of ``data_dir`` sees it (``moltmesh status``,
    run inside ``host``), itself excluded; empty while the node cannot answer."""
    done = moltmesh(bed, host, "status", "--data-dir", str(data_dir), "--json")
    if done.returncode != 0:
        return {}
    return {m["node"]: m["status"] for m in json.loads(done.stdout)["members"] if not m["self"]}


def wait_view(
    bed: NetBed,
    host: Host,
    data_dir: Path,
    predicate: Callable[[dict[str, str]], bool],
    what: str,
    timeout: float = 60.0,
) -> dict[str, str]:
    """Read the view until ``predicate`` holds (each read is one ``status`` process, which
    takes longer than any poll interval would); fails naming ``what`` and the last view after
    ``timeout``."""
    deadline = time.monotonic() + timeout
    view = mesh_view(bed, host, data_dir)
    while not predicate(view):
        if time.monotonic() > deadline:
            raise AssertionError(f"{host.label} never saw {what}; last view {view}")
        view = mesh_view(bed, host, data_dir)
    return view


class RealNode:
    """A ``moltmesh node`` process inside a host; stdout lines collected as they come."""

    def __init__(self, proc: subprocess.Popen[str], host: Host, data_dir: Path) -> None:
        self.proc = proc
        self.host = host
        self.data_dir = data_dir
        self.stdout: list[str] = []
        self._cond = threading.Condition()
        self._eof = False
        self._reader = threading.Thread(target=self._pump, daemon=True)
        self._reader.start()

    @classmethod
    def start(
        cls, bed: NetBed, host: Host, data_dir: Path, *args: str, env: dict[str, str] | None = None
    ) -> RealNode:
        """``moltmesh node --data-dir DATA_DIR ARGS`` inside ``host`` (``env`` adds variables)."""
        argv = [sys.executable, "-m", "moltmesh", "node", "--data-dir", str(data_dir),
                "--port", "0", "--log-format", "text", "--no-bundled-models", *args]  # fmt: skip
        proc = bed.popen(host, argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         env={**_env(), **(env or {})}, cwd=REPO)  # fmt: skip
        return cls(proc, host, data_dir)

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.stdout.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def wait_line(self, prefix: str, timeout: float = START_TIMEOUT_S) -> str:
        """The first stdout line starting with ``prefix``; fails at exit or after ``timeout``."""
        with self._cond:
            ok = self._cond.wait_for(
                lambda: self._eof or any(s.startswith(prefix) for s in self.stdout), timeout
            )
            match = [s for s in self.stdout if s.startswith(prefix)]
        if not ok or not match:
            raise AssertionError(
                f"node in {self.host.label} printed no {prefix!r} line:\n" + "\n".join(self.stdout)
            )
        return match[0]

    def wait_serving(self) -> str:
        return self.wait_line("moltmesh node ")

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(timeout)
        finally:
            self._reader.join(timeout)
