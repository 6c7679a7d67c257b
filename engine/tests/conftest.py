"""Shared fixtures for the engine tests: an isolated tuning cache and model builders."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True, scope="session")
def _isolated_tuning_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    # Tests must not read or write the developer's real tuning cache.
    os.environ["WALLE_ENGINE_CACHE_DIR"] = str(tmp_path_factory.mktemp("walle-cache"))
