"""Token records survive processes that change them at once (``mesh token`` beside the node)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

WRITER = """
import sys, time
from pathlib import Path
from moltmesh.mesh.tokens import TokenStore
store = TokenStore(Path(sys.argv[1]))
for _ in range(int(sys.argv[2])):
    store.create("a" * 52, "127.0.0.1:8471", 600.0, time.time())
"""


def test_concurrent_creators_lose_no_token(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(path), "40"], env=env) for _ in range(4)
    ]
    assert [p.wait(60) for p in procs] == [0] * 4
    assert len(json.loads(path.read_bytes())) == 160
