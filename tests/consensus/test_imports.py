"""The arrows of DESIGN §1: which package may import what.

Static checks read every module's import statements (including imports inside functions);
dynamic checks import the packages in a fresh interpreter and look at ``sys.modules``.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STDLIB = set(sys.stdlib_module_names) | {"__future__"}
NO_IO = {"asyncio", "socket", "time", "threading", "selectors", "ssl"}
OURS = {"moltmesh", "runtimes", "sim", "consensus"}


def imported_roots(package: str) -> dict[str, set[str]]:
    """For each module file of ``package``: the top-level names of absolute imports."""
    out: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        roots: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                roots.add(node.module)
        out[str(path.relative_to(ROOT))] = roots
    return out


def top(name: str) -> str:
    return name.split(".")[0]


def modules_loaded_by(statement: str) -> list[str]:
    """Modules a fresh interpreter loads to run ``statement``, beyond its start-up set."""
    code = (
        "import sys, json; base = set(sys.modules)\n"
        f"{statement}\n"
        "print(json.dumps(sorted(set(sys.modules) - base)))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def all_modules(package: str) -> list[str]:
    names = []
    for path in sorted((ROOT / package).rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        if parts[-1] != "__main__":
            names.append(".".join(parts))
    return names


def test_consensus_imports_only_stdlib_without_io_and_msgpack() -> None:
    for module, roots in imported_roots("consensus").items():
        for name in roots:
            root = top(name)
            assert root not in NO_IO, f"{module} imports {name}: cores do no I/O and read no clock"
            assert root not in OURS - {"consensus"}, f"{module} imports {name} (arrow reversed)"
            assert root in STDLIB | {"consensus", "msgpack"}, f"{module} imports {name}"


def test_importing_every_consensus_module_loads_no_io_or_other_package() -> None:
    loaded = modules_loaded_by("\n".join(f"import {m}" for m in all_modules("consensus")))
    bad = [m for m in loaded if top(m) in NO_IO | {"moltmesh", "runtimes", "sim"}]
    assert bad == []


def test_runtimes_imports_only_onnx_numpy_and_stdlib() -> None:
    allowed = STDLIB | {"onnxruntime", "onnx", "numpy", "runtimes"}
    for module, roots in imported_roots("runtimes").items():
        for name in roots:
            assert top(name) in allowed, f"{module} imports {name}"


def test_sim_never_imports_sockets_or_the_node_shell() -> None:
    for module, roots in imported_roots("sim").items():
        for name in roots:
            root = top(name)
            assert root not in {"socket", "ssl", "asyncio", "aiohttp", "zeroconf", "selectors"}, (
                f"{module} imports {name}: the simulator never touches sockets"
            )
            assert root != "runtimes", f"{module} imports {name}"
            if root == "moltmesh":
                assert name.startswith("moltmesh.policy"), (
                    f"{module} imports {name}: sim may only use moltmesh.policy"
                )


def test_importing_sim_loads_no_network_stack() -> None:
    modules = all_modules("sim")
    if not modules:
        pytest.skip("sim/ is empty")
    loaded = modules_loaded_by("\n".join(f"import {m}" for m in modules))
    assert [m for m in loaded if top(m) in {"aiohttp", "zeroconf", "ssl", "asyncio"}] == []


def test_import_moltmesh_stays_light() -> None:
    loaded = modules_loaded_by("import moltmesh")
    assert [m for m in loaded if top(m) in {"aiohttp", "zeroconf", "onnxruntime"}] == []
