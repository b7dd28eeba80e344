"""A node owns its data directory: one node at a time, and a failed start leaves it usable."""

from __future__ import annotations

from pathlib import Path

import pytest

from moltmesh import Node, NodeConfig
from moltmesh.config import ConfigError
from moltmesh.dirlock import DataDirBusy
from moltmesh.discovery.service import DiscoveryError
from moltmesh.identity import API_URL_FILE, KEY_FILE
from tests.mesh.helpers import init_holder
from tests.moltmesh.test_node import config_for


async def test_a_second_node_on_the_same_data_dir_is_refused(tmp_path: Path, model_repo: Path):
    config = config_for(tmp_path, model_repo)
    config.api.port = 0
    async with Node(config) as first:
        url_file = config.data_dir / API_URL_FILE
        assert url_file.read_text().strip() == first.api_url
        with pytest.raises(DataDirBusy, match="in use by moltmesh node"):
            await Node(config_for(tmp_path, model_repo)).start()
        assert url_file.read_text().strip() == first.api_url  # the refused one touched nothing
    assert not url_file.exists()
    async with Node(config_for(tmp_path, model_repo), serve_api=False):
        pass  # free again once the first stopped


@pytest.mark.parametrize("missing", ["tls_cert", "tls_key"])
async def test_a_missing_tls_file_is_named_before_anything_is_created(
    tmp_path: Path, model_repo: Path, missing: str
):
    pem = tmp_path / "present.pem"
    pem.write_text("not checked first")
    config = config_for(tmp_path, model_repo)
    config.api.tls_cert = config.api.tls_key = pem
    setattr(config.api, missing, tmp_path / "absent.pem")
    with pytest.raises(ConfigError, match=rf"api.{missing} .*absent.pem: No such file"):
        await Node(config).start()
    assert not (config.data_dir / KEY_FILE).exists()


async def test_a_bad_pem_is_a_config_error_and_the_lock_is_released(
    tmp_path: Path, model_repo: Path
):
    junk = tmp_path / "junk.pem"
    junk.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    config = config_for(tmp_path, model_repo)
    config.api.port = 0
    config.api.tls_cert = config.api.tls_key = junk
    with pytest.raises(ConfigError, match="not a usable PEM certificate"):
        await Node(config).start()
    assert not (config.data_dir / API_URL_FILE).exists()
    async with Node(config_for(tmp_path, model_repo), serve_api=False):
        pass


async def test_a_discovery_failure_surfaces_as_itself(
    tmp_path: Path, model_repo: Path, monkeypatch: pytest.MonkeyPatch
):
    """Not a KeyError from unregistering a metrics collector that was never registered."""
    from moltmesh.mesh.discovered import DiscoveredPeers

    async def refuse(self: DiscoveredPeers) -> None:
        raise DiscoveryError("another device already announces this node id")

    monkeypatch.setattr(DiscoveredPeers, "start", refuse)
    config = config_for(tmp_path, model_repo)
    config.mesh.host = "127.0.0.1"
    config.mesh.port = 0
    config.raft.enabled = False
    config.discovery.enabled = True
    init_holder(config.data_dir)
    with pytest.raises(DiscoveryError, match="already announces"):
        await Node(config, serve_api=False).start()
    config.discovery.enabled = False
    async with Node(config, serve_api=False) as node:  # the lock was released
        assert node.mesh is not None


def test_default_config_is_accepted_without_a_data_dir_lock_taken(tmp_path: Path) -> None:
    """Building a Node takes nothing: the lock is taken by ``start``."""
    Node(NodeConfig(data_dir=tmp_path))
    assert not (tmp_path / "lock").exists()


async def test_the_configured_name_is_in_the_start_log(
    tmp_path: Path, model_repo: Path, caplog: pytest.LogCaptureFixture
):
    config = config_for(tmp_path, model_repo)
    config.name = "line-3-camera-2"
    with caplog.at_level("INFO", logger="moltmesh.node"):
        async with Node(config, serve_api=False) as node:
            pass
    (started,) = [r for r in caplog.records if r.getMessage() == "node.started"]
    fields = next(v for k, v in vars(started).items() if isinstance(v, dict) and "node" in v)
    assert fields["name"] == "line-3-camera-2" and fields["node"] == node.node_id
