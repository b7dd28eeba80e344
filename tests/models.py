"""Small ONNX models made at test time (nothing is downloaded; nothing large is committed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def _save(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, path)
    return path


def tiny_classifier(path: Path, output_batch_dim: str = "N") -> Path:
    """x FP32 [N, 3] -> probs FP32 [N, 4] (MatMul + Softmax) and logits FP32 [N, 4].

    ``output_batch_dim`` names the outputs' first axis (another name: the graph no longer says
    that it is the inputs' batch axis, so a node does not batch the model).
    """
    weights = numpy_helper.from_array((np.arange(12, dtype=np.float32).reshape(3, 4) - 6) / 10, "W")
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probs"], axis=-1),
        ],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        [
            helper.make_tensor_value_info("probs", TensorProto.FLOAT, [output_batch_dim, 4]),
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, [output_batch_dim, 4]),
        ],
        [weights],
    )
    return _save(graph, path)


def tiny_reference(x: np.ndarray) -> dict[str, np.ndarray]:
    """What ``tiny_classifier`` computes, in numpy."""
    weights = (np.arange(12, dtype=np.float32).reshape(3, 4) - 6) / 10
    logits = x.astype(np.float32) @ weights
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return {"logits": logits, "probs": e / e.sum(axis=-1, keepdims=True)}


def slow_model(path: Path, width: int = 512, layers: int = 8) -> Path:
    """x FP32 [N, width] -> y: ``layers`` square MatMuls; its cost grows with the batch N.

    At batch 1 it is fast (warm-up says so); a batch of a few thousand takes a large fraction of a
    second, which tests use to hold requests in flight.
    """
    rng = np.random.default_rng(7)
    inits, nodes, prev = [], [], "x"
    for i in range(layers):
        w = (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"W{i}"))
        out = "y" if i == layers - 1 else f"h{i}"
        nodes.append(helper.make_node("MatMul", [prev, f"W{i}"], [out]))
        prev = out
    graph = helper.make_graph(
        nodes,
        "slow",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", width])],
        inits,
    )
    return _save(graph, path)


def make_repository(root: Path) -> Path:
    """A Triton-layout repository with ``tiny`` (versions 1 and 2) and ``slow``."""
    tiny_classifier(root / "tiny" / "1" / "model.onnx")
    tiny_classifier(root / "tiny" / "2" / "model.onnx")
    (root / "tiny" / "labels.txt").write_text("a\nb\nc\nd\n")
    slow_model(root / "slow" / "1" / "model.onnx")
    return root
