"""The serving benchmark's py-spy breakdown charges samples to components (bench/serve_profile)."""

from __future__ import annotations

from bench.serve_profile import IDLE_WORKER, OTHER, breakdown


def test_breakdown_charges_innermost_frames_and_leaves_idle_pool_workers_out():
    raw = "\n".join(
        [
            "Runner.run (asyncio/runners.py:118);InferRoute.infer (moltmesh/api.py:250) 3",
            "Runner.run (asyncio/runners.py:118);encode_infer_response (moltmesh/v2.py:380) 1",
            f"_bootstrap (threading.py:995);{IDLE_WORKER[:-1]}:83) 50",
            "main (x.py:1);json_thing (json/encoder.py:10) 4",
            "garbage line without a count",
        ]
    )
    shares = breakdown(raw)
    assert shares == {
        "moltmesh API handler + middleware (`api.py`)": 3 / 8,
        "moltmesh v2 codec (`v2.py`, its json calls)": 1 / 8,
        OTHER: 4 / 8,
    }
