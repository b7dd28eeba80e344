"""OnnxRuntime: metadata read from the session, correct results, validation, threads, closing."""

from __future__ import annotations

import math
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from runtimes.base import Runtime, TensorSpec
from runtimes.errors import InvalidInput, InvalidModel, RunFailed, RuntimeClosed
from runtimes.onnx import OnnxOptions, OnnxRuntime, warmup_inputs
from tests.runtimes.conftest import ModelFiles

SEED = 1234


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _weights(path: object) -> dict[str, np.ndarray]:
    model = onnx.load(str(path))
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def test_metadata_is_read_from_the_session(model_files: ModelFiles) -> None:
    rt = OnnxRuntime(model_files.conv, name="conv", version="3", variant="full")
    meta = rt.metadata
    assert isinstance(rt, Runtime)
    assert (meta.name, meta.version, meta.variant) == ("conv", "3", "full")
    assert meta.platform == "onnxruntime_onnx"
    assert meta.inputs == (TensorSpec("image", "FP32", (-1, 1, 8, 8)),)
    assert meta.outputs == (TensorSpec("probs", "FP32", (-1, 3)),)
    assert meta.labels is None and meta.cascade is None


def test_metadata_of_two_inputs_two_outputs_and_int64(model_files: ModelFiles) -> None:
    two = OnnxRuntime(model_files.two).metadata
    assert [s.name for s in two.inputs] == ["a", "b"]
    assert [s.name for s in two.outputs] == ["sum", "prod"]
    assert two.name == "two"  # the file's stem when no name is given
    ids = OnnxRuntime(model_files.int64).metadata
    assert ids.inputs == (TensorSpec("ids", "INT64", (-1, 5)),)
    assert ids.outputs == (TensorSpec("emb", "FP32", (-1, 5, 4)),)
    fixed = OnnxRuntime(model_files.fixed).metadata
    assert fixed.inputs[0].shape == (1, 4)


def test_typical_run_seconds_is_measured_by_warmup(model_files: ModelFiles) -> None:
    rt = OnnxRuntime(model_files.matmul_softmax)
    assert 0 < rt.typical_run_seconds < math.inf
    skipped = OnnxRuntime(model_files.matmul_softmax, options=OnnxOptions(warmup_runs=0))
    assert skipped.typical_run_seconds == math.inf


def test_results_match_numpy_for_any_batch(model_files: ModelFiles) -> None:
    w = _weights(model_files.matmul_softmax)
    rt = OnnxRuntime(model_files.matmul_softmax)
    rng = np.random.default_rng(SEED)
    for batch in (1, 7, 64):
        x = rng.normal(size=(batch, 16)).astype(np.float32)
        out = rt.run({"x": x})
        assert list(out) == ["probs"]
        np.testing.assert_allclose(
            out["probs"], _softmax(x @ w["W"] + w["B"]), rtol=1e-5, atol=1e-6,
            err_msg=f"seed {SEED}, batch {batch}",
        )  # fmt: skip


def test_requested_outputs_are_honoured_in_order(model_files: ModelFiles) -> None:
    rt = OnnxRuntime(model_files.two)
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.full((2, 3), 2.0, dtype=np.float32)
    both = rt.run({"a": a, "b": b}, outputs=["prod", "sum"])
    assert list(both) == ["prod", "sum"]
    np.testing.assert_array_equal(both["prod"], a * b)
    np.testing.assert_array_equal(both["sum"], a + b)
    only = rt.run({"a": a, "b": b}, outputs=("sum",))
    assert list(only) == ["sum"]
    assert list(rt.run({"a": a, "b": b}, outputs=[])) == ["sum", "prod"]


def test_int64_input_runs(model_files: ModelFiles) -> None:
    rt = OnnxRuntime(model_files.int64)
    ids = np.array([[0, 1, 2, 3, 9], [9, 9, 0, 0, 5]], dtype=np.int64)
    emb = rt.run({"ids": ids})["emb"]
    assert emb.shape == (2, 5, 4)
    np.testing.assert_array_equal(emb[..., 0], ids * 4)


def test_bytes_input_accepts_str_and_utf8_bytes(model_files: ModelFiles) -> None:
    rt = OnnxRuntime(model_files.strings)
    assert rt.metadata.inputs == (TensorSpec("text", "BYTES", (-1,)),)
    for text in (
        np.array(["a", "bé"]),
        np.array(["a", "bé"], dtype=object),
        np.array([b"a", "bé".encode()], dtype=object),
        np.array([b"a", "bé".encode()]),
    ):
        assert rt.run({"text": text})["echo"].tolist() == ["a", "bé"]
    with pytest.raises(InvalidInput, match="UTF-8"):
        rt.run({"text": np.array([b"\xff"], dtype=object)})
    with pytest.raises(InvalidInput, match="BYTES"):
        rt.run({"text": np.zeros(2, dtype=np.float32)})


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({}, "missing input 'x'"),
        ({"x": np.zeros((1, 16), np.float32), "y": np.zeros(1)}, "no input 'y'"),
        ({"x": np.zeros((1, 16), np.float64)}, "expected datatype FP32"),
        ({"x": np.zeros((1, 16), np.int64)}, "got numpy int64"),
        ({"x": np.zeros((16,), np.float32)}, "rank 2"),
        ({"x": np.zeros((1, 15), np.float32)}, "axis 1 must be 16"),
        ({"x": [[0.0] * 16]}, "numpy array"),
    ],
)
def test_invalid_inputs_are_named(
    model_files: ModelFiles, inputs: dict[str, object], message: str
) -> None:
    rt = OnnxRuntime(model_files.matmul_softmax)
    with pytest.raises(InvalidInput, match=message):
        rt.run(inputs)  # type: ignore[arg-type]


def test_fixed_dims_are_enforced(model_files: ModelFiles) -> None:
    rt = OnnxRuntime(model_files.fixed)
    np.testing.assert_array_equal(rt.run({"x": np.ones((1, 4), np.float32)})["y"], 2.0)
    with pytest.raises(InvalidInput, match="axis 0 must be 1"):
        rt.run({"x": np.ones((2, 4), np.float32)})


def test_unknown_or_repeated_outputs_are_refused(model_files: ModelFiles) -> None:
    rt = OnnxRuntime(model_files.two)
    feed = {"a": np.zeros((1, 3), np.float32), "b": np.zeros((1, 3), np.float32)}
    with pytest.raises(InvalidInput, match="no output 'diff'"):
        rt.run(feed, outputs=["diff"])
    with pytest.raises(InvalidInput, match="twice"):
        rt.run(feed, outputs=["sum", "sum"])
    with pytest.raises(InvalidInput, match="not a string"):
        rt.run(feed, outputs="sum")


def test_shared_batch_dim_must_agree(model_files: ModelFiles) -> None:
    rt = OnnxRuntime(model_files.two)
    with pytest.raises(InvalidInput, match="dim 'N'"):
        rt.run({"a": np.zeros((2, 3), np.float32), "b": np.zeros((3, 3), np.float32)})


def test_values_onnxruntime_rejects_become_invalid_input(model_files: ModelFiles) -> None:
    rt = OnnxRuntime(model_files.int64)
    with pytest.raises(InvalidInput, match="out of data bounds"):
        rt.run({"ids": np.full((1, 5), 99, np.int64)})


def test_run_failed_is_a_runtime_error() -> None:
    assert "failed to run" in str(RunFailed("m", "boom"))


def test_missing_and_broken_files_are_invalid_models(model_files: ModelFiles) -> None:
    with pytest.raises(InvalidModel, match="not found"):
        OnnxRuntime(model_files.broken.with_name("absent.onnx"))
    with pytest.raises(InvalidModel, match="cannot load") as info:
        OnnxRuntime(model_files.broken)
    assert info.value.path == model_files.broken


def test_unavailable_providers_fall_back_to_cpu(model_files: ModelFiles) -> None:
    options = OnnxOptions(providers=("NoSuchExecutionProvider", "CPUExecutionProvider"))
    rt = OnnxRuntime(model_files.matmul_softmax, options=options)
    assert rt.providers == ("CPUExecutionProvider",)


def test_thread_options_are_validated() -> None:
    with pytest.raises(ValueError, match="intra_op_threads"):
        OnnxOptions(intra_op_threads=-1)
    with pytest.raises(ValueError, match="providers"):
        OnnxOptions(providers="CPUExecutionProvider")  # type: ignore[arg-type]


def test_concurrent_runs_return_their_own_results(model_files: ModelFiles) -> None:
    w = _weights(model_files.matmul_softmax)
    rt = OnnxRuntime(model_files.matmul_softmax, options=OnnxOptions(intra_op_threads=1))
    rng = np.random.default_rng(SEED)
    batches = [rng.normal(size=(int(rng.integers(1, 9)), 16)).astype(np.float32) for _ in range(64)]
    start = threading.Barrier(4)

    def work(i: int) -> tuple[int, np.ndarray]:
        if i < 4:
            start.wait()  # make the first runs overlap
        return i, rt.run({"x": batches[i]})["probs"]

    with ThreadPoolExecutor(4) as pool:
        for i, probs in pool.map(work, range(len(batches))):
            expected = _softmax(batches[i] @ w["W"] + w["B"])
            np.testing.assert_allclose(
                probs, expected, rtol=1e-5, atol=1e-6, err_msg=f"seed {SEED}"
            )


def test_close_is_idempotent_and_stops_runs(model_files: ModelFiles) -> None:
    with OnnxRuntime(model_files.fixed) as rt:
        feed = warmup_inputs(rt.metadata, 1)
        assert rt.run(feed)["y"].shape == (1, 4)
    assert rt.closed
    rt.close()
    with pytest.raises(RuntimeClosed):
        rt.run(feed)


def test_description_defaults_to_the_onnx_doc_string(
    tmp_path: Path, model_files: ModelFiles
) -> None:
    model = onnx.load(str(model_files.fixed))
    model.doc_string = "doubles its input"
    path = tmp_path / "documented.onnx"
    onnx.save(model, str(path))
    assert OnnxRuntime(path).metadata.description == "doubles its input"
    assert OnnxRuntime(path, description="from model.toml").metadata.description == (
        "from model.toml"
    )


def test_labels_that_fit_no_output_are_warned_about(
    model_files: ModelFiles, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("WARNING", logger="runtimes.onnx"):
        OnnxRuntime(model_files.matmul_softmax, labels=("a", "b", "c", "d"))
    assert not caplog.records
    with caplog.at_level("WARNING", logger="runtimes.onnx"):
        OnnxRuntime(model_files.matmul_softmax, labels=("a", "b"))
    assert "2 labels" in caplog.text


def test_a_model_with_dynamic_height_and_width_warms_up_at_a_size_it_can_run(
    tmp_path: Path,
) -> None:
    """A 5 × 5 convolution without padding cannot run on a 1 × 1 image: warm-up tries larger
    sizes instead of refusing the model, and says how many input elements it timed."""
    from onnx import TensorProto, helper

    rng = np.random.default_rng(SEED)
    w = numpy_helper.from_array(rng.standard_normal((2, 1, 5, 5)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["image", "w"], ["features"])],
        "dyn",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, "H", "W"])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 2, None, None])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = tmp_path / "dyn.onnx"
    onnx.save(model, path)
    rt = OnnxRuntime(path)
    assert 0 < rt.typical_run_seconds < math.inf
    assert rt.warmup_elements == 32 * 32  # 1 × 1 failed, 32 × 32 ran
    out = rt.run({"image": np.ones((1, 1, 9, 9), np.float32)})["features"]
    assert out.shape == (1, 2, 5, 5)
