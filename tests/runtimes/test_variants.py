"""Variants: int8 and fp16 files made from a full model and close to it; the choice rule."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from runtimes.errors import InvalidModel, VariantNotAvailable
from runtimes.onnx import OnnxOptions, OnnxRuntime
from runtimes.repository import ModelRepository
from runtimes.variants import (
    HIGH_LOAD,
    _named_model,
    _verify,
    choose_variant,
    convert_fp16,
    make_variants,
    quantize_int8,
    variant_preference,
)
from tests.runtimes import models
from tests.runtimes.conftest import ModelFiles

SEED = 20_261_125
FAST = OnnxOptions(warmup_runs=1)


def _images(seed: int, n: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 1, (n, 1, 8, 8)).astype(np.float32)


def _calibration(seed: int) -> list[dict[str, np.ndarray]]:
    images = _images(seed, 128)
    return [{"image": images[i : i + 16]} for i in range(0, 128, 16)]


def _probs(path: Path, images: np.ndarray) -> np.ndarray:
    return OnnxRuntime(path, options=FAST).run({"image": images})["probs"]


def _agreement(full: np.ndarray, other: np.ndarray) -> float:
    return float(np.mean(full.argmax(axis=1) == other.argmax(axis=1)))


@pytest.mark.parametrize("calibrated", [True, False], ids=["static", "dynamic"])
def test_int8_is_close_to_full(tmp_path: Path, model_files: ModelFiles, calibrated: bool) -> None:
    dst = tmp_path / "model.int8.onnx"
    calibration = _calibration(SEED) if calibrated else None
    assert quantize_int8(model_files.conv, dst, calibration) == dst
    images = _images(SEED + 1, 500)
    full, int8 = _probs(model_files.conv, images), _probs(dst, images)
    assert _agreement(full, int8) >= 0.95, f"seed {SEED}"
    assert np.abs(full - int8).max() < 0.1, f"seed {SEED}"
    runtime = OnnxRuntime(dst, options=FAST)  # clients see the same tensors as with full
    assert runtime.metadata.inputs == OnnxRuntime(model_files.conv, options=FAST).metadata.inputs
    assert _has_int8_weights(dst)


def _has_int8_weights(path: Path) -> bool:
    model = onnx.load(str(path))
    int8 = (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)
    return any(t.data_type in int8 and len(t.dims) > 1 for t in model.graph.initializer)


def test_int8_of_a_matmul_model(tmp_path: Path, model_files: ModelFiles) -> None:
    dst = quantize_int8(model_files.matmul_softmax, tmp_path / "q.onnx")
    x = np.random.default_rng(SEED).normal(0, 1, (400, 16)).astype(np.float32)
    full = OnnxRuntime(model_files.matmul_softmax, options=FAST).run({"x": x})["probs"]
    int8 = OnnxRuntime(dst, options=FAST).run({"x": x})["probs"]
    assert _agreement(full, int8) >= 0.95, f"seed {SEED}"


def test_fp16_is_close_to_full_and_keeps_fp32_io(tmp_path: Path, model_files: ModelFiles) -> None:
    dst = convert_fp16(model_files.conv, tmp_path / "model.fp16.onnx")
    runtime = OnnxRuntime(dst, options=FAST)
    full_meta = OnnxRuntime(model_files.conv, options=FAST).metadata
    assert runtime.metadata.inputs == full_meta.inputs
    assert runtime.metadata.outputs == full_meta.outputs
    images = _images(SEED, 200)
    np.testing.assert_allclose(
        _probs(dst, images), _probs(model_files.conv, images), atol=5e-3, err_msg=f"seed {SEED}"
    )


def test_failed_conversion_raises_and_leaves_nothing(
    tmp_path: Path, model_files: ModelFiles
) -> None:
    dst = tmp_path / "out" / "model.int8.onnx"
    with pytest.raises(VariantNotAvailable) as info:
        quantize_int8(model_files.broken, dst)
    assert info.value.variant == "int8"
    with pytest.raises(VariantNotAvailable, match="fp16"):
        convert_fp16(model_files.broken, tmp_path / "out" / "model.fp16.onnx")
    with pytest.raises(VariantNotAvailable, match="not found"):
        convert_fp16(tmp_path / "absent.onnx", tmp_path / "out" / "model.fp16.onnx")
    assert list((tmp_path / "out").iterdir()) == []


def test_failed_conversion_keeps_an_existing_variant(
    tmp_path: Path, model_files: ModelFiles
) -> None:
    dst = tmp_path / "model.int8.onnx"
    dst.write_bytes(b"previous")
    with pytest.raises(VariantNotAvailable):
        quantize_int8(model_files.broken, dst)
    assert dst.read_bytes() == b"previous"


def test_make_variants_for_every_version_then_load_them(
    tmp_path: Path, model_files: ModelFiles
) -> None:
    model_dir = tmp_path / "repo" / "conv"
    for version in ("1", "2"):
        (model_dir / version).mkdir(parents=True)
        shutil.copyfile(model_files.conv, model_dir / version / "model.onnx")
    made = make_variants(model_dir, calibration=iter(_calibration(SEED)))  # consumed once
    assert sorted(p.relative_to(model_dir).as_posix() for p in made) == [
        "1/model.fp16.onnx", "1/model.int8.onnx", "2/model.fp16.onnx", "2/model.int8.onnx",
    ]  # fmt: skip
    repo = ModelRepository([tmp_path / "repo"])
    assert repo.entry("conv").variants == {"1": ("full", "int8", "fp16")} | {
        "2": ("full", "int8", "fp16")
    }
    images = _images(SEED + 2, 300)
    full = repo.load("conv", options=FAST).run({"image": images})["probs"]
    for variant in ("int8", "fp16"):
        other = repo.load("conv", "1", variant, FAST).run({"image": images})["probs"]
        assert _agreement(full, other) >= 0.95, f"{variant}, seed {SEED}"


def test_make_variants_accepts_a_version_dir(tmp_path: Path, model_files: ModelFiles) -> None:
    shutil.copyfile(model_files.matmul_softmax, tmp_path / "model.onnx")
    made = make_variants(tmp_path)
    assert sorted(p.name for p in made) == ["model.fp16.onnx", "model.int8.onnx"]


def test_make_variants_without_a_model_is_invalid(tmp_path: Path) -> None:
    with pytest.raises(InvalidModel):
        make_variants(tmp_path)
    with pytest.raises(InvalidModel):
        make_variants(tmp_path / "absent")


ALL = ("full", "int8", "fp16")


@pytest.mark.parametrize(
    ("available", "tier", "on_battery", "load", "expected"),
    [
        # light tier: cheapest first
        (ALL, "light", False, 0.0, "int8"),
        (("full", "fp16"), "light", False, 0.0, "fp16"),
        (("full",), "light", False, 0.0, "full"),
        # battery saver: cheapest first, whatever the tier
        (ALL, "standard", True, 0.0, "int8"),
        (ALL, "heavy", True, 0.0, "int8"),
        # standard tier: full unless busy
        (ALL, "standard", False, 0.0, "full"),
        (ALL, "standard", False, HIGH_LOAD - 0.01, "full"),
        (ALL, "standard", False, HIGH_LOAD, "int8"),
        (ALL, "standard", False, 1.5, "int8"),
        (("fp16", "int8"), "standard", False, 0.1, "int8"),
        (("full", "fp16"), "standard", False, 0.9, "fp16"),
        # heavy tier: accuracy first, even when busy
        (ALL, "heavy", False, 0.0, "full"),
        (ALL, "heavy", False, 0.99, "full"),
        (("int8", "fp16"), "heavy", False, 0.0, "fp16"),
        (("int8",), "heavy", False, 0.0, "int8"),
        # unknown variant names are ignored
        (("full", "int4"), "light", False, 0.0, "full"),
    ],
)
def test_choose_variant_table(
    available: tuple[str, ...], tier: str, on_battery: bool, load: float, expected: str
) -> None:
    assert choose_variant(available, tier, on_battery, load) == expected


@pytest.mark.parametrize(
    ("tier", "on_battery", "load", "expected"),
    [
        ("heavy", False, 0.0, "fp16"),
        ("standard", False, 0.0, "fp16"),
        ("light", False, 0.0, "int8"),
        ("standard", True, 0.0, "int8"),
    ],
)
def test_prefer_fp16_ranks_fp16_before_full(
    tier: str, on_battery: bool, load: float, expected: str
) -> None:
    assert choose_variant(ALL, tier, on_battery, load, prefer_fp16=True) == expected


def test_choose_variant_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="tier"):
        choose_variant(ALL, "huge", False, 0.0)
    with pytest.raises(ValueError, match="load"):
        choose_variant(ALL, "light", False, -0.1)
    with pytest.raises(ValueError, match="load"):
        choose_variant(ALL, "light", False, float("nan"))
    with pytest.raises(VariantNotAvailable):
        choose_variant((), "light", False, 0.0)
    with pytest.raises(VariantNotAvailable):
        choose_variant(("int4",), "heavy", False, 0.0)


def test_every_preference_lists_every_variant() -> None:
    for tier in ("light", "standard", "heavy"):
        for battery in (False, True):
            for load in (0.0, 0.5, 0.9):
                assert sorted(variant_preference(tier, battery, load)) == sorted(ALL)


def test_dynamic_int8_of_a_model_without_weights_is_not_available(
    tmp_path: Path, model_files: ModelFiles
) -> None:
    with pytest.raises(VariantNotAvailable, match="calibration"):
        quantize_int8(model_files.fixed, tmp_path / "model.int8.onnx")
    assert not (tmp_path / "model.int8.onnx").exists()


def test_variant_with_non_finite_outputs_is_refused(
    tmp_path: Path, model_files: ModelFiles
) -> None:
    """The check that catches fp16 overflow: non-finite where the full model is finite."""
    bad = models.divide_by_zero(tmp_path / "bad.onnx")
    with pytest.raises(VariantNotAvailable, match="non-finite 'y'"):
        _verify("fp16", model_files.fixed, bad)
    _verify("fp16", bad, bad)  # non-finite where the full model is too: accepted
    _verify("fp16", model_files.fixed, model_files.fixed)
    with pytest.raises(VariantNotAvailable, match="does not run"):
        _verify("fp16", model_files.fixed, model_files.broken)


def test_first_layers_are_found_and_nodes_named(model_files: ModelFiles) -> None:
    model, first = _named_model(model_files.conv)
    assert all(node.name for node in model.graph.node)
    assert [n.op_type for n in model.graph.node if n.name in first] == ["Conv"]
    _, only_layer = _named_model(model_files.matmul_softmax)
    assert only_layer == []  # keeping the only weighted layer in float would quantize nothing
