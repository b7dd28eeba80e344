"""runtimes imports only onnxruntime, onnx, numpy and the stdlib, and the heavy ones late."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

RUNTIMES = Path(__file__).resolve().parents[2] / "runtimes"
ALLOWED = {"onnxruntime", "onnx", "numpy", "runtimes"}


def _imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_only_allowed_packages_are_imported() -> None:
    for path in sorted(RUNTIMES.glob("*.py")):
        outside = {
            root
            for root in _imported_roots(path)
            if root not in ALLOWED and root not in sys.stdlib_module_names
        }
        assert not outside, f"{path.name} imports {sorted(outside)}"


def test_scanning_does_not_load_onnxruntime() -> None:
    code = (
        "import sys, runtimes, runtimes.repository, runtimes.variants\n"
        "from runtimes import ModelRepository, choose_variant\n"
        "assert 'onnxruntime' not in sys.modules, 'onnxruntime imported'\n"
        "assert 'onnx' not in sys.modules, 'onnx imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
