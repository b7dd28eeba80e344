"""Fixtures for the runtimes tests: a directory of tiny ONNX models built once per worker."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.runtimes import models


class ModelFiles:
    """Paths of the test models (see :mod:`tests.runtimes.models`)."""

    def __init__(self, root: Path) -> None:
        self.matmul_softmax = models.matmul_softmax(root / "matmul_softmax.onnx", seed=0)
        self.conv = models.conv_classifier(root / "conv.onnx", seed=0)
        self.two = models.two_in_two_out(root / "two.onnx")
        self.int64 = models.int64_embedding(root / "int64.onnx")
        self.fixed = models.fixed_shape(root / "fixed.onnx")
        self.strings = models.string_identity(root / "strings.onnx")
        self.broken = root / "broken.onnx"
        self.broken.write_bytes(b"this is not an onnx protobuf")


@pytest.fixture(scope="session")
def model_files(tmp_path_factory: pytest.TempPathFactory) -> ModelFiles:
    return ModelFiles(tmp_path_factory.mktemp("onnx-models"))
