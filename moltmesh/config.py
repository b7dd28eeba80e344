"""The node's configuration: one typed tree.

Sources, later ones winning: the defaults below (good for a LAN), a TOML file (``--config``),
``MOLTMESH_*`` environment variables, and CLI flags. Environment names are
``MOLTMESH_<SECTION>_<KEY>`` for a key in a section (``MOLTMESH_API_PORT=9000``) and
``MOLTMESH_<KEY>`` for a top-level key (``MOLTMESH_DATA_DIR=/var/lib/moltmesh``). Section names
contain no underscore, so the split is unambiguous. Unknown keys and badly typed values raise
``ConfigError`` naming the key and the source.

Every value is then checked (``NodeConfig.validate``): integers in range, times and sizes finite
numbers in range (NaN and infinity are refused wherever they make no sense), names from their
lists, ``host:port`` strings well formed, ``runtime.model_repository`` roots existing directories
and the API's TLS files readable (checked against the disk when validated). Each section's
``problems()`` returns one message per bad value, each beginning with the dotted key it is about;
``load_config`` adds where the value came from (file, environment variable or flag).
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENV_PREFIX = "MOLTMESH_"


class ConfigError(ValueError):
    """A configuration value is unknown, badly typed or out of range; the message names it."""


def _range_text(lo: float, hi: float | None, above: bool) -> str:
    if hi is not None:
        return f"{lo:g}..{hi:g}"
    if above:
        return f"more than {lo:g}"
    return "0 or more" if lo == 0 else f"at least {lo:g}"


def check_int(key: str, value: Any, lo: int, hi: int | None = None) -> list[str]:
    """``[]`` when ``value`` is an int (not a bool) in ``lo..hi``; else a message naming ``key``."""
    if isinstance(value, bool) or not isinstance(value, int):
        return [f"{key} must be an integer, got {value!r}"]
    if value < lo or (hi is not None and value > hi):
        return [f"{key} must be {_range_text(lo, hi, False)}, got {value!r}"]
    return []


def check_number(
    key: str, value: Any, lo: float, hi: float | None = None, *, above: bool = False
) -> list[str]:
    """``[]`` when ``value`` is a finite number >= ``lo`` (> ``lo`` with ``above``), <= ``hi``.

    NaN and infinities are refused: every number in this config is a time, a size or a rate
    where they make no sense (and NaN compares false with everything, passing naive checks).
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        return [f"{key} must be a number, got {value!r}"]
    if (
        not math.isfinite(value)
        or value < lo
        or (above and value == lo)
        or (hi is not None and value > hi)
    ):
        return [f"{key} must be a finite number {_range_text(lo, hi, above)}, got {value!r}"]
    return []


def check_choice(key: str, value: Any, choices: tuple[str, ...]) -> list[str]:
    """``[]`` when ``value`` is one of ``choices``; else a message listing them."""
    if value in choices:
        return []
    listed = ", ".join(choices[:-1]) + f" or {choices[-1]}" if len(choices) > 1 else choices[0]
    return [f"{key} must be {listed}, got {value!r}"]


def check_dir(key: str, path: Path) -> list[str]:
    """``[]`` when ``path`` is an existing directory; else a message naming ``key`` and ``path``."""
    path = Path(path)
    try:
        if path.is_dir():
            return []
        reason = "is not a directory" if path.exists() else "does not exist"
    except OSError as e:
        reason = f"cannot be read ({e.strerror})"
    return [f"{key}: {path} {reason}"]


def check_readable(key: str, path: Path | None) -> list[str]:
    """``[]`` when ``path`` is None or a file this process can open; else a message naming
    ``key``, ``path`` and why."""
    if path is None:
        return []
    try:
        Path(path).open("rb").close()
    except OSError as e:
        return [f"{key} {path}: {e.strerror or e}"]
    return []


def check_address(key: str, value: Any) -> list[str]:
    """``[]`` when ``value`` is ``host:port`` (or ``[v6]:port``) with a port 1..65535."""
    host, sep, port = value.rpartition(":") if isinstance(value, str) else ("", "", "")
    if not sep or not host.strip("[]") or not port.isdigit() or not 0 < int(port) < 65536:
        return [f"{key} must be host:port with a port 1..65535, got {value!r}"]
    return []


def default_data_dir() -> Path:
    """``$XDG_DATA_HOME/moltmesh``, or ``~/.local/share/moltmesh``."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "moltmesh"


@dataclass
class ApiConfig:
    """The HTTP API (KServe v2 inference protocol, mesh endpoints, /metrics)."""

    enabled: bool = True
    host: str = "127.0.0.1"  # loopback unless told otherwise: the API is not for the LAN by default
    port: int = 8470
    tls_cert: Path | None = None  # serve HTTPS when both cert and key are given
    tls_key: Path | None = None
    max_body_bytes: int = 64 * 2**20  # larger requests get 413
    shutdown_grace_s: float = 10.0  # how long in-flight requests may take to finish on stop
    idle_timeout_s: float = 5.0  # a connection idle, or without a whole request head, is closed
    max_connections: int = 256  # connections at once; more get 503 and are closed
    body_timeout_s: float = 30.0  # a body arrives within this plus its length at min_body_rate
    min_body_rate: int = 64 * 1024  # bytes/s; slower bodies get 408

    def problems(self) -> list[str]:
        """Messages for every nonsensical value (empty when the section is usable)."""
        return [
            *check_int("api.port", self.port, 0, 65535),
            *check_int("api.max_body_bytes", self.max_body_bytes, 1),
            *check_number("api.shutdown_grace_s", self.shutdown_grace_s, 0),
            *check_number("api.idle_timeout_s", self.idle_timeout_s, 0, above=True),
            *check_int("api.max_connections", self.max_connections, 1),
            *check_number("api.body_timeout_s", self.body_timeout_s, 0, above=True),
            *check_int("api.min_body_rate", self.min_body_rate, 1),
            *(
                []
                if (self.tls_cert is None) == (self.tls_key is None)
                else ["api.tls_cert and api.tls_key go together: give both or neither"]
            ),
            *check_readable("api.tls_cert", self.tls_cert),
            *check_readable("api.tls_key", self.tls_key),
        ]


@dataclass
class RuntimeConfig:
    """Model execution: where models are, how they run, how much work is admitted."""

    model_repository: list[Path] = field(default_factory=list)  # user repos, before the bundled one
    bundled_models: bool = True  # serve the bundled default models (user models win on a clash)
    variant: str = "auto"  # full | int8 | fp16 | auto (chosen by tier, battery and load)
    # onnxruntime threads inside one operator. 1: its default pool (a spinning thread per core,
    # pinned outside our affinity) cost 5x the CPU per request of the bundled model
    # (bench/serve.py); parallelism comes from concurrent requests instead. 0 = its default.
    intra_op_threads: int = 1
    inter_op_threads: int = 1  # threads across operators; models here are mostly sequential
    workers: int = 2  # thread pool running slow models off the event loop
    inline_threshold_ms: float = 1.0  # models measured faster than this run on the loop itself
    warmup_runs: int = 3
    # requests for one model that arrive together run as one batch of up to this many rows
    # (models whose inputs and outputs share a dynamic first axis); 1 turns batching off
    max_batch: int = 32
    max_inflight: int = 8  # runs executing at once (a batch is one run)
    max_queue: int = 64  # requests waiting beyond max_inflight; more get 429
    default_deadline_ms: float = 30_000.0  # deadline when a request names none

    def problems(self) -> list[str]:
        """Messages for every nonsensical value (empty when the section is usable).

        A ``model_repository`` root that does not exist (or is a file) is a problem: a mistyped
        path would otherwise start a node serving only the bundled models, or none.
        """
        return [
            *[
                m
                for root in self.model_repository
                for m in check_dir("runtime.model_repository", root)
            ],
            *check_choice("runtime.variant", self.variant, ("auto", "full", "int8", "fp16")),
            *check_int("runtime.intra_op_threads", self.intra_op_threads, 0),
            *check_int("runtime.inter_op_threads", self.inter_op_threads, 0),
            *check_int("runtime.workers", self.workers, 1),
            *check_number("runtime.inline_threshold_ms", self.inline_threshold_ms, 0),
            *check_int("runtime.warmup_runs", self.warmup_runs, 0),
            *check_int("runtime.max_batch", self.max_batch, 1),
            *check_int("runtime.max_inflight", self.max_inflight, 1),
            *check_int("runtime.max_queue", self.max_queue, 0),
            *check_number("runtime.default_deadline_ms", self.default_deadline_ms, 0, above=True),
        ]


@dataclass
class DiscoveryConfig:
    """mDNS discovery (``moltmesh.discovery``): where to announce and browse for peers.

    A discovered peer is only a candidate; it joins through the mesh's authenticated path.
    """

    enabled: bool = True
    # loopback (dev and tests: never the host's real network card) | all (a device on a LAN)
    # | interface names (eth0) | IPv4 addresses; see moltmesh.discovery.interfaces
    interfaces: list[str] = field(default_factory=lambda: ["loopback"])
    probe: bool = True  # probe for a clash of our name before announcing (RFC 6762, ~1 s)
    resolve_timeout_ms: int = 3000  # wait for a browsed peer's SRV/TXT/A records this long

    def problems(self) -> list[str]:
        """Messages for every nonsensical value (empty when the section is usable).

        Interface names are checked against the host's network cards when discovery starts.
        """
        empty = self.enabled and not self.interfaces
        return [
            *check_int("discovery.resolve_timeout_ms", self.resolve_timeout_ms, 1),
            *(["discovery.interfaces is empty: name loopback, all or interfaces"] if empty else []),
        ]


@dataclass
class MeshConfig:
    """The mesh (``moltmesh.mesh``): credentials, sealed UDP gossip and mutual-TLS streams.

    TCP streams and UDP gossip share one port number. Times are seconds.
    """

    host: str = "0.0.0.0"  # listen address of mesh streams and gossip (peers must reach it)
    port: int = 8471  # TCP (TLS streams) and UDP (sealed gossip); 0 picks a free one
    advertise: str = ""  # host:port peers should use to reach us; empty = guessed from host/port
    seeds: list[str] = field(default_factory=list)  # host:port of peers to meet first
    cert_lifetime_s: float = 30 * 86400.0  # node certificates; renewed at 2/3 of this
    cert_backdate_s: float = 3600.0  # not-before set this far in the past (clock drift)
    max_clock_skew_s: float = 300.0  # clocks agree this well: joins, gossip boot epochs (README)
    renew_check_s: float = 3600.0  # how often a node checks whether its certificate is due
    token_ttl_s: float = 86400.0  # default lifetime of a join token
    connect_timeout_s: float = 5.0  # TCP connect plus TLS handshake
    request_timeout_s: float = 10.0  # one request on a stream, write to reply
    idle_timeout_s: float = 60.0  # an idle stream is closed after this
    max_connections: int = 256  # inbound connections (handshakes, joins, members); see README
    max_frame_bytes: int = 8 * 2**20  # hard limit on one TCP frame
    max_datagram_bytes: int = 2048  # hard limit on one UDP datagram (SWIM packets ~1400 bytes)
    replay_window: int = 1024  # datagram counters remembered per sender
    swim: str = "lan"  # SWIM timing preset: lan (memberlist defaults) | wan | local (tests)
    leave_timeout_s: float = 3.0  # on stop, wait this long for our departure to be gossiped
    meta_refresh_s: float = 5.0  # how often load and capability metadata are re-read

    def problems(self) -> list[str]:
        """Messages for every nonsensical value (empty when the section is usable)."""
        found = [
            *check_int("mesh.port", self.port, 0, 65535),
            *(check_address("mesh.advertise", self.advertise) if self.advertise else []),
            *[m for seed in self.seeds for m in check_address("mesh.seeds", seed)],
            *check_number("mesh.cert_backdate_s", self.cert_backdate_s, 0),
            # at most the CA's own lifetime (moltmesh.mesh.ca.CA_LIFETIME, 3650 days)
            *check_number("mesh.cert_lifetime_s", self.cert_lifetime_s, 0, 3650 * 86400.0),
        ]
        if not found and self.cert_lifetime_s <= 3 * self.cert_backdate_s:
            found.append("mesh.cert_lifetime_s must exceed 3 x mesh.cert_backdate_s")
        positive = ("max_clock_skew_s", "renew_check_s", "token_ttl_s", "connect_timeout_s",
                    "request_timeout_s", "idle_timeout_s", "meta_refresh_s")  # fmt: skip
        for name in positive:
            found += check_number(f"mesh.{name}", getattr(self, name), 0, above=True)
        return [
            *found,
            *check_number("mesh.leave_timeout_s", self.leave_timeout_s, 0),
            *check_int("mesh.max_connections", self.max_connections, 1),
            *check_int("mesh.max_frame_bytes", self.max_frame_bytes, 4096),
            *check_int("mesh.max_datagram_bytes", self.max_datagram_bytes, 576, 65507),
            *check_int("mesh.replay_window", self.replay_window, 1),
            *check_choice("mesh.swim", self.swim, ("lan", "wan", "local")),
        ]


@dataclass
class RaftNodeConfig:
    """The node's Raft group and cluster KV (``moltmesh.raft``). Times are seconds."""

    enabled: bool = True  # run Raft and the cluster KV whenever the node is in a mesh
    timing: str = "lan"  # election/heartbeat preset: lan (150-300 ms) | local (tests) | wan
    fsync: bool = True  # fsync the log before sending what depends on it (off: unsafe, bench)
    max_voters: int = 5  # 3 or 5 voters, chosen automatically
    max_learners: int = 4  # non-voting members kept up to date by Raft; the rest follow by watch
    stabilization_s: float = 10.0  # a voter suspect/dead this long is replaced
    # applied log entries or KV commands (several share a batch entry), whichever comes first,
    # between KV snapshots (log compaction): a snapshot encodes the whole KV
    # and its history (~60 ms for 10k changes); 50k keeps that ~1 µs per commit (etcd: 100k)
    snapshot_entries: int = 50000
    request_timeout_s: float = 5.0  # default deadline of a KV request

    def problems(self) -> list[str]:
        """Messages for every nonsensical value (empty when the section is usable)."""
        voters = check_int("raft.max_voters", self.max_voters, 1, 5)
        if not voters and self.max_voters not in (1, 3, 5):
            voters = [f"raft.max_voters must be 1, 3 or 5, got {self.max_voters!r}"]
        return [
            *check_choice("raft.timing", self.timing, ("lan", "local", "wan")),
            *voters,
            *check_int("raft.max_learners", self.max_learners, 0),
            *check_number("raft.stabilization_s", self.stabilization_s, 0),
            *check_int("raft.snapshot_entries", self.snapshot_entries, 1),
            *check_number("raft.request_timeout_s", self.request_timeout_s, 0, above=True),
        ]


@dataclass
class LogConfig:
    level: str = "info"  # debug | info | warning | error
    format: str = "json"  # json (one event per line) | text

    def problems(self) -> list[str]:
        """Messages for every nonsensical value (empty when the section is usable)."""
        return [
            *check_choice("log.level", self.level, ("debug", "info", "warning", "error")),
            *check_choice("log.format", self.format, ("json", "text")),
        ]


@dataclass
class NodeConfig:
    """The whole tree. Build it with ``load_config`` or directly in an embedding app."""

    data_dir: Path = field(default_factory=default_data_dir)
    name: str = ""  # a human label shown in status; the node id is derived from its key
    api: ApiConfig = field(default_factory=ApiConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    log: LogConfig = field(default_factory=LogConfig)
    discovery: DiscoveryConfig = field(default_factory=DiscoveryConfig)
    mesh: MeshConfig = field(default_factory=MeshConfig)
    raft: RaftNodeConfig = field(default_factory=RaftNodeConfig)

    def problems(self) -> list[str]:
        """Messages for every value no node could run with, each beginning with its dotted key."""
        return [
            *self.api.problems(),
            *self.runtime.problems(),
            *self.log.problems(),
            *self.discovery.problems(),
            *self.mesh.problems(),
            *self.raft.problems(),
        ]

    def validate(self) -> None:
        """Raise ``ConfigError`` (all problems, one line) on values no node could run with."""
        found = self.problems()
        if found:
            raise ConfigError("; ".join(found))


def load_config(
    path: Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> NodeConfig:
    """Build the tree: defaults, then the TOML file, then the environment, then ``overrides``.

    ``overrides`` maps dotted keys (``"api.port"``) to already-typed values (from CLI flags);
    ``None`` values are skipped so unset flags do not hide lower layers.
    """
    config = NodeConfig()
    sources: dict[str, str] = {}
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as e:
            raise ConfigError(f"cannot read config file {path}: {e.strerror}") from e
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config file {path} is not valid TOML: {e}") from e
        _merge(config, data, source=f"config file {path}", prefix="", sources=sources)
    for key, raw in _env_items(os.environ if env is None else env):
        source = f"environment {ENV_PREFIX}{key.upper().replace('.', '_')}"
        _set(config, key, raw, source=source, sources=sources)
    for key, value in (overrides or {}).items():
        if value is not None:
            _set(config, key, value, source=f"flag for {key}", sources=sources)
    found = config.problems()
    if found:
        raise ConfigError("; ".join(_with_source(m, sources) for m in found))
    return config


def _with_source(message: str, sources: Mapping[str, str]) -> str:
    """``message`` followed by where its key (the message's first word) was set, if known."""
    key = message.split(" ", 1)[0].rstrip(":")
    return f"{message} (from {sources[key]})" if key in sources else message


def _merge(
    target: Any, data: Mapping[str, Any], source: str, prefix: str, sources: dict[str, str]
) -> None:
    names = {f.name: f for f in dataclasses.fields(target)}
    for key, value in data.items():
        dotted = prefix + key
        if key not in names:
            raise ConfigError(f"{source}: unknown key {dotted!r}")
        current = getattr(target, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{source}: {dotted!r} must be a table")
            _merge(current, value, source, dotted + ".", sources)
        else:
            _set(target, key, value, source, dotted=dotted, sources=sources)


def _env_items(env: Mapping[str, str]) -> list[tuple[str, str]]:
    """Environment variables as dotted keys, sorted for a deterministic order."""
    sections = {f.name for f in dataclasses.fields(NodeConfig) if f.name.isalpha()}
    items = []
    for name, raw in sorted(env.items()):
        if not name.startswith(ENV_PREFIX):
            continue
        rest = name[len(ENV_PREFIX) :].lower()
        head, _, tail = rest.partition("_")
        key = f"{head}.{tail}" if head in sections and tail else rest
        items.append((key, raw))
    return items


def _set(
    root: Any,
    key: str,
    value: Any,
    source: str,
    dotted: str | None = None,
    sources: dict[str, str] | None = None,
) -> None:
    """Set ``key`` (dotted, relative to ``root``) to ``value`` coerced to the field's type.

    ``sources`` (when given) records ``source`` under the full dotted key.
    """
    parts = key.split(".")
    target = root
    for part in parts[:-1]:
        sub = getattr(target, part, None)
        if not dataclasses.is_dataclass(sub):
            raise ConfigError(f"{source}: unknown key {dotted or key!r}")
        target = sub
    hints = typing.get_type_hints(type(target))
    name = parts[-1]
    if name not in hints or dataclasses.is_dataclass(getattr(target, name, None)):
        raise ConfigError(f"{source}: unknown key {dotted or key!r}")
    try:
        setattr(target, name, _coerce(value, hints[name]))
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{source}: bad value {value!r} for {dotted or key!r}: {e}") from e
    if sources is not None:
        sources[dotted or key] = source


def _coerce(value: Any, hint: Any) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("", "none")):
            return None
        return _coerce(value, args[0])
    if origin is list:
        (item,) = typing.get_args(hint)
        if isinstance(value, str):
            if item is Path:  # path lists may use the OS separator; host:port lists may not
                value = value.replace(os.pathsep, ",")
            value = [v for v in value.split(",") if v]
        if not isinstance(value, list | tuple):
            raise TypeError("expected a list")
        return [_coerce(v, item) for v in value]
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError("expected true or false")
    if hint is int:
        if isinstance(value, bool | float):
            raise TypeError("expected an integer")
        return int(value)
    if hint is float:
        if isinstance(value, bool):
            raise TypeError("expected a number")
        return float(value)
    if hint is Path:
        return Path(value).expanduser()
    if hint is str:
        if not isinstance(value, str):
            raise TypeError("expected a string")
        return value
    raise TypeError(f"unsupported config type {hint}")
