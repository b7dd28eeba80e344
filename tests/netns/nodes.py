"""Real ``moltmesh`` processes inside a bed's hosts: ``moltmesh node`` and one-shot commands.

    node = RealNode.start(bed, host, data_dir, "--mesh-host", host.address, "--mesh-port", "8471")
    node.wait_serving()
    out = moltmesh(bed, host, "mesh", "token", "--data-dir", str(data_dir))
    node.stop()

Each command runs inside the host's namespace, so it reaches the others only over the bed's
bridge (and through its cuts). Processes are killed with the bed in any case.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
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
    def start(cls, bed: NetBed, host: Host, data_dir: Path, *args: str) -> RealNode:
        argv = [sys.executable, "-m", "moltmesh", "node", "--data-dir", str(data_dir),
                "--port", "0", "--log-format", "text", "--no-bundled-models", *args]  # fmt: skip
        proc = bed.popen(host, argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         env=_env(), cwd=REPO)  # fmt: skip
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
