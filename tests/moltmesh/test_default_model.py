"""The bundled default models: accuracy, cascade, FLOPs, layout, and the data generator.

Runs without torch: the held-out set is regenerated with numpy and both models run with
onnxruntime. Figures are compared with ``moltmesh/bundled/models/metrics.json`` (written by
``scripts/train_defects.py``) and with the table in ``docs/models.md``.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from moltmesh.bundled import defects
from moltmesh.bundled.flops import count_macs

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "moltmesh" / "bundled" / "models"
DOCS = ROOT / "docs" / "models.md"
FULL, LIGHT = "defects", "defects-light"
TOLERANCE = 0.5
"""Points of accuracy by which a re-run may differ from metrics.json (onnxruntime builds, CPUs)."""


def model_path(name: str) -> Path:
    return MODELS / name / "1" / "model.onnx"


@pytest.fixture(scope="module")
def metrics() -> dict:
    return json.loads((MODELS / "metrics.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def test_set() -> defects.Dataset:
    return defects.generate(defects.TEST_SEED, defects.TEST_SIZE)


def session(name: str) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(model_path(name)), opts, providers=["CPUExecutionProvider"])


def probabilities(name: str, images: np.ndarray) -> np.ndarray:
    sess = session(name)
    parts = [
        sess.run(["probabilities"], {"image": images[i : i + 500]})[0]
        for i in range(0, len(images), 500)
    ]
    return np.concatenate(parts)


@pytest.fixture(scope="module")
def predictions(test_set: defects.Dataset) -> dict[str, np.ndarray]:
    return {name: probabilities(name, test_set.images) for name in (FULL, LIGHT)}


def accuracy(pred: np.ndarray, labels: np.ndarray, mask: np.ndarray | None = None) -> float:
    ok = pred == labels
    return 100.0 * float(ok[mask].mean() if mask is not None else ok.mean())


def cascade_predictions(
    preds: dict[str, np.ndarray], threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    light, full = preds[LIGHT], preds[FULL]
    escalate = light.max(1) < threshold
    return np.where(escalate, full.argmax(1), light.argmax(1)), escalate


# --- the generator ---------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 7, defects.TEST_SEED])
def test_generator_is_deterministic(seed: int) -> None:
    a, b = defects.generate(seed, 96), defects.generate(seed, 96)
    for x, y in zip(a, b, strict=True):
        assert x.tobytes() == y.tobytes(), f"seed {seed} gave different bytes"
    other = defects.generate(seed + 1, 96)
    assert a.images.tobytes() != other.images.tobytes(), f"seeds {seed}, {seed + 1} collide"


def test_generator_output_contract() -> None:
    seed = 11
    data = defects.generate(seed, 403)
    assert data.images.shape == (403, 1, 32, 32) and data.images.dtype == np.float32
    assert data.labels.shape == (403,) and data.labels.dtype == np.int64
    assert data.hard.shape == (403,) and data.hard.dtype == np.bool_
    assert data.images.min() >= 0.0 and data.images.max() <= 1.0, f"seed {seed}"
    counts = np.bincount(data.labels, minlength=len(defects.LABELS))
    assert counts.max() - counts.min() <= 1, f"seed {seed}: unbalanced {counts}"
    assert not data.hard[data.labels == defects.LABELS.index("ok")].any()
    assert 0 < data.hard.mean() < 0.5, f"seed {seed}: hard share {data.hard.mean()}"
    assert defects.generate(seed, 0).images.shape == (0, 1, 32, 32)


def test_generator_defects_differ_from_background() -> None:
    """A defect adds visible structure: defect patches deviate more from a smooth background."""
    seed = 3
    data = defects.generate(seed, 800)
    # Laplacian energy: high-frequency content that defects add and smooth lighting does not.
    img = data.images[:, 0].astype(np.float64)
    lap = 4 * img[:, 1:-1, 1:-1] - img[:, :-2, 1:-1] - img[:, 2:, 1:-1]
    lap -= img[:, 1:-1, :-2] + img[:, 1:-1, 2:]
    peak = np.abs(lap).reshape(len(img), -1).max(1)
    ok = data.labels == 0
    easy_defect = (data.labels != 0) & ~data.hard
    assert np.median(peak[easy_defect]) > 1.5 * np.median(peak[ok]), f"seed {seed}"


def test_seed_ranges_are_disjoint() -> None:
    train = range(defects.TRAIN_SEED, defects.TRAIN_SEED + defects.TRAIN_SEED_SPAN)
    assert defects.VAL_SEED not in train and defects.TEST_SEED not in train
    assert defects.VAL_SEED != defects.TEST_SEED


# --- the model repository ----------------------------------------------------------------------


def test_model_directories_follow_triton_layout(metrics: dict) -> None:
    for name in (FULL, LIGHT):
        mdir = MODELS / name
        assert model_path(name).is_file()
        labels = (mdir / "labels.txt").read_text(encoding="utf-8").splitlines()
        assert tuple(labels) == defects.LABELS
        conf = tomllib.loads((mdir / "model.toml").read_text(encoding="utf-8"))
        assert isinstance(conf["description"], str) and conf["description"]
        assert set(conf) <= {"description", "cascade"}
    light = tomllib.loads((MODELS / LIGHT / "model.toml").read_text(encoding="utf-8"))
    assert light["cascade"] == {
        "escalate_to": FULL,
        "confidence_threshold": metrics["cascade"]["confidence_threshold"],
    }
    assert "cascade" not in tomllib.loads((MODELS / FULL / "model.toml").read_text("utf-8"))


@pytest.mark.parametrize("name", [FULL, LIGHT])
def test_onnx_interface(name: str) -> None:
    proto = onnx.load(str(model_path(name)))
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) == 17
    (inp,) = proto.graph.input
    (out,) = proto.graph.output
    assert inp.name == "image" and out.name == "probabilities"
    assert inp.type.tensor_type.elem_type == TensorProto.FLOAT
    assert out.type.tensor_type.elem_type == TensorProto.FLOAT
    in_dims = inp.type.tensor_type.shape.dim
    assert in_dims[0].dim_param and [d.dim_value for d in in_dims[1:]] == [1, 32, 32]
    out_dims = out.type.tensor_type.shape.dim
    assert out_dims[0].dim_param and out_dims[1].dim_value == len(defects.LABELS)

    seed = 5
    data = defects.generate(seed, 9)
    sess = session(name)
    batch = sess.run(["probabilities"], {"image": data.images})[0]
    assert batch.shape == (9, 4) and batch.dtype == np.float32
    np.testing.assert_allclose(batch.sum(1), 1.0, atol=1e-5, err_msg=f"seed {seed}")
    single = sess.run(["probabilities"], {"image": data.images[4:5]})[0]
    np.testing.assert_allclose(single[0], batch[4], atol=1e-5, err_msg=f"seed {seed}")


def test_files_are_small() -> None:
    total = sum(model_path(name).stat().st_size for name in (FULL, LIGHT))
    assert total < 5 * 2**20, total


# --- accuracy ------------------------------------------------------------------------------------


def test_accuracies_match_metrics(
    metrics: dict, test_set: defects.Dataset, predictions: dict[str, np.ndarray]
) -> None:
    seed = defects.TEST_SEED
    assert metrics["test_set"] == {
        "seed": seed,
        "size": defects.TEST_SIZE,
        "hard": int(test_set.hard.sum()),
    }
    y, hard = test_set.labels, test_set.hard
    for name in (FULL, LIGHT):
        pred = predictions[name].argmax(1)
        recorded = metrics["models"][name]
        assert accuracy(pred, y) == pytest.approx(recorded["accuracy"], abs=TOLERANCE), name
        assert accuracy(pred, y, hard) == pytest.approx(recorded["accuracy_hard"], abs=TOLERANCE)
    casc, escalate = cascade_predictions(predictions, metrics["cascade"]["confidence_threshold"])
    assert accuracy(casc, y) == pytest.approx(metrics["cascade"]["accuracy"], abs=TOLERANCE)
    assert accuracy(casc, y, hard) == pytest.approx(
        metrics["cascade"]["accuracy_hard"], abs=TOLERANCE
    )
    assert 100 * escalate.mean() == pytest.approx(
        metrics["cascade"]["escalation_rate"], abs=TOLERANCE
    )


def test_full_model_is_accurate(test_set: defects.Dataset, predictions: dict) -> None:
    acc = accuracy(predictions[FULL].argmax(1), test_set.labels)
    assert acc >= 97.0, f"full model {acc:.2f} % on seed {defects.TEST_SEED}"


def test_light_model_is_worse_on_hard_patches(test_set: defects.Dataset, predictions: dict) -> None:
    y, hard = test_set.labels, test_set.hard
    full = accuracy(predictions[FULL].argmax(1), y, hard)
    light = accuracy(predictions[LIGHT].argmax(1), y, hard)
    assert light <= full - 10.0, f"hard subset: full {full:.2f}, light {light:.2f}"


def test_cascade_recovers_full_accuracy_escalating_a_minority(
    metrics: dict, test_set: defects.Dataset, predictions: dict
) -> None:
    threshold = metrics["cascade"]["confidence_threshold"]
    casc, escalate = cascade_predictions(predictions, threshold)
    full = accuracy(predictions[FULL].argmax(1), test_set.labels)
    cascade = accuracy(casc, test_set.labels)
    assert cascade >= full - 0.5, f"threshold {threshold}: cascade {cascade:.2f}, full {full:.2f}"
    assert escalate.mean() < 0.5, f"threshold {threshold}: escalated {escalate.mean():.1%}"
    # confidence separates: hard patches are escalated far more often than easy ones
    assert escalate[test_set.hard].mean() > 2 * escalate[~test_set.hard].mean()


# --- FLOPs ---------------------------------------------------------------------------------------


def test_light_model_needs_a_quarter_of_the_flops(metrics: dict) -> None:
    full, light = count_macs(model_path(FULL)), count_macs(model_path(LIGHT))
    assert light * 4 <= full, f"MACs: full {full}, light {light}"
    assert metrics["models"][FULL]["macs"] == full
    assert metrics["models"][LIGHT]["macs"] == light


def test_count_macs_on_a_known_graph() -> None:
    """Conv 1→4 3×3 on 8×8 (same padding) then Gemm 256→10: 4·8·8·9 + 256·10 MACs."""
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 1, 3, 3], np.zeros(36).tolist())
    g = helper.make_tensor("g", TensorProto.FLOAT, [10, 256], np.zeros(2560).tolist())
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [-1, 256])
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        helper.make_node("Reshape", ["c", "shape"], ["r"]),
        helper.make_node("Gemm", ["r", "g"], ["y"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "known",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
        [w, g, shape],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert count_macs(model) == 4 * 8 * 8 * 9 + 256 * 10


# --- docs ----------------------------------------------------------------------------------------

_COLUMNS = {
    "accuracy %": "accuracy",
    "hard %": "accuracy_hard",
    "easy %": "accuracy_easy",
    "MACs": "macs",
    "FLOPs": "flops",
    "params": "params",
    "ONNX bytes": "file_bytes",
}
_CASCADE_COLUMNS = {
    "confidence threshold": "confidence_threshold",
    "escalated %": "escalation_rate",
    "escalated, hard %": "escalation_rate_hard",
    "escalated, easy %": "escalation_rate_easy",
}


def _tables(text: str) -> list[list[list[str]]]:
    """Every Markdown table of ``text`` as rows of stripped cells (separator rows dropped)."""
    tables: list[list[list[str]]] = []
    current: list[list[str]] = []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not all(set(c) <= set("-: ") for c in cells):
                current.append(cells)
        elif current:
            tables.append(current)
            current = []
    return tables


def _number(cell: str) -> float:
    return float(cell.replace(",", "").replace("\u202f", "").replace(" ", ""))


def test_docs_table_matches_metrics(metrics: dict) -> None:
    tables = _tables(DOCS.read_text(encoding="utf-8"))
    (acc_table,) = [t for t in tables if t[0][0] == "variant"]
    (casc_table,) = [t for t in tables if t[0][0] == "confidence threshold"]
    header = acc_table[0]
    rows = {row[0]: dict(zip(header, row, strict=True)) for row in acc_table[1:]}
    assert set(rows) == {FULL, LIGHT, "cascade"}
    for name in (FULL, LIGHT):
        for column, key in _COLUMNS.items():
            assert _number(rows[name][column]) == metrics["models"][name][key], (name, column)
    for column in ("accuracy %", "hard %", "easy %"):
        assert _number(rows["cascade"][column]) == metrics["cascade"][_COLUMNS[column]], column
    casc = dict(zip(casc_table[0], casc_table[1], strict=True))
    for column, key in _CASCADE_COLUMNS.items():
        assert _number(casc[column]) == metrics["cascade"][key], column
