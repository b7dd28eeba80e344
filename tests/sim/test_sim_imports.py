"""The arrows of DESIGN §1: ``sim`` imports consensus (and moltmesh.policy), never I/O."""

from __future__ import annotations

import ast
from pathlib import Path

SIM = Path(__file__).resolve().parents[2] / "sim"
FORBIDDEN = {"asyncio", "socket", "selectors", "ssl", "aiohttp", "zeroconf", "uvloop", "threading"}
ALLOWED_MOLTMESH = ("moltmesh.policy",)


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_sim_never_imports_io_or_the_node() -> None:
    files = sorted(SIM.glob("*.py"))
    assert files
    for f in files:
        for name in imported(f):
            root = name.split(".")[0]
            assert root not in FORBIDDEN, f"{f.name} imports {name}"
            if root == "moltmesh":
                assert name.startswith(ALLOWED_MOLTMESH), f"{f.name} imports {name}"
            assert root not in ("runtimes",), f"{f.name} imports {name}"
