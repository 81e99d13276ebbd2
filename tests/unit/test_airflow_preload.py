"""Airflow's local settings (``ml/ops/airflow_site``) preload the tasks' libraries in the processes
that fork tasks, the scheduler and the Celery worker, and in no other Airflow process; Airflow
finds the module through the environment ``airflow_env`` builds."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ml.core.settings import Settings
from ml.ops.local_airflow import airflow_env

PROBE = """
import sys
sys.argv = ["airflow", sys.argv[1]]
import airflow.settings  # imports airflow_local_settings, as every Airflow process does
print(sorted(m for m in ("tabnanny", "wave") if m in sys.modules))
"""


@pytest.mark.parametrize(
    ("command", "preloaded"),
    [("scheduler", ["tabnanny", "wave"]), ("celery", ["tabnanny", "wave"]), ("api-server", [])],
)
def test_only_the_processes_that_fork_tasks_preload(tmp_path, command: str, preloaded: list[str]) -> None:  # type: ignore[no-untyped-def]
    # Two small stdlib modules nothing else imports stand in for the heavy default list.
    settings = Settings(work_dir=tmp_path, airflow_preload_modules=["tabnanny", "wave"], pii_salt="x")  # type: ignore[arg-type]
    env = airflow_env(settings, api_port=18099)
    done = subprocess.run(
        [sys.executable, "-c", PROBE, command], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1].replace("'", '"')) == preloaded


def test_a_module_that_fails_to_import_is_skipped() -> None:
    from ml.ops.preload import preload_task_modules

    took = preload_task_modules(["tabnanny", "no_such_module_anywhere"])
    assert list(took) == ["tabnanny"]
