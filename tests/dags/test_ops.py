"""ml.ops.dag_helpers without a running Airflow: intervals, XCom JSON, environment, process cleanup,
and the failure report of ``LocalAirflow.wait_for_runs``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from ml.core.calendar import grain_cron
from ml.core.settings import PROJECT_DIR, Settings
from ml.ops.dag_helpers import jsonable, publish_summary, resolve_interval
from ml.ops.local_airflow import AirflowRunError, LocalAirflow, _stop_sessions, airflow_env, settings_env

UTC = UTC


# -- intervals ------------------------------------------------------------------------------------
def test_scheduled_run_uses_its_data_interval() -> None:
    start, end = datetime(2013, 10, 1, tzinfo=UTC), datetime(2013, 11, 1, tzinfo=UTC)
    assert resolve_interval({"interval_start": None, "interval_end": None}, start, end) == (
        date(2013, 10, 1),
        date(2013, 11, 1),
    )


def test_manual_conf_interval_wins_over_data_interval() -> None:
    params = {"interval_start": "2000-01-01", "interval_end": "2013-10-01T00:00:00+00:00"}
    start, end = datetime(2013, 10, 1, tzinfo=UTC), datetime(2013, 11, 1, tzinfo=UTC)
    assert resolve_interval(params, start, end) == (date(2000, 1, 1), date(2013, 10, 1))
    assert resolve_interval(params, None, None) == (date(2000, 1, 1), date(2013, 10, 1))


@pytest.mark.parametrize(
    ("params", "start", "end", "message"),
    [
        ({}, None, None, "no data interval"),
        ({"interval_start": "2013-10-01"}, None, None, "give both"),
        ({"interval_start": "2013-10-01", "interval_end": "soon"}, None, None, "interval_end must be a date"),
        ({"interval_start": "2013-10-01", "interval_end": "2013-10-01"}, None, None, "empty data interval"),
        # A cron-trigger timetable's run: start == end.
        ({}, datetime(2013, 10, 1, tzinfo=UTC), datetime(2013, 10, 1, tzinfo=UTC), "empty data interval"),
    ],
)
def test_bad_intervals_are_refused(
    params: dict[str, Any], start: datetime | None, end: datetime | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        resolve_interval(params, start, end)


def test_grain_cron() -> None:
    assert [grain_cron(g) for g in ("day", "week", "month")] == ["0 0 * * *", "0 0 * * 1", "0 0 1 * *"]
    with pytest.raises(ValueError, match="unknown partition grain 'hour'"):
        grain_cron("hour")


# -- JSON for XCom and asset events ---------------------------------------------------------------
@dataclass
class _Load:
    source: str
    table: str
    partition: date
    file: Path
    rows: int


@dataclass
class _Summary:
    run_id: str
    start: date
    files: list[_Load] = field(default_factory=list)


class _Report:
    def as_dict(self) -> dict[str, Any]:
        return {"sources": {"retail": {"landed": 10, "quarantined": 3}}}


def test_jsonable_turns_stage_results_into_plain_json() -> None:
    summary = _Summary(
        "r1", date(2011, 11, 1), [_Load("retail", "invoice_lines", date(2011, 11, 1), Path("a/b"), 7)]
    )
    assert jsonable(summary) == {
        "run_id": "r1",
        "start": "2011-11-01",
        "files": [
            {
                "source": "retail",
                "table": "invoice_lines",
                "partition": "2011-11-01",
                "file": "a/b",
                "rows": 7,
            }
        ],
    }
    assert jsonable(_Report()) == {"sources": {"retail": {"landed": 10, "quarantined": 3}}}
    assert jsonable({"when": datetime(2011, 11, 1, 12, 30), "tags": {"b", "a"}}) == {
        "when": "2011-11-01T12:30:00",
        "tags": ["a", "b"],
    }


def test_publish_summary_is_small_and_names_the_lineage() -> None:
    ingested = {
        "files": [
            {"source": "retail", "table": "invoice_lines", "rows": 5},
            {"source": "retail", "table": "invoice_lines", "rows": 7},
            {"source": "beauty", "table": "interactions", "rows": 2},
        ]
    }
    raw = {
        "sources": {
            "retail": {
                "landed": 12,
                "accepted": 9,
                "quarantined": 3,
                "quarantine_rate": 0.25,
                "by_reason": {},
            }
        }
    }
    built = {"invocation_id": "abc", "target": "duckdb", "status_counts": {"success": 3}, "failures": []}
    marts = {"rows": {"fct_interactions": 11}, "evaluated_expectations": 40, "data_docs": "/x/index.html"}
    extra = publish_summary("run-1", date(2011, 11, 1), date(2011, 11, 3), ingested, raw, built, marts)
    assert extra["rows_loaded"] == {"retail.invoice_lines": 12, "beauty.interactions": 2}
    assert extra["quarantine"] == {
        "retail": {"landed": 12, "accepted": 9, "quarantined": 3, "quarantine_rate": 0.25}
    }
    assert (extra["interval_start"], extra["interval_end"]) == ("2011-11-01", "2011-11-03")
    assert (extra["dbt_invocation_id"], extra["marts_rows"], extra["gx_data_docs"]) == (
        "abc",
        {"fct_interactions": 11},
        "/x/index.html",
    )
    assert json.loads(json.dumps(extra)) == extra


# -- environment ----------------------------------------------------------------------------------
def test_settings_survive_the_trip_through_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = Settings(
        work_dir=tmp_path / "work",
        warehouse="postgres",
        postgres_dsn="postgresql://u:p@db:5433/w",
        partition_grain="week",
        sources={"beauty": "catalog"},
        max_quarantine_rate=0.12,
        pii_salt="s3cret",  # type: ignore[arg-type]
    )
    env = settings_env(original)
    for key in [k for k in os.environ if k.startswith("SHOPFLOW_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    rebuilt = Settings()
    assert rebuilt.model_dump() == original.model_dump()
    assert rebuilt.salt() == "s3cret"


def test_airflow_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(work_dir=tmp_path / "work", warehouse="duckdb", pii_salt="x")  # type: ignore[arg-type]
    monkeypatch.setenv("AIRFLOW__CORE__SQL_ALCHEMY_CONN", "postgresql://elsewhere")
    monkeypatch.setenv("SHOPFLOW_WAREHOUSE", "postgres")
    env = airflow_env(settings, api_port=18123)
    assert env["AIRFLOW_HOME"] == str((tmp_path / "work" / "airflow").resolve())
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == str(PROJECT_DIR / "dags")
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == f"sqlite:///{env['AIRFLOW_HOME']}/airflow.db"
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS"] == "True"
    assert env["AIRFLOW__API__PORT"] == "18123"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:18123/execution/"
    assert int(env["AIRFLOW__CORE__PARALLELISM"]) <= 4
    assert str(PROJECT_DIR) in env["PYTHONPATH"].split(os.pathsep)
    assert str(PROJECT_DIR / "dags") in env["PYTHONPATH"].split(os.pathsep)
    # Inherited settings do not leak into Airflow: the settings object decides.
    assert "AIRFLOW__CORE__SQL_ALCHEMY_CONN" not in env
    assert env["SHOPFLOW_WAREHOUSE"] == "duckdb"
    assert env["SHOPFLOW_WORK_DIR"] == str(tmp_path / "work")
    assert env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)


# -- processes ------------------------------------------------------------------------------------
# A session leader whose child moves to a process group of its own and ignores SIGTERM, as
# Airflow's task runners and some API-server workers do.
_STUBBORN_TREE = """
import os, signal, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c",
    "import os, signal, time; os.setpgid(0, 0); signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print(os.getpid(), flush=True); time.sleep(120)"], stdout=subprocess.PIPE, text=True)
print(child.stdout.readline().strip(), flush=True)
time.sleep(120)
"""


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_stopping_a_session_kills_children_in_other_groups_that_ignore_sigterm() -> None:
    leader = subprocess.Popen(
        [sys.executable, "-c", _STUBBORN_TREE], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        assert leader.stdout is not None
        child = int(leader.stdout.readline())
        assert os.getpgid(child) != os.getpgid(leader.pid) and os.getsid(child) == leader.pid
        _stop_sessions([leader.pid], grace=1.0)
        leader.wait(timeout=10)
        deadline = time.monotonic() + 5
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(child)
    finally:
        if leader.poll() is None:
            leader.kill()


def test_a_crashed_runs_leftovers_are_stopped_on_the_next_start(tmp_path: Path) -> None:
    # argv mentions airflow, like the components a crashed LocalAirflow left running.
    stale = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)", "airflow", "scheduler"], start_new_session=True
    )
    unrelated = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True
    )
    try:
        airflow = LocalAirflow(Settings(work_dir=tmp_path / "work", pii_salt="x"))  # type: ignore[arg-type]
        airflow.log_dir.mkdir(parents=True)
        airflow.pid_file.write_text(f"{stale.pid}\n{unrelated.pid}\n")
        airflow._stop_stale_session()
        assert stale.wait(timeout=15) is not None
        assert unrelated.poll() is None, "only airflow session leaders may be stopped"
        assert not airflow.pid_file.exists()
    finally:
        for process in (stale, unrelated):
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
                process.wait()


# -- failure report -------------------------------------------------------------------------------
def test_a_failed_run_names_its_failed_tasks_and_their_logs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    airflow = LocalAirflow(Settings(work_dir=tmp_path / "work", pii_salt="x"))  # type: ignore[arg-type]
    run_id = "backfill__2011-11-02T00:00:00+00:00"
    log = airflow.home / "logs" / "dag_id=d" / f"run_id={run_id}" / "task_id=validate_raw" / "attempt=1.log"
    log.parent.mkdir(parents=True)
    records = [
        {"level": "info", "event": "::group::Pre Execute"},
        {
            "level": "error",
            "event": "Task failed with exception",
            "error_detail": [
                {"exc_type": "AirflowFailException", "exc_value": "QualityGateError: retail 61%"}
            ],
        },
    ]
    log.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    answers = {
        "/api/v2/dags/d/dagRuns": {"dag_runs": [{"dag_run_id": run_id, "state": "failed"}]},
        f"/api/v2/dags/d/dagRuns/{run_id}/taskInstances": {
            "task_instances": [
                {"task_id": "ingest", "state": "success", "try_number": 1},
                {"task_id": "validate_raw", "state": "failed", "try_number": 1},
                {"task_id": "dbt_build", "state": "upstream_failed", "try_number": 0},
            ]
        },
    }

    def api(method, path, body=None, params=None):  # LocalAirflow.api's signature
        return answers[path]

    monkeypatch.setattr(airflow, "api", api)
    with pytest.raises(AirflowRunError) as caught:
        airflow.wait_for_runs("d", timeout=5, poll=0.01)
    message = str(caught.value)
    assert f"run {run_id}: failed" in message
    assert f"task validate_raw: failed (log: {log})" in message
    assert "AirflowFailException: QualityGateError: retail 61%" in message
    assert "task dbt_build: upstream_failed" in message
    assert "task ingest" not in message


# -- progress while waiting -----------------------------------------------------------------------
def test_a_wait_shows_its_runs_task_states_as_they_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    from rich.console import Console

    airflow = LocalAirflow(Settings(work_dir=tmp_path / "work", pii_salt="x"))  # type: ignore[arg-type]
    out = io.StringIO()
    airflow.console = Console(file=out, force_terminal=False, width=200)
    run_id = "manual__2026-12-02T10:00:00.123456+00:00"
    polls = iter(
        [
            ("running", [("ingest", "running"), ("dbt_build", None)]),
            ("running", None),  # the task instances are not readable this time: the wait goes on
            ("running", [("ingest", "success"), ("dbt_build", "running")]),
            ("success", [("ingest", "success"), ("dbt_build", "success")]),
        ]
    )
    current: dict[str, Any] = {}
    reads: list[str] = []

    def api(method, path, body=None, params=None):  # LocalAirflow.api's signature
        if path == "/api/v2/dags/d/dagRuns":
            current["state"], current["tasks"] = next(polls)
            return {"dag_runs": [{"dag_run_id": "manual__old", "state": "success"},
                                 {"dag_run_id": run_id, "state": current["state"]}]}  # fmt: skip
        reads.append(path)
        if current["tasks"] is None:
            raise AirflowRunError(f"GET {path} -> HTTP 503")
        return {"task_instances": [{"task_id": t, "state": s} for t, s in current["tasks"]]}

    monkeypatch.setattr(airflow, "api", api)
    runs = airflow.wait_for_runs("d", timeout=5, poll=0.0, label="d bootstrap")
    assert [r["state"] for r in runs] == ["success", "success"]
    # Only the awaited run's tasks are read, never those of the run that ended before the wait.
    assert set(reads) == {f"/api/v2/dags/d/dagRuns/{run_id}/taskInstances"}
    lines = [line.split("] ", 1)[-1] for line in out.getvalue().splitlines()]
    assert lines[0] == "… waiting for d bootstrap"
    assert lines[1:-1] == [
        "d manual__2026-12-02T10:00:00 ingest: running",
        "d manual__2026-12-02T10:00:00 ingest: running → success",
        "d manual__2026-12-02T10:00:00 dbt_build: running",
        "d manual__2026-12-02T10:00:00 dbt_build: running → success",
        "d manual__2026-12-02T10:00:00: run success",
    ]
    assert lines[-1].startswith("✓ d bootstrap: 1 run (1 success) in ")


def test_a_wait_without_progress_prints_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    airflow = LocalAirflow(Settings(work_dir=tmp_path / "work", pii_salt="x"), progress=False)  # type: ignore[arg-type]

    def api(method, path, body=None, params=None):  # LocalAirflow.api's signature
        assert path == "/api/v2/dags/d/dagRuns", "no task instances are read without progress"
        return {"dag_runs": [{"dag_run_id": "r", "state": "success"}]}

    monkeypatch.setattr(airflow, "api", api)
    assert airflow.wait_for_runs("d", timeout=5, poll=0.0) == [{"dag_run_id": "r", "state": "success"}]
    assert capsys.readouterr().out == ""


def test_a_backfill_refused_while_sqlite_is_locked_is_asked_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Airflow's API answers 503 "Database is locked" to a backfill while the scheduler writes the
    SQLite metadata (seen in the demo right after the bootstrap run): LocalAirflow asks again; any
    other error is raised at once."""
    airflow = LocalAirflow(Settings(work_dir=tmp_path / "work", pii_salt="x"))  # type: ignore[arg-type]
    monkeypatch.setattr("ml.ops.local_airflow.time.sleep", lambda _s: None)
    refusals = ["Database is locked. Backfill creation is not supported on SQLite."] * 2
    calls = []

    def api(method, path, body=None, params=None):  # LocalAirflow.api's signature
        calls.append(path)
        if refusals:
            raise AirflowRunError(f"POST {path} -> HTTP 503: {refusals.pop()}")
        return {"id": 7}

    monkeypatch.setattr(airflow, "api", api)
    assert airflow.backfill("d", date(2013, 10, 1), date(2014, 1, 1)) == {"id": 7}
    assert calls == ["/api/v2/backfills"] * 3

    def conflict(method, path, body=None, params=None):
        calls.append(path)
        raise AirflowRunError(f"POST {path} -> HTTP 409: a backfill is already running")

    monkeypatch.setattr(airflow, "api", conflict)
    calls.clear()
    with pytest.raises(AirflowRunError, match="409"):
        airflow.backfill("d", date(2013, 10, 1), date(2014, 1, 1))
    assert len(calls) == 1
