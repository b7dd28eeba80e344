"""The run-time estimate that picks inline or pool scales the warm-up's time by a request's
input elements: its batch size, and its height and width where those are dynamic (a large
image for a model warmed up on a small one must not run on the event loop's thread)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from moltmesh.inference import _expected_run_seconds

WARM = SimpleNamespace(typical_run_seconds=1e-4, warmup_elements=32 * 32)


def test_the_estimate_scales_with_the_batch() -> None:
    one = {"image": np.zeros((1, 1, 32, 32), np.float32)}
    eight = {"image": np.zeros((8, 1, 32, 32), np.float32)}
    assert _expected_run_seconds(WARM, one) == 1e-4  # type: ignore[arg-type]
    assert _expected_run_seconds(WARM, eight) == 8e-4  # type: ignore[arg-type]


def test_the_estimate_scales_with_a_larger_image_and_never_goes_below_the_warm_up() -> None:
    big = {"image": np.zeros((1, 1, 3000, 3000), np.float32)}
    small = {"image": np.zeros((1, 1, 8, 8), np.float32)}
    assert _expected_run_seconds(WARM, big) > 0.5  # type: ignore[arg-type]
    assert _expected_run_seconds(WARM, small) == 1e-4  # type: ignore[arg-type]
