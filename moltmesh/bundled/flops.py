"""Count multiply-accumulates (MACs) of an ONNX graph, per input image, from the graph itself.

How: the batch dimension of every graph input is pinned to 1, ONNX shape inference gives each
tensor's shape, and each ``Conv``, ``ConvTranspose``, ``Gemm`` and ``MatMul`` node contributes
(output elements) × (multiplies per output element). Element-wise ops, pooling, activations and
softmax are not counted (they are a small fraction for a CNN); ``FLOPs = 2 × MACs`` by the usual
convention. Needs ``onnx`` only (no torch, no onnxruntime).
"""

from __future__ import annotations

import math
from pathlib import Path

import onnx
from onnx import shape_inference


def _shapes(model: onnx.ModelProto) -> dict[str, list[int]]:
    """Static shape of every tensor (inputs, initializers, intermediates) with batch = 1."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    initializers = {init.name for init in model.graph.initializer}
    for inp in model.graph.input:
        if inp.name in initializers:
            continue
        dims = inp.type.tensor_type.shape.dim
        if dims:
            dims[0].Clear()
            dims[0].dim_value = 1
    inferred = shape_inference.infer_shapes(model, strict_mode=True)
    shapes: dict[str, list[int]] = {}
    values = [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]
    for value in values:
        dims = value.type.tensor_type.shape.dim
        shapes[value.name] = [d.dim_value if d.HasField("dim_value") else -1 for d in dims]
    for init in inferred.graph.initializer:
        shapes[init.name] = list(init.dims)
    return shapes


def _attr(node: onnx.NodeProto, name: str, default: int) -> int:
    for attr in node.attribute:
        if attr.name == name:
            return int(onnx.helper.get_attribute_value(attr))
    return default


def count_macs(model: onnx.ModelProto | str | Path) -> int:
    """MACs for one image (batch 1) of ``model`` (a ModelProto or a path to an .onnx file).

    Raises ``ValueError`` if a counted node's shape cannot be inferred statically.
    """
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model))
    shapes = _shapes(model)
    total = 0
    for node in model.graph.node:
        if node.op_type not in ("Conv", "ConvTranspose", "Gemm", "MatMul"):
            continue
        out = shapes.get(node.output[0])
        weight = shapes.get(node.input[1])
        if not out or not weight or min(out) < 0 or min(weight) < 0:
            raise ValueError(f"cannot infer the shapes of {node.op_type} node {node.name!r}")
        if node.op_type == "Conv":
            # weight [Cout, Cin/group, k...]: each output element sums Cin/group × prod(k) terms
            total += math.prod(out) * math.prod(weight[1:])
        elif node.op_type == "ConvTranspose":
            # each input element scatters into Cout/group × prod(k) outputs
            inp = shapes[node.input[0]]
            total += math.prod(inp) * math.prod(weight[1:])
        elif node.op_type == "Gemm":
            k = weight[1] if _attr(node, "transB", 0) else weight[0]
            total += math.prod(out) * k
        else:  # MatMul
            total += math.prod(out) * shapes[node.input[0]][-1]
    return total
