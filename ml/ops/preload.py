"""Import the libraries ShopFlow's Airflow tasks use, once, in a process that forks the tasks.

Called from ``ml/ops/airflow_site/airflow_local_settings.py`` (the scheduler and the Celery
worker: see there why). A module that fails to import is reported and skipped: the task that needs
it fails later with the real error, in its own log.
"""

from __future__ import annotations

import importlib
import logging
import time

from ml.core.settings import get_settings

log = logging.getLogger(__name__)


def preload_task_modules(modules: list[str] | None = None) -> dict[str, float]:
    """Import ``modules`` (default: ``settings.airflow_preload_modules``); seconds each took."""
    took: dict[str, float] = {}
    for name in get_settings().airflow_preload_modules if modules is None else modules:
        started = time.perf_counter()
        try:
            importlib.import_module(name)
        except Exception as error:  # a preload must never stop the scheduler
            log.warning("preloading %s for Airflow's tasks failed: %s", name, error)
            continue
        took[name] = round(time.perf_counter() - started, 2)
    if took:
        log.info("preloaded for Airflow's tasks in %.1f s: %s", sum(took.values()), took)
    return took
