"""Figures of ``bench/serve.py``: per-cell statistics, the targets, the tables and the Markdown.

``summarise`` turns a run's raw measurements into table rows and the Markdown body written to
docs/benchmarks.md; the verdict judges the targets on the servers running node defaults only
(``ServerSpec.judged``), the others being what-if comparisons.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.report import percentile

ENDPOINTS = ("hello", "binary", "json")
ECHO = "echo"  # aiohttp's POST floor: the binary infer request to a bare handler
FLOOR = "floor"  # the model floor: bench.serve_floor, the least a server of the model does
CLIENTS = ("lean", "aiohttp")  # load generators; the targets are judged with the first
LABELS = {"hello": "hello-world", "binary": "infer binary", "json": "infer JSON",
          ECHO: "POST echo (infer's body)", FLOOR: "model floor (infer's body)"}  # fmt: skip
OVERHEAD_TARGET_US = 150.0
RATE_TARGET = 0.35
US = 1e6
ORT_NOTE = (
    "Why the `intra 0` what-if: the node's default is `runtime.intra_op_threads = 1` because with "
    "0 onnxruntime starts one intra-op thread per core, pins it to a core of its own choosing "
    "(not confined by the process's CPU affinity: seen on this machine) and spin-waits between "
    "and within runs. A model this small runs inline on the event loop, so each request splits a "
    "~0.1 ms run across two threads, the loop thread waits for a worker that shares a CPU with "
    "someone else, and the spinning burns CPU: compare the server CPU µs/req of `uvloop` and "
    "`uvloop, intra 0`. Why the `inline batches` what-if: with `runtime.inline_threshold_ms` "
    "at 1 ms a batch of this model larger than about a dozen rows is expected to take longer "
    "than that and runs in the worker pool, so that the loop keeps serving meanwhile — on a "
    "device with a core to spare. Pinned to one core, as here, the hop to a worker and back only "
    "costs: compare the 32-client rows of `uvloop` and `uvloop, inline batches`."
)


@dataclass
class Cell:
    """Measurements of one (server, endpoint, clients) combination, pooled over rounds."""

    latencies: list[float] = field(default_factory=list)
    rounds: list[list[float]] = field(default_factory=list)  # the same latencies, per round
    rates: list[float] = field(default_factory=list)
    server_cpu_s: float = 0.0
    client_cpu_s: float = 0.0

    def add(self, latencies: list[float], rate: float, server_cpu_s: float, client_cpu_s: float):
        self.latencies += latencies
        self.rounds.append(latencies)
        self.rates.append(rate)
        self.server_cpu_s += server_cpu_s
        self.client_cpu_s += client_cpu_s

    def p(self, q: float) -> float:
        """The q-th percentile latency in µs."""
        return percentile(self.latencies, q) * US

    @property
    def rate(self) -> float:
        """Median over rounds of the requests per second."""
        return statistics.median(self.rates)

    def cpu_us(self, spent_s: float) -> float:
        return spent_s / len(self.latencies) * US

    def round_p50s(self) -> list[float]:
        """The p50 latency in µs of each round."""
        return [percentile(r, 50) * US for r in self.rounds]


def paired_overhead(hello: Cell, infer: Cell, run: list[list[float]]) -> float:
    """Median over rounds of p50(infer) − p50(hello) − p50(run), each from the same round.

    Pairing within a round cancels the drift of a shared machine between rounds.
    """
    runs = [percentile(r, 50) * US for r in run]
    return statistics.median(
        i - h - r for h, i, r in zip(hello.round_p50s(), infer.round_p50s(), runs, strict=True)
    )


def paired_diff(base: Cell, other: Cell) -> float:
    """Median over rounds of p50(other) − p50(base), each pair from the same round (µs)."""
    return statistics.median(
        o - b for b, o in zip(base.round_p50s(), other.round_p50s(), strict=True)
    )


def paired_ratio(hello: Cell, infer: Cell) -> float:
    """Median over rounds of req/s(infer) / req/s(hello), each pair from the same round."""
    return statistics.median(i / h for h, i in zip(hello.rates, infer.rates, strict=True))


def floor_label(intra_op_threads: int | None) -> str:
    """The floor row measured with the node's default session options, or with ``intra N``."""
    return "session.run" if intra_op_threads is None else f"session.run, intra {intra_op_threads}"


def paced_label(idle_us: float) -> str:
    """The floor row timed after ``idle_us`` of sleep before each call."""
    return f"session.run, after {idle_us:.0f} µs idle"


def _floor_rows(floor: dict[str, list[list[float]]]) -> list[list[str]]:
    pooled = {name: [x for r in rounds for x in r] for name, rounds in floor.items()}
    return [["(in-process)", "", name, "1", f"{percentile(v, 50) * US:.0f}",
             f"{percentile(v, 99) * US:.0f}", f"{len(v) / sum(v):,.0f}", "", ""]
            for name, v in pooled.items()]  # fmt: skip


def _overhead(cells: dict[tuple[str, str, str, int], Cell], label: str, client: str,
              run: list[list[float]]) -> float | None:  # fmt: skip
    """``paired_overhead`` of infer binary at 1 client, or None if not measured."""
    hello, binary = cells.get((label, client, "hello", 1)), cells.get((label, client, "binary", 1))
    if hello is None or binary is None:
        return None
    return paired_overhead(hello, binary, run)


def _post_floor(cells: dict[tuple[str, str, str, int], Cell], specs: list[Any]) -> str:
    """What the request's shape alone costs (``POST /echo`` against the hello-world), per
    judged server that served it: how much of each target it takes before the model runs."""
    parts = []
    for spec in specs:
        got = {(e, n): cells.get((spec.label, "lean", e, n)) for e in ("hello", ECHO, "binary")
               for n in (1, 32)}  # fmt: skip
        if not spec.judged or any(c is None for c in got.values()):
            continue
        hello32, echo32, bin32 = got[("hello", 32)], got[(ECHO, 32)], got[("binary", 32)]
        cpu = {e: c.cpu_us(c.server_cpu_s) for (e, n), c in got.items() if n == 32}  # type: ignore[union-attr]
        budget = cpu["hello"] / RATE_TARGET
        parts.append(
            f"{spec.label}: p50(echo) − p50(hello) at 1 client "
            f"{paired_diff(got[('hello', 1)], got[(ECHO, 1)]):.0f} µs (part of the judged "
            "overhead that is aiohttp's, before any moltmesh code runs); at 32 clients echo "
            f"serves {paired_ratio(hello32, echo32):.2f}× the hello-world's req/s and infer "
            f"binary {paired_ratio(echo32, bin32):.2f}× the echo's; server CPU per request "
            f"hello {cpu['hello']:.0f} µs, echo {cpu[ECHO]:.0f}, infer {cpu['binary']:.0f}: "
            f"0.35× the hello-world's rate on the one pinned core allows ≈ {budget:.0f} µs per "
            f"infer, of which the POST floor leaves {budget - cpu[ECHO]:.0f} µs for the model "
            f"and moltmesh (they take {cpu['binary'] - cpu[ECHO]:.0f})."
        )  # fmt: skip
    if not parts:
        return ""
    return ("The POST floor (`POST /echo`: the binary infer request, same headers and body, to "
            "a bare aiohttp handler on the same loop that reads the body and answers 40 bytes; "
            "paired medians over rounds): " + " ".join(parts))  # fmt: skip


def _model_floor(cells: dict[tuple[str, str, str, int], Cell], specs: list[Any]) -> str:
    """The model floor at 32 clients against the hello-world and the node, per server."""
    parts = []
    for spec in specs:
        got = {e: cells.get((spec.label, "lean", e, 32)) for e in ("hello", FLOOR, "binary")}
        if any(c is None for c in got.values()):
            continue
        hello, floor, node = got["hello"], got[FLOOR], got["binary"]
        cpu = {e: c.cpu_us(c.server_cpu_s) for e, c in got.items()}  # type: ignore[union-attr]
        parts.append(
            f"{spec.label}{_kind(spec)}: the floor serves {paired_ratio(hello, floor):.2f}× the "
            f"hello-world's req/s (rounds: {_rate_ratios(hello, floor)}) and the node "
            f"{paired_ratio(floor, node):.2f}× the floor's; server CPU per request floor "
            f"{cpu[FLOOR]:.0f} µs, node {cpu['binary']:.0f} µs."
        )  # fmt: skip
    if not parts:
        return ""
    return ("The model floor (`bench/serve_floor.py`, 32 clients: the same binary requests to the "
            "least an aiohttp server of this model can do on the same loop — aiohttp's low-level "
            "server, no token, admission, validation, deadlines or metrics, the node's batching "
            "rule, `session.run` inline; paired medians over rounds). Its ratio to the "
            "hello-world bounds what any aiohttp server of this model reaches on this core: "
            + " ".join(parts))  # fmt: skip


def _rate_ratios(base: Cell, other: Cell) -> str:
    return " ".join(f"{o / b:.2f}" for b, o in zip(base.rates, other.rates, strict=True))


def summarise(res: dict[str, Any], args: argparse.Namespace) -> tuple[list[list[str]], str]:
    """Rows of the main table (header first), and the Markdown body for docs/benchmarks.md."""
    cells: dict[tuple[str, str, str, int], Cell] = res["cells"]
    floor: dict[str, list[list[float]]] = res["floor"]
    info, specs = res["info"], res["specs"]
    header = ["server", "client", "endpoint", "clients", "p50 µs", "p99 µs", "req/s",
              "server CPU µs/req", "client CPU µs/req"]  # fmt: skip
    server_runs: dict[str, list[list[float]]] = res.get("server_runs", {})
    rows = _floor_rows(floor)
    for label, rounds in server_runs.items():
        pooled = [x for r in rounds for x in r]
        if not pooled:
            continue
        rows.append([f"{label} (inside)", "lean", "model run of infer binary", "1",
                     f"{percentile(pooled, 50) * US:.0f}", f"{percentile(pooled, 99) * US:.0f}",
                     "", "", ""])  # fmt: skip
    for (label, client, endpoint, clients), c in cells.items():
        rows.append([label, client, LABELS[endpoint], str(clients), f"{c.p(50):.0f}",
                     f"{c.p(99):.0f}", f"{c.rate:,.0f}", f"{c.cpu_us(c.server_cpu_s):.0f}",
                     f"{c.cpu_us(c.client_cpu_s):.0f}"])  # fmt: skip
    target_rows, verdicts, json_extra, json_cpu_extra = [], [], [], []
    for spec in specs:
        hello1, bin1, json1 = (cells[(spec.label, "lean", e, 1)] for e in ENDPOINTS)
        hello32, bin32, json32 = (cells[(spec.label, "lean", e, 32)] for e in ENDPOINTS)
        run = floor[floor_label(spec.intra_op_threads)]
        run_p50 = statistics.median(percentile(r, 50) * US for r in run)
        overhead = paired_overhead(hello1, bin1, run)
        paced = floor.get(paced_label(args.idle_us)) if spec.intra_op_threads is None else None
        paced_overhead = f"{paired_overhead(hello1, bin1, paced):.0f} µs" if paced else "n/a"
        inside = server_runs.get(spec.label)
        inside_overhead = (f"{paired_overhead(hello1, bin1, inside):.0f} µs"
                           if inside and all(inside) else "n/a")  # fmt: skip
        with_aiohttp = _overhead(cells, spec.label, "aiohttp", run)
        aio_hello32 = cells.get((spec.label, "aiohttp", "hello", 32))
        aio_bin32 = cells.get((spec.label, "aiohttp", "binary", 32))
        aio_ratio = (f"{paired_ratio(aio_hello32, aio_bin32):.2f}×" if aio_hello32 and aio_bin32
                     else "n/a")  # fmt: skip
        cpu_overhead = bin1.cpu_us(bin1.server_cpu_s) - hello1.cpu_us(hello1.server_cpu_s) - run_p50
        ratio = paired_ratio(hello32, bin32)
        ok1, ok2 = overhead <= OVERHEAD_TARGET_US, ratio >= RATE_TARGET
        if spec.judged:
            verdicts += [ok1, ok2]
            json_extra.append(json1.p(50) - bin1.p(50))
        # server CPU per request, JSON minus binary, at 1 and at 32 clients (all servers)
        json_cpu_extra += [
            j.cpu_us(j.server_cpu_s) - b.cpu_us(b.server_cpu_s)
            for j, b in ((json1, bin1), (json32, bin32))
        ]
        target_rows.append(
            f"| {spec.label}{_kind(spec)} | {overhead:.0f} µs "
            f"{_mark(ok1)} | {paced_overhead} | {inside_overhead} | {cpu_overhead:.0f} µs | "
            f"{ratio:.2f}× {_mark(ok2)} | "
            f"{json1.p(50) - bin1.p(50):.0f} µs | {paired_ratio(hello32, json32):.2f}× | "
            + (f"{with_aiohttp:.0f} µs" if with_aiohttp is not None else "n/a")
            + f" | {aio_ratio} |"
        )
    codec = info["codec"]
    codec_extra = (codec["parse json"] - codec["parse binary"]
                   + codec["encode json"] - codec["encode binary"])  # fmt: skip
    extra = statistics.median(json_extra) if json_extra else float("nan")
    share = f"{codec_extra / extra * 100:.0f} %" if extra > 0 else "n/a"
    cpu_extra = statistics.median(json_cpu_extra)
    cpu_share = f"{codec_extra / cpu_extra * 100:.0f} %" if cpu_extra > 0 else "n/a"
    servers = "; ".join(
        f"{label}: `{d['loop']}`, intra_op_threads {d['intra_op_threads']}, variant "
        f"{d['variant']}, runs inline on the loop: {d['inline']}"
        for label, d in info["servers"].items()
    )
    model = ("a stand-in conv model with the bundled model's I/O (3 conv stages, 16-32-64 "
             "channels; `bench/serve_server.py:fallback_repository`), because the bundled "
             "`defects` model was not committed yet" if info["fallback"]
             else "the bundled `defects` model")  # fmt: skip
    model += f" ({info['model_file']})"
    ratio_bytes = codec["body bytes json"] / codec["body bytes binary"]
    body = [
        f"Model: {model}; batch 1, one 32×32 FP32 image. Servers — {servers}. Clients, on "
        f"{args.client_loop}, one keep-alive connection per concurrent client: `lean` is "
        "`bench/serve_load.py:LeanConnection`, a minimal HTTP/1.1 client that writes the request "
        "as prebuilt bytes and reads the status line, headers and Content-Length body (a fixed "
        "cost per request whatever the endpoint, like wrk's); `aiohttp` is an aiohttp "
        "`ClientSession` (kept for comparison: its per-request cost is larger for the infer POST "
        "than for the hello GET, which counts against the server). "
        + ("client pinned to CPU 0, servers to CPU 1. " if info["pinned"] else "not pinned. ")
        + f"{args.rounds} interleaved rounds; per cell and round {args.requests_1} requests "
        f"(1 client) or {args.requests_32} (32 clients), capped at {args.max_seconds:g} s, after "
        f"{args.warmup} warm-up requests. p50/p99 pool all rounds; req/s is the median of the "
        "rounds; CPU µs/req is process CPU time (all threads) over the measured requests. "
        "`intra N` rows and servers use `runtime.intra_op_threads = N` (what-if, not the "
        f"default). 1-minute load average {info['load_before']:.1f} at the start and "
        f"{info['load_after']:.1f} at the end (the machine is shared; latencies at 1 client "
        "include waiting for a CPU).",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(r) + " |" for r in rows),
        "",
        "Targets (binary tensors, judged with the `lean` client): overhead = p50(infer) − "
        "p50(hello) − p50(session.run with the same session options) at 1 client, target ≤ 150 "
        "µs; req/s ratio infer / hello at 32 clients, target ≥ 0.35×. Both are paired: "
        "computed within each round from that round's cells (measured minutes apart at most) "
        "and then the median over rounds is taken, so drift of the shared machine between "
        "rounds cancels. The third column takes "
        f"the `{paced_label(args.idle_us)}` row as p50(run) instead: the same session, but the "
        "thread sleeps before each call as a 1-client server's loop sleeps between requests "
        "(on this VM a run that follows an idle CPU is slower than one in a busy loop, which "
        "the judged column counts as overhead). The fourth takes the model's runs as the node "
        "itself made them during the 1-client infer binary cell (`Runtime.run` timed in place "
        "by `bench/serve_server.py`, the `(inside)` rows above): what is left is the HTTP and "
        "moltmesh code alone, and the gap between the judged column and this one is the model "
        "running slower in the server than in a loop of its own (likely its caches cooled by "
        "the request handling in between, not measured; with `intra 0` also the wait for "
        "onnxruntime's worker threads), a cost of serving that the judged column counts. The "
        "fifth column redoes "
        "the overhead with the server's CPU time per request instead of p50 latencies (less "
        "sensitive to scheduling delays on a shared machine, but it counts onnxruntime's "
        "spinning worker threads). The last two columns are the same targets measured with "
        "the aiohttp client, for comparison.",
        "",
        "| server | overhead, 1 client | same vs paced run | same vs the run inside the node "
        "| same from server CPU µs/req "
        "| req/s ratio, 32 clients | JSON − binary p50, 1 client | JSON req/s ratio, 32 clients "
        "| overhead, aiohttp client | req/s ratio, aiohttp client |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *target_rows,
        "",
        f"JSON's cost, in-process (p50 of {args.codec_count} calls): `v2.parse_infer_request` "
        f"{codec['parse json']:.0f} µs for the JSON body ({codec['body bytes json']:.0f} bytes) "
        f"vs {codec['parse binary']:.0f} µs binary ({codec['body bytes binary']:.0f} bytes); "
        f"`v2.encode_infer_response` of the [1,4] answer {codec['encode json']:.0f} vs "
        f"{codec['encode binary']:.0f} µs; a client's `json.dumps` of the image "
        f"{codec['client json.dumps']:.0f} µs (paid once here: the bench replays a prepared "
        f"body). The server-side codec difference, {codec_extra:.0f} µs, is {share} of the "
        f"{extra:.0f} µs by which JSON's p50 exceeds binary's at 1 client (median over the "
        f"default-config servers), and {cpu_share} of the {cpu_extra:.0f} µs of extra server "
        "CPU time per JSON request (median over all servers and both client counts); the rest "
        f"is moving a {ratio_bytes:.1f}× larger body through both HTTP stacks.",
    ]
    for note in (_post_floor(cells, specs), _model_floor(cells, specs)):
        if note:
            body += ["", note]
    profiles = info.get("profile", [])
    for prof in [profiles] if isinstance(profiles, dict) else profiles:
        body += ["", *_profile_table(prof)]
    if any(not spec.judged for spec in specs):
        body += ["", ORT_NOTE]
    verdict = "all targets met" if verdicts and all(verdicts) else "NOT all targets met"
    body.append(f"\nVerdict on the node's default config: {verdict}.")
    return [header, *rows], "\n".join(body) + "\n"


def _profile_table(prof: dict[str, Any]) -> list[str]:
    """Server CPU per request by component, hello-world vs infer binary (see serve_profile)."""
    hello, binary = prof["hello"], prof["binary"]
    names = sorted(set(hello["shares"]) | set(binary["shares"]),
                   key=lambda n: -binary["shares"].get(n, 0.0))  # fmt: skip
    rows = []
    for name in names:
        h = hello["shares"].get(name, 0.0) * hello["cpu_us"]
        b = binary["shares"].get(name, 0.0) * binary["cpu_us"]
        rows.append(f"| {name} | {h:.0f} | {b:.0f} | {b - h:+.0f} |")
    clients = prof.get("clients", 1)
    who = "1 `lean` client" if clients == 1 else f"{clients} `lean` clients"
    return [
        f"Where the server's CPU goes per request (server `{prof['server']}`, {who}, "
        f"py-spy sampling the server: {hello['count']} hello-world and {binary['count']} infer "
        "binary requests; each sample charged to its innermost Python frame, shares scaled by "
        "the server CPU µs/req measured over the same requests — `bench/serve_profile.py`). "
        "Native code counts under the Python frame that called it: the event loop's row also "
        "holds its idle waits (py-spy samples a thread waiting in epoll as a running one); "
        "thread-pool workers waiting for work are left out. Under py-spy the figures are a "
        "little higher than in the table above.",
        "",
        "| component | hello-world µs/req | infer binary µs/req | infer − hello |",
        "|---|---|---|---|",
        *rows,
        f"| **total** | {hello['cpu_us']:.0f} | {binary['cpu_us']:.0f} | "
        f"{binary['cpu_us'] - hello['cpu_us']:+.0f} |",
    ]


def _kind(spec: Any) -> str:
    if spec.judged:
        return ""
    return " (before)" if getattr(spec, "root", None) is not None else " (what-if)"


def _mark(ok: bool) -> str:
    return "**met**" if ok else "**missed**"


def print_tables(rows: list[list[str]], body: str) -> None:
    """The main table with rich, then the targets and the JSON paragraph as Markdown text."""
    console = Console(width=None if sys.stdout.isatty() else 140)
    table = Table(title="moltmesh serving benchmark")
    for col in rows[0]:
        table.add_column(
            col, justify="left" if col in ("server", "client", "endpoint") else "right"
        )
    for r in rows[1:]:
        table.add_row(*r)
    console.print(table)
    console.print("Targets" + body.split("\n\nTargets", 1)[1], markup=False)
