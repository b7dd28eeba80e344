"""Fixtures shared by every test folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.models import make_repository


@pytest.fixture(scope="session")
def model_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small model repository (tiny v1/v2, slow) made once per test session and worker."""
    return make_repository(tmp_path_factory.mktemp("repo"))
