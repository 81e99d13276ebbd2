"""Airflow's local settings for ShopFlow's Airflow processes: preload what task code imports.

Airflow imports a module named ``airflow_local_settings`` in every one of its processes, when
``airflow`` itself is imported (``ml.ops.local_airflow.airflow_env`` and the Airflow image put this
folder on ``PYTHONPATH``). Only the scheduler (LocalExecutor) and the Celery worker act on it: they
fork the processes that run tasks (executor worker → Airflow's supervisor → task), so what they
import once, before forking, every task starts with. Without it each task paid its own imports
(Great Expectations ~10 s, Evidently ~11 s, torch ~4 s, pandas ~3 s on these 2 cores) before
its first line of work, dozens of times per demo. Airflow has no setting of its own for this
(its ``parsing_pre_import_modules`` serves only the DAG processor).

What is preloaded is ``SHOPFLOW_AIRFLOW_PRELOAD_MODULES`` (``ml.ops.preload``); an empty list turns
it off. Only imports happen here: no thread pool, connection or file is opened before the fork.
"""

from __future__ import annotations

import sys

if len(sys.argv) > 1 and sys.argv[1] in {"scheduler", "celery"}:
    from ml.ops.preload import preload_task_modules

    preload_task_modules()
