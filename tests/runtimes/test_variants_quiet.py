"""Making an int8 variant does not leak onnxruntime's pre-processing hint via the root logger."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from runtimes.variants import PREPROCESS_HINT, quantize_int8
from tests.runtimes.conftest import ModelFiles

SEED = 20_261_126


def _calibration(seed: int) -> list[dict[str, np.ndarray]]:
    images = np.random.default_rng(seed).normal(0, 1, (32, 1, 8, 8)).astype(np.float32)
    return [{"image": images[i : i + 16]} for i in range(0, 32, 16)]


@pytest.mark.parametrize("calibrated", [True, False], ids=["static", "dynamic"])
def test_hint_is_dropped_and_other_root_warnings_kept(
    tmp_path: Path, model_files: ModelFiles, caplog: pytest.LogCaptureFixture, calibrated: bool
) -> None:
    root = logging.getLogger()
    filters, handlers = list(root.filters), list(root.handlers)
    with caplog.at_level(logging.INFO):
        quantize_int8(
            model_files.conv, tmp_path / "m.int8.onnx", _calibration(SEED) if calibrated else None
        )
        logging.warning("a root warning after the call")
    messages = [r.getMessage() for r in caplog.records if r.name == "root"]
    assert not [m for m in messages if PREPROCESS_HINT in m], f"seed {SEED}: {messages}"
    assert "a root warning after the call" in messages
    assert (root.filters, root.handlers) == (filters, handlers)  # nothing left behind


def test_no_stderr_and_no_basic_config_without_handlers(
    tmp_path: Path,
    model_files: ModelFiles,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As in the CLI: root has no handler, so onnxruntime's ``logging.warning`` would otherwise
    run ``basicConfig`` and print ``WARNING:root:Please consider ...`` on stderr."""
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    quantize_int8(model_files.conv, tmp_path / "m.int8.onnx", _calibration(SEED))
    assert root.handlers == []  # basicConfig did not run
    err = capsys.readouterr().err
    assert PREPROCESS_HINT not in err and "WARNING:root" not in err, err
