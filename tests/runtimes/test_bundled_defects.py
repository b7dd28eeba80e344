"""The bundled defect classifier makes int8 and fp16 variants that agree with the full model."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from runtimes.onnx import OnnxOptions
from runtimes.repository import ModelRepository
from runtimes.variants import convert_fp16, quantize_int8

BUNDLED = Path(__file__).resolve().parents[2] / "moltmesh" / "bundled" / "models"
MODEL = "defects"
SAMPLES = 1_000
MIN_AGREEMENT = 0.97
MIN_FP16_AGREEMENT = 0.995

pytestmark = pytest.mark.skipif(
    not (BUNDLED / MODEL).is_dir(), reason=f"bundled model {MODEL} not built yet"
)


def test_int8_and_fp16_agree_with_full_on_generated_samples(tmp_path: Path) -> None:
    defects = pytest.importorskip("moltmesh.bundled.defects")
    bundled = ModelRepository([BUNDLED])
    _, version, full_path = bundled.resolve(MODEL)
    work = tmp_path / MODEL / version
    work.mkdir(parents=True)
    shutil.copyfile(full_path, work / "model.onnx")

    options = OnnxOptions(warmup_runs=1)
    full = ModelRepository([tmp_path]).load(MODEL, options=options)
    [image_input] = full.metadata.inputs
    output = full.metadata.outputs[0].name

    calibration_seed = defects.TRAIN_SEED + 1
    calibration = defects.generate(calibration_seed, 256).images
    quantize_int8(
        work / "model.onnx",
        work / "model.int8.onnx",
        [{image_input.name: calibration[i : i + 16]} for i in range(0, len(calibration), 16)],
    )
    convert_fp16(work / "model.onnx", work / "model.fp16.onnx")
    int8 = ModelRepository([tmp_path]).load(MODEL, variant="int8", options=options)
    fp16 = ModelRepository([tmp_path]).load(MODEL, variant="fp16", options=options)

    test_seed = defects.TEST_SEED
    images = defects.generate(test_seed, SAMPLES).images
    full_class = full.run({image_input.name: images}, [output])[output].argmax(axis=1)
    int8_class = int8.run({image_input.name: images}, [output])[output].argmax(axis=1)
    agreement = float(np.mean(full_class == int8_class))
    assert agreement >= MIN_AGREEMENT, (
        f"int8 agrees with full on {agreement:.1%} of {SAMPLES} samples "
        f"(test seed {test_seed}, calibration seed {calibration_seed})"
    )
    fp16_class = fp16.run({image_input.name: images}, [output])[output].argmax(axis=1)
    fp16_agreement = float(np.mean(full_class == fp16_class))
    assert fp16_agreement >= MIN_FP16_AGREEMENT, (
        f"fp16 agrees with full on {fp16_agreement:.1%} (test seed {test_seed})"
    )
