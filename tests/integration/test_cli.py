"""The ``moltmesh`` command as a user runs it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from moltmesh import __version__
from tests.integration.nodeproc import running_node
from tests.models import tiny_reference

pytestmark = pytest.mark.integration


def moltmesh(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "moltmesh", *args], capture_output=True, text=True, timeout=120
    )


def test_version():
    done = moltmesh("version")
    assert done.returncode == 0 and done.stdout.strip() == f"moltmesh {__version__}"


@pytest.mark.parametrize(
    ("args", "words"),
    [
        ((), ["node", "infer", "models", "version"]),
        (("node",), ["--data-dir", "--port", "--model-repository", "--tls-cert", "SIGTERM"]),
        (("infer",), ["--url", "--token", ".npy", "--urgency", "--deadline-ms"]),
        (("models", "quantize"), ["int8", "fp16"]),
    ],
)
def test_help_explains_each_command(args: tuple[str, ...], words: list[str]):
    done = moltmesh(*args, "--help")
    assert done.returncode == 0
    for word in words:
        assert word in done.stdout


def test_bad_config_is_one_line_naming_the_key(tmp_path: Path):
    (tmp_path / "bad.toml").write_text("[api]\nprot = 1\n")
    done = moltmesh("node", "--config", str(tmp_path / "bad.toml"), "--data-dir", str(tmp_path))
    assert done.returncode == 2
    assert "unknown key 'api.prot'" in done.stderr and "Traceback" not in done.stderr


def test_quantize_then_serve_the_int8_variant(tmp_path: Path, model_repo: Path):
    repo = tmp_path / "repo"
    shutil.copytree(model_repo / "tiny", repo / "tiny")
    done = moltmesh(
        "models", "quantize", "tiny", "--model-repository", str(repo), "--data-dir",
        str(tmp_path / "d"),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    for version in ("1", "2"):
        assert (repo / "tiny" / version / "model.int8.onnx").exists()
    listing = moltmesh(
        "models", "list", "--model-repository", str(repo), "--data-dir", str(tmp_path)
    )
    assert "int8" in listing.stdout
    args = ("--model-repository", str(repo), "--no-bundled-models", "--variant", "int8")
    with running_node(tmp_path / "d", *args) as node:
        x = np.array([[1, 2, 3], [-1, 0.5, 2]], dtype=np.float32)
        answer = node.client().infer("tiny", {"x": x})
        assert answer.parameters["variant"] == "int8"
        np.testing.assert_allclose(answer.outputs["probs"], tiny_reference(x)["probs"], atol=0.05)


def test_unknown_model_to_quantize_is_named(tmp_path: Path):
    done = moltmesh("models", "quantize", "nope", "--data-dir", str(tmp_path))
    assert done.returncode == 2 and "nope" in done.stderr


def test_a_node_without_http_api_says_so_and_stops_cleanly(tmp_path: Path):
    env = {**os.environ, "MOLTMESH_API_ENABLED": "false"}
    argv = [sys.executable, "-m", "moltmesh", "node", "--data-dir", str(tmp_path / "d"),
            "--no-bundled-models", "--log-level", "warning"]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert "running without an HTTP API (api.enabled = false)" in first, first
        assert not (tmp_path / "d" / "api-url").exists()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
