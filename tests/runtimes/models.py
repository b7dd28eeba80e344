"""Tiny ONNX models built with ``onnx.helper`` for the runtimes tests (seeded, deterministic)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 9
BATCH = "N"


def _save(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION
    )
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def _init(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(array, name)


def matmul_softmax(path: Path, seed: int = 0, features: int = 16, classes: int = 4) -> Path:
    """x FP32 [N, features] -> probs FP32 [N, classes] = softmax(x @ W + b)."""
    rng = np.random.default_rng(seed)
    w = rng.normal(0, 1, (features, classes)).astype(np.float32)
    b = rng.normal(0, 0.1, (classes,)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["logits0"]),
            helper.make_node("Add", ["logits0", "B"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probs"], axis=-1),
        ],
        "matmul_softmax",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [BATCH, features])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [BATCH, classes])],
        initializer=[_init("W", w), _init("B", b)],
    )
    return _save(graph, path)


def conv_classifier(path: Path, seed: int = 0, size: int = 8, classes: int = 3) -> Path:
    """image FP32 [N, 1, size, size] -> probs FP32 [N, classes]: Conv, Relu, pool, Gemm, Softmax."""
    rng = np.random.default_rng(seed)
    channels = 8
    conv_w = rng.normal(0, 0.5, (channels, 1, 3, 3)).astype(np.float32)
    conv_b = rng.normal(0, 0.1, (channels,)).astype(np.float32)
    fc_w = rng.normal(0, 1.0, (classes, channels)).astype(np.float32)
    fc_b = rng.normal(0, 0.1, (classes,)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["image", "CW", "CB"], ["c"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["c"], ["r"]),
            helper.make_node("GlobalAveragePool", ["r"], ["p"]),
            helper.make_node("Flatten", ["p"], ["f"], axis=1),
            helper.make_node("Gemm", ["f", "FW", "FB"], ["logits"], transB=1),
            helper.make_node("Softmax", ["logits"], ["probs"], axis=-1),
        ],
        "conv_classifier",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [BATCH, 1, size, size])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [BATCH, classes])],
        initializer=[
            _init("CW", conv_w),
            _init("CB", conv_b),
            _init("FW", fc_w),
            _init("FB", fc_b),
        ],
    )
    return _save(graph, path)


def two_in_two_out(path: Path) -> Path:
    """a, b FP32 [N, 3] -> sum = a + b, prod = a * b (both FP32 [N, 3])."""
    graph = helper.make_graph(
        [
            helper.make_node("Add", ["a", "b"], ["sum"]),
            helper.make_node("Mul", ["a", "b"], ["prod"]),
        ],
        "two_in_two_out",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, [BATCH, 3]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, [BATCH, 3]),
        ],
        [
            helper.make_tensor_value_info("sum", TensorProto.FLOAT, [BATCH, 3]),
            helper.make_tensor_value_info("prod", TensorProto.FLOAT, [BATCH, 3]),
        ],
    )
    return _save(graph, path)


def int64_embedding(path: Path, vocab: int = 10, dim: int = 4) -> Path:
    """ids INT64 [N, 5] -> emb FP32 [N, 5, dim] = E[ids], with E[i, j] = i * dim + j."""
    table = np.arange(vocab * dim, dtype=np.float32).reshape(vocab, dim)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["E", "ids"], ["emb"], axis=0)],
        "int64_embedding",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [BATCH, 5])],
        [helper.make_tensor_value_info("emb", TensorProto.FLOAT, [BATCH, 5, dim])],
        initializer=[_init("E", table)],
    )
    return _save(graph, path)


def fixed_shape(path: Path) -> Path:
    """x FP32 [1, 4] (no dynamic dim) -> y FP32 [1, 4] = 2 * x."""
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "two"], ["y"])],
        "fixed_shape",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        initializer=[_init("two", np.array(2.0, dtype=np.float32))],
    )
    return _save(graph, path)


def string_identity(path: Path) -> Path:
    """text BYTES [N] -> echo BYTES [N]."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["text"], ["echo"])],
        "string_identity",
        [helper.make_tensor_value_info("text", TensorProto.STRING, [BATCH])],
        [helper.make_tensor_value_info("echo", TensorProto.STRING, [BATCH])],
    )
    return _save(graph, path)


def divide_by_zero(path: Path) -> Path:
    """x FP32 [1, 4] -> y FP32 [1, 4] = x / 0: the fixed-shape model's I/O, non-finite outputs."""
    graph = helper.make_graph(
        [helper.make_node("Div", ["x", "zero"], ["y"])],
        "divide_by_zero",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        initializer=[_init("zero", np.array(0.0, dtype=np.float32))],
    )
    return _save(graph, path)
