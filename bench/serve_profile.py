"""Where a server's CPU goes per request: py-spy samples grouped by component (``bench.serve``).

``profile_server`` attaches ``py-spy record --format raw`` (non-blocking) to a running bench
server while a load runs, and ``breakdown`` turns the samples into shares per component: each
sample is charged to the component of its innermost frame (self time). The shares are then
scaled by the server CPU time per request measured over the same load, so a row reads "µs of
server CPU per request spent in this component" even when py-spy also samples time a thread
spent runnable but waiting for a CPU on a loaded machine (it cannot tell the two apart).

Native code shows up under the innermost Python frame that called it: onnxruntime's kernels
under ``Session.run`` or, where ``OnnxRuntime.run`` calls the compiled session directly, under
``OnnxRuntime.run`` (whose own few lines are charged there too), the event loop's own C code
(uvloop, or asyncio's selector and socket calls) under ``Runner.run`` or the asyncio frames.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import sys
import tempfile
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

# (component, test on the innermost frame "function (path:line)") — first match wins.
COMPONENTS: list[tuple[str, Callable[[str], bool]]] = [
    (
        "onnxruntime session run (C++ kernels)",
        lambda f: f.startswith("Session.run (") or f.startswith("OnnxRuntime.run ("),
    ),
    ("onnxruntime Python wrapper", lambda f: "onnxruntime/" in f),
    ("`runtimes/` (input checks, `OnnxRuntime.run`)", lambda f: "runtimes/" in f),
    ("moltmesh v2 codec (`v2.py`, its json calls)", lambda f: "moltmesh/v2.py" in f),
    (
        "moltmesh API handler + middleware (`api.py`)",
        lambda f: "moltmesh/api.py" in f or "moltmesh/identity.py" in f,
    ),
    ("moltmesh admission (`inference.py`)", lambda f: "moltmesh/inference.py" in f),
    ("moltmesh dynamic batching (`batching.py`)", lambda f: "moltmesh/batching.py" in f),
    (
        "thread pool hand-off (`concurrent.futures`, `threading`)",
        lambda f: "concurrent/futures/" in f or "/threading.py" in f or "(threading.py" in f,
    ),
    ("metrics", lambda f: "moltmesh/metrics.py" in f or "prometheus_client/" in f),
    ("numpy", lambda f: "numpy/" in f),
    ("aiohttp routing", lambda f: "aiohttp/web_urldispatcher.py" in f),
    (
        "aiohttp app + middleware dispatch",
        lambda f: "aiohttp/web_app.py" in f or "aiohttp/web_middlewares.py" in f,
    ),
    (
        "aiohttp response (build, headers, write)",
        lambda f: "aiohttp/web_response.py" in f or "aiohttp/http_writer.py" in f,
    ),
    (
        "aiohttp request (protocol, parser, request object)",
        lambda f: any(m in f for m in ("aiohttp/", "multidict/", "yarl/")),
    ),
    (
        "event loop + sockets (C, under `Runner.run`/asyncio)",
        lambda f: "asyncio/" in f or "uvloop/" in f,
    ),
]
OTHER = "other Python (json, dataclasses, ...)"
IDLE_WORKER = "_worker (concurrent/futures/thread.py)"
"""The innermost frame of a thread-pool worker waiting for work: py-spy ``--nonblocking``
samples such threads although they use no CPU (they do not count, see ``breakdown``)."""
_LINE = re.compile(r":\d+\)$")


def component(frame: str) -> str:
    """The component charged for a sample whose innermost frame is ``frame``."""
    for name, test in COMPONENTS:
        if test(frame):
            return name
    return OTHER


def breakdown(raw: str) -> dict[str, float]:
    """Share (0..1) of samples per component, from py-spy's ``--format raw`` output.

    Samples of idle thread-pool workers (innermost frame ``IDLE_WORKER``, blocked waiting for
    work) are left out: with batches running in the pool (many clients) they would otherwise
    take a share of the CPU they do not use.
    """
    counts: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        frame = _LINE.sub(")", stack.split(";")[-1])
        if frame == IDLE_WORKER:
            continue
        counts[component(frame)] += int(n)
    total = sum(counts.values())
    return {name: n / total for name, n in counts.items()} if total else {}


def py_spy() -> str | None:
    """The py-spy executable beside this interpreter, or on PATH; None when absent."""
    here = Path(sys.executable).with_name("py-spy")
    return str(here) if here.exists() else shutil.which("py-spy")


async def profile_server(
    pid: int, seconds: float, load: Callable[[], Awaitable[None]], rate_hz: int = 1000
) -> str:
    """Run ``load()`` while py-spy samples process ``pid``; returns the raw samples.

    Raises RuntimeError when py-spy is missing or fails (e.g. no ptrace permission).
    """
    exe = py_spy()
    if exe is None:
        raise RuntimeError("py-spy not found (pip install py-spy)")
    with tempfile.TemporaryDirectory(prefix="moltmesh-prof-") as tmp:
        out = Path(tmp) / "samples.txt"
        proc = await asyncio.create_subprocess_exec(
            exe, "record", "--nonblocking", "-r", str(rate_hz), "-d", str(max(1, round(seconds))),
            "-p", str(pid), "-f", "raw", "-o", str(out),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        await load()
        _, err = await proc.communicate()
        if proc.returncode != 0 or not out.exists():
            raise RuntimeError(f"py-spy failed ({proc.returncode}): {err.decode()[-300:]}")
        return out.read_text(encoding="utf-8")
