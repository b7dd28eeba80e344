"""Run many seeds across worker processes with a progress bar, and summarise.

``sweep(fn, seeds, workers)`` calls the picklable top-level function ``fn(seed)`` for every seed
(in worker processes when ``workers > 1``) and returns the results in seed order. Results are
expected to carry ``seed``, ``ok`` and ``failure`` attributes (like ``RaftRunResult``); the first
failures are printed as they come, with their reproduce command, so a long sweep is useful even
if interrupted.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

R = TypeVar("R")
MAX_FAILURES_SHOWN = 5


def parse_seeds(text: str) -> list[int]:
    """``"7"`` -> [7]; ``"0:1000"`` -> 0..999; ``"1,5,9"`` -> [1, 5, 9]."""
    if ":" in text:
        lo, hi = text.split(":", 1)
        a, b = int(lo), int(hi)
        if b <= a:
            raise ValueError(f"empty seed range {text!r}")
        return list(range(a, b))
    return [int(x) for x in text.split(",") if x.strip()]


def sweep(
    fn: Callable[[int], R],
    seeds: Iterable[int],
    workers: int = 1,
    *,
    console: Console | None = None,
    label: str = "seeds",
) -> list[R]:
    """Run ``fn`` over ``seeds``; see the module docstring."""
    seeds = list(seeds)
    console = console or Console(stderr=True)
    results: dict[int, R] = {}
    shown = 0
    columns = (
        TextColumn(f"[bold]{label}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("failed: {task.fields[failed]}"),
        TimeRemainingColumn(),
    )
    failed = 0

    def record(progress: Progress, task: Any, seed: int, res: Any) -> None:
        nonlocal failed, shown
        results[seed] = res
        if not getattr(res, "ok", True):
            failed += 1
            if shown < MAX_FAILURES_SHOWN:
                shown += 1
                progress.console.print(f"[red]seed {seed} FAILED[/red]\n{res.failure}")
        progress.update(task, advance=1, failed=failed)

    if workers <= 1:
        with Progress(*columns, console=console) as progress:
            task = progress.add_task(label, total=len(seeds), failed=0)
            for s in seeds:
                record(progress, task, s, fn(s))
        return [results[s] for s in seeds]
    # Fork the workers (at the first submit) before the progress bar starts its refresh thread.
    ctx = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        futures = {pool.submit(fn, s): s for s in seeds}
        with Progress(*columns, console=console) as progress:
            task = progress.add_task(label, total=len(seeds), failed=0)
            for fut in as_completed(futures):
                record(progress, task, futures[fut], fut.result())
    return [results[s] for s in seeds]
