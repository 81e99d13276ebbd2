"""Airflow for the DAG tests: a throwaway AIRFLOW_HOME with a SQLite metadata DB.

Airflow reads its configuration when ``airflow`` is first imported, so the environment is set
here, when pytest collects this folder, before any test imports Airflow. Nothing is written to
``~/airflow``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ml.core.settings import PROJECT_DIR, Settings, get_settings
from ml.ops.local_airflow import airflow_env, airflow_executable

DAGS_DIR = PROJECT_DIR / "dags"
_AIRFLOW_TEST_HOME = Path(tempfile.mkdtemp(prefix="shopflow-airflow-test-"))
_ENV = airflow_env(Settings(work_dir=_AIRFLOW_TEST_HOME, pii_salt="test-salt"), api_port=18080)  # type: ignore[arg-type]
# Only Airflow's own variables: the ShopFlow settings of a test come from its fixtures.
os.environ.update({k: v for k, v in _ENV.items() if k.startswith(("AIRFLOW_HOME", "AIRFLOW__"))})
# Airflow puts the DAG folder on sys.path while it parses and runs DAGs (shared modules such as
# shopflow_assets); a plain DagBag in this process does not.
if str(DAGS_DIR) not in sys.path:
    sys.path.insert(0, str(DAGS_DIR))


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(_AIRFLOW_TEST_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """``airflow db migrate`` once per session; returns the Airflow home."""
    done = subprocess.run(
        [airflow_executable(), "db", "migrate"], env=_ENV, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return Path(os.environ["AIRFLOW_HOME"])


@pytest.fixture(scope="session")
def dagbag() -> Any:
    """Every DAG in dags/, parsed the way the DAG processor parses them."""
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS_DIR))


@pytest.fixture
def use_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Make ``get_settings()`` (which the DAG's tasks call) return the given settings.

    Usage: ``use_settings(settings)``; the environment and the cache are restored afterwards.
    """
    from ml.ops.local_airflow import settings_env

    def apply(settings: Settings) -> Settings:
        for key in [k for k in os.environ if k.startswith("SHOPFLOW_")]:
            monkeypatch.delenv(key)
        for key, value in settings_env(settings).items():
            monkeypatch.setenv(key, value)
        get_settings.cache_clear()
        return get_settings()

    yield apply
    get_settings.cache_clear()
