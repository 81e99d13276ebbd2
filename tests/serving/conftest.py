"""A small real champion for the serving tests: a tiny recommender on a slice of real Beauty data.

The model is trained with the packaged MiniLM (frozen), registered and promoted in a temporary
BentoML store, exactly as the training DAG does, so the service loads it the way it loads a real
champion.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from ml.core.settings import PROJECT_DIR, Settings, get_settings

N_USERS = 50
N_COLD = 10


@dataclass(frozen=True)
class Served:
    settings: Settings
    tag: str
    version_dir: Path
    examples: pd.DataFrame
    cold_items: list[str]
    """Catalog items no sampled user interacted with (text only)."""

    def history(self, user: str) -> list[str]:
        rows = self.examples[self.examples["user_id"] == user].sort_values("position")
        return [str(i) for i in rows["item_id"]]


@pytest.fixture(scope="session")
def served(tmp_path_factory: pytest.TempPathFactory) -> Served:
    from ml.flows.sample_champion import register_sample_champion

    root = tmp_path_factory.mktemp("serving")
    settings = Settings(work_dir=root / "work", data_dir=PROJECT_DIR / "data", pii_salt="test-salt")  # type: ignore[arg-type]
    sample = register_sample_champion(settings, root, users=N_USERS, cold=N_COLD, run_id="serving-test")
    return Served(settings, sample.tag, sample.version_dir, sample.examples, sample.cold_items)


@pytest.fixture(scope="session")
def service_env(served: Served) -> Iterator[dict[str, str]]:
    """The process environment pointed at the served store (for imports and subprocesses)."""
    from bentoml._internal.configuration.containers import BentoMLContainer
    from bentoml._internal.models.model import ModelStore

    home = served.settings.bentoml_home
    env = {
        "SHOPFLOW_WORK_DIR": str(served.settings.work_dir),
        "SHOPFLOW_PII_SALT": "test-salt",
        "BENTOML_HOME": str(home),
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    get_settings.cache_clear()
    # BentoML's default store is a lazy process-wide singleton: point it at this home, whatever
    # an earlier test may have resolved.
    BentoMLContainer.bentoml_home.set(str(home))
    BentoMLContainer.model_store.set(ModelStore(str(home / "models")))
    try:
        yield env
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        get_settings.cache_clear()
        BentoMLContainer.model_store.reset()
        BentoMLContainer.bentoml_home.reset()


@pytest.fixture(scope="session")
def service_module(service_env: dict[str, str]) -> Any:
    """serving.service imported against the test store (the served tag is read at import)."""
    import importlib

    return importlib.reload(importlib.import_module("serving.service"))


@pytest.fixture(scope="session")
def live_server(served: Served, service_env: dict[str, str]) -> Iterator[Any]:
    """One ``bentoml serve`` of the champion for the session (a RunningServer), stopped at the end.

    Tests that only call it share it: a server start costs ~10 s of the quick gate. Tests that need
    their own settings (a token) or a built Bento start their own.
    """
    from serving.bento import running_server

    with running_server(settings=served.settings) as server:
        yield server


@pytest.fixture(scope="session")
def http_client(service_module: Any) -> Iterator[Any]:
    """A client of the service's ASGI app, lifespan entered (the service instance exists).

    One app and one client per process: a second app registers BentoML's Prometheus metrics
    twice, the adaptive-batching dispatcher is bound to the event loop of its first request
    (this client keeps one loop open), and a client that runs the lifespan again drops the
    instance at its shutdown.
    """
    from starlette.testclient import TestClient

    app = service_module.Recommender.to_asgi()
    with TestClient(app) as client:
        yield client
