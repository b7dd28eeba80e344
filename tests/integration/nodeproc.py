"""Start real ``moltmesh node`` processes on free loopback ports and talk to them."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path

from moltmesh.cli import main as cli_main
from moltmesh.client import Client

START_TIMEOUT_S = 60.0


@dataclass
class NodeProcess:
    proc: subprocess.Popen[str]
    data_dir: Path
    url: str = ""
    token: str = ""
    stdout: list[str] = field(default_factory=list)

    def client(self, token: str | None = None) -> Client:
        return Client(self.url, self.token if token is None else token, timeout_s=60)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Signal the node and wait for it to exit; returns its exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)


@contextmanager
def running_node(
    data_dir: Path, *args: str, env: dict[str, str] | None = None
) -> Iterator[NodeProcess]:
    """Run ``moltmesh node --port 0 ARGS`` until the block ends; yields once it serves.

    Waits for the node's own "serving" line on stdout (no fixed sleeps); kills it on exit.
    """
    cmd = [sys.executable, "-m", "moltmesh", "node", "--data-dir", str(data_dir), "--port", "0",
           "--log-format", "text", *args]  # fmt: skip
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=full_env
    )
    node = NodeProcess(proc, data_dir)
    serving = threading.Event()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            node.stdout.append(line.rstrip("\n"))
            if " serving " in line and line.startswith("moltmesh node"):
                node.url = line.split(" serving ", 1)[1].strip()
            if line.startswith("API token (saved in"):
                node.token = line.rsplit(": ", 1)[1].strip()
            if line.startswith("API token in "):
                node.token = (data_dir / "api-token").read_text().strip()
            if node.url and node.token:
                serving.set()
        serving.set()  # the process ended: let the waiter see it

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        if not serving.wait(START_TIMEOUT_S) or not node.url:
            raise RuntimeError("node did not start:\n" + "\n".join(node.stdout))
        yield node
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        reader.join(5)


def run_cli(*argv: str) -> str:
    """Run ``moltmesh <argv>`` in this process; its standard output, or RuntimeError naming the
    command when it exits non-zero (e.g. ``mesh init`` / ``mesh token`` before starting nodes)."""
    buf = io.StringIO()
    with redirect_stdout(buf):
        code = cli_main(list(argv))
    if code != 0:
        raise RuntimeError(f"moltmesh {' '.join(argv)} failed")
    return buf.getvalue()
