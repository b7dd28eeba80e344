from pathlib import Path

import pytest

from moltmesh.config import ConfigError, NodeConfig, load_config


def test_defaults_are_a_loopback_node():
    config = load_config(env={})
    assert config.api.host == "127.0.0.1"
    assert config.api.port == 8470
    assert config.runtime.bundled_models is True


def test_precedence_file_then_env_then_flags(tmp_path: Path):
    path = tmp_path / "node.toml"
    path.write_text(
        'name = "line-3"\n[api]\nport = 9000\nhost = "0.0.0.0"\n[runtime]\nworkers = 3\n'
    )
    config = load_config(
        path,
        env={"MOLTMESH_API_PORT": "9100", "MOLTMESH_RUNTIME_MAX_QUEUE": "5", "OTHER": "x"},
        overrides={"api.port": 9200, "runtime.variant": None},
    )
    assert config.name == "line-3"
    assert config.api.host == "0.0.0.0"  # file
    assert config.runtime.workers == 3  # file
    assert config.runtime.max_queue == 5  # env
    assert config.api.port == 9200  # flag beats env beats file
    assert config.runtime.variant == "auto"  # a None flag hides nothing


def test_env_top_level_keys_and_types(tmp_path: Path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    config = load_config(
        env={
            "MOLTMESH_DATA_DIR": str(tmp_path / "d"),
            "MOLTMESH_RUNTIME_BUNDLED_MODELS": "false",
            "MOLTMESH_RUNTIME_MODEL_REPOSITORY": f"{tmp_path}/a,{tmp_path}/b",
            "MOLTMESH_API_TLS_CERT": "none",
        }
    )
    assert config.data_dir == tmp_path / "d"
    assert config.runtime.bundled_models is False
    assert config.runtime.model_repository == [tmp_path / "a", tmp_path / "b"]
    assert config.api.tls_cert is None


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[api]\nprot = 1\n", "unknown key 'api.prot'"),
        ("colour = 1\n", "unknown key 'colour'"),
        ('[api]\nport = "high"\n', "'api.port'"),
        ("api = 3\n", "'api' must be a table"),
        ("[api]\nport = 70000\n", "api.port must be 0..65535"),
        ('[runtime]\nvariant = "int4"\n', "runtime.variant"),
        ("[api\n", "not valid TOML"),
    ],
)
def test_bad_files_name_the_problem(tmp_path: Path, toml: str, message: str):
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        load_config(path, env={})


def test_bad_env_value_names_the_variable():
    with pytest.raises(ConfigError, match="MOLTMESH_API_PORT"):
        load_config(env={"MOLTMESH_API_PORT": "eighty"})
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(env={"MOLTMESH_API_COLOUR": "red"})


def test_missing_file_is_a_config_error(tmp_path: Path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.toml", env={})


def test_tls_needs_both_halves(tmp_path: Path):
    config = NodeConfig()
    config.api.tls_cert = tmp_path / "c.pem"
    with pytest.raises(ConfigError, match="go together"):
        config.validate()
