"""Every numeric config key is range-checked by ``NodeConfig.validate``, NaN and infinity included.

A bad value must stop ``load_config`` (and so ``moltmesh node``) with one line naming the key,
the problem and where the value came from, not crash deeper down with a traceback.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from pathlib import Path

import pytest

from moltmesh import cli
from moltmesh.config import ConfigError, NodeConfig, load_config

SECTIONS = [
    f.name for f in dataclasses.fields(NodeConfig) if dataclasses.is_dataclass(f.default_factory)
]


def _numeric_keys() -> list[tuple[str, type]]:
    """``(section.key, int | float)`` for every numeric field of every section."""
    config = NodeConfig()
    keys = []
    for section in SECTIONS:
        obj = getattr(config, section)
        for name, hint in typing.get_type_hints(type(obj)).items():
            if hint in (int, float):
                keys.append((f"{section}.{name}", hint))
    return keys


NUMERIC = _numeric_keys()
# every numeric key refuses -1; floats refuse NaN and both infinities too
BAD_NUMBERS = [(key, "-1") for key, _ in NUMERIC] + [
    (key, raw) for key, hint in NUMERIC if hint is float for raw in ("nan", "inf", "-inf")
]


def _env_name(key: str) -> str:
    return "MOLTMESH_" + key.upper().replace(".", "_")


def test_the_sections_are_all_seen():
    assert {"api", "runtime", "discovery", "mesh", "raft", "log"} <= set(SECTIONS)
    assert ("runtime.intra_op_threads", int) in NUMERIC
    assert ("api.shutdown_grace_s", float) in NUMERIC


@pytest.mark.parametrize(("key", "raw"), BAD_NUMBERS)
def test_bad_number_from_env_names_key_and_variable(key: str, raw: str):
    with pytest.raises(ConfigError) as info:
        load_config(env={_env_name(key): raw})
    message = str(info.value)
    assert message.startswith(f"{key} must be"), message
    assert f"(from environment {_env_name(key)})" in message
    assert "\n" not in message


@pytest.mark.parametrize(("key", "raw"), BAD_NUMBERS)
def test_bad_number_from_toml_names_key_and_file(tmp_path: Path, key: str, raw: str):
    section, name = key.split(".")
    path = tmp_path / "node.toml"
    path.write_text(f"[{section}]\n{name} = {raw}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    message = str(info.value)
    assert message.startswith(f"{key} must be"), message
    assert f"(from config file {path})" in message


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("runtime.intra_op_threads", -1, "must be 0 or more, got -1"),
        ("runtime.inter_op_threads", -2, "must be 0 or more"),
        ("runtime.warmup_runs", -1, "must be 0 or more"),
        ("runtime.default_deadline_ms", math.inf, "finite number more than 0"),
        ("runtime.default_deadline_ms", 0.0, "more than 0"),
        ("runtime.inline_threshold_ms", math.nan, "finite number 0 or more, got nan"),
        ("api.shutdown_grace_s", -1.0, "finite number 0 or more"),
        ("api.port", 65536, "0..65535"),
        ("api.max_body_bytes", 0, "at least 1"),
        ("mesh.max_datagram_bytes", 70000, "576..65507"),
        ("mesh.max_frame_bytes", 100, "at least 4096"),
        ("mesh.cert_lifetime_s", math.inf, "finite number"),
        ("mesh.cert_lifetime_s", 1e12, "0..3.1536e"),  # beyond the CA's lifetime (and datetime)
        ("raft.max_voters", 4, "1, 3 or 5"),
        ("raft.request_timeout_s", math.inf, "finite number"),
        ("discovery.resolve_timeout_ms", 0, "at least 1"),
    ],
)
def test_flag_values_are_checked_too(key: str, value: object, words: str):
    with pytest.raises(ConfigError, match=rf"^{key} .*{words}.*\(from flag for {key}\)$"):
        load_config(env={}, overrides={key: value})


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("runtime.intra_op_threads", 0),
        ("runtime.inter_op_threads", 0),
        ("runtime.warmup_runs", 0),
        ("runtime.inline_threshold_ms", 0.0),
        ("runtime.max_queue", 0),
        ("api.shutdown_grace_s", 0.0),
        ("api.port", 0),
        ("mesh.port", 65535),
        ("mesh.leave_timeout_s", 0.0),
        ("raft.max_voters", 1),
        ("raft.stabilization_s", 0.0),
    ],
)
def test_edge_values_that_make_sense_pass(key: str, value: object):
    config = load_config(env={}, overrides={key: value})
    section, name = key.split(".")
    assert getattr(getattr(config, section), name) == value


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"MOLTMESH_MESH_SEEDS": "10.0.0.2:8471,nohost"}, "mesh.seeds must be host:port"),
        ({"MOLTMESH_MESH_SEEDS": "10.0.0.2:0"}, "port 1..65535, got '10.0.0.2:0'"),
        ({"MOLTMESH_MESH_ADVERTISE": ":8471"}, "mesh.advertise must be host:port"),
        ({"MOLTMESH_DISCOVERY_INTERFACES": ""}, "discovery.interfaces is empty"),
        ({"MOLTMESH_LOG_LEVEL": "loud"}, "log.level must be debug, info, warning or error"),
        ({"MOLTMESH_MESH_SWIM": "fast"}, "mesh.swim must be lan, wan or local, got 'fast'"),
    ],
)
def test_names_and_addresses_are_checked(env: dict[str, str], words: str):
    with pytest.raises(ConfigError, match=words.replace(".", r"\.")):
        load_config(env=env)


def test_good_addresses_pass():
    config = load_config(
        env={
            "MOLTMESH_MESH_SEEDS": "10.0.0.2:8471,[fe80::1]:8471",
            "MOLTMESH_MESH_ADVERTISE": "a:1",
        }
    )
    assert config.mesh.seeds == ["10.0.0.2:8471", "[fe80::1]:8471"]


def test_every_problem_is_reported_on_one_line():
    config = NodeConfig()
    config.runtime.intra_op_threads = -1
    config.api.shutdown_grace_s = math.nan
    with pytest.raises(ConfigError) as info:
        config.validate()
    message = str(info.value)
    assert "runtime.intra_op_threads" in message and "api.shutdown_grace_s" in message
    assert "\n" not in message


def test_wrongly_typed_value_set_in_code_is_refused():
    config = NodeConfig()
    config.runtime.workers = 2.5  # type: ignore[assignment]
    config.api.shutdown_grace_s = True  # type: ignore[assignment]
    assert config.problems() == [
        "api.shutdown_grace_s must be a number, got True",
        "runtime.workers must be an integer, got 2.5",
    ]


def test_node_command_stops_with_one_line(monkeypatch, capsys, tmp_path: Path):
    """The README case: a negative thread count stops ``moltmesh node`` before anything starts."""
    monkeypatch.setenv("MOLTMESH_RUNTIME_INTRA_OP_THREADS", "-1")
    assert cli.main(["node", "--data-dir", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert err.strip() == (
        "moltmesh node: runtime.intra_op_threads must be 0 or more, got -1 "
        "(from environment MOLTMESH_RUNTIME_INTRA_OP_THREADS)"
    )
    assert not (tmp_path / "d").exists()
