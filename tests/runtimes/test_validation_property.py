"""Property: any tensor a client can send either runs or is refused with InvalidInput."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from runtimes.base import V2_DATATYPES, numpy_dtype
from runtimes.errors import InvalidInput
from runtimes.onnx import OnnxOptions, OnnxRuntime
from tests.runtimes.conftest import ModelFiles

NUMERIC = [d for d in V2_DATATYPES if d != "BYTES"]


@st.composite
def tensors(draw: st.DrawFn, batch: int) -> np.ndarray:
    """Mostly a well-formed FP32 [batch, 3] tensor, otherwise any dtype and shape."""
    if draw(st.integers(0, 3)) > 0:
        return np.ones((batch, 3), dtype=np.float32)
    datatype = draw(st.sampled_from(NUMERIC))
    shape = tuple(draw(st.lists(st.sampled_from([0, 1, 2, 3, 5]), min_size=0, max_size=3)))
    return np.zeros(shape, dtype=numpy_dtype(datatype))


@pytest.fixture(scope="module")
def runtime(model_files: ModelFiles) -> OnnxRuntime:
    return OnnxRuntime(model_files.two, options=OnnxOptions(warmup_runs=1))


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data(), batch=st.integers(0, 3), extra=st.integers(0, 4))
def test_inputs_run_or_are_refused(
    runtime: OnnxRuntime, data: st.DataObject, batch: int, extra: int
) -> None:
    a = data.draw(tensors(batch), label="a")
    b = data.draw(tensors(batch if data.draw(st.booleans()) else 2), label="b")
    extra_input = extra == 0
    feed = {"a": a, "b": b}
    if extra_input:
        feed["c"] = a
    fits = (
        not extra_input
        and all(x.dtype == np.float32 and x.ndim == 2 and x.shape[1] == 3 for x in (a, b))
        and a.shape[0] == b.shape[0]
    )
    if fits:
        out = runtime.run(feed)
        assert out["sum"].shape == a.shape
        event("ran")
    else:
        with pytest.raises(InvalidInput):
            runtime.run(feed)
