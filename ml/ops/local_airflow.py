"""A real Airflow on this machine: scheduler, DAG processor and API server on SQLite, driven over REST.

Each component is started as a subprocess leading a process session of its own and stopped
session by session (SIGTERM, then SIGKILL). ``make demo`` and the end-to-end tests drive it through
Airflow's REST API (unpause, backfill, trigger, wait for runs, read asset events). Nothing here is
imported by a DAG file: the DAG processor parses ``ml.ops.dag_helpers`` only.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from datetime import date, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any

from rich.console import Console

from ml.core.net import free_port
from ml.core.settings import Settings, get_settings
from ml.ops.dag_helpers import utc_midnight
from ml.ops.progress import ACTIVE_RUN_STATES, RunsDisplay

FAILED_TASK_STATES = frozenset({"failed", "upstream_failed"})


COMPONENTS = ("scheduler", "dag-processor", "api-server")


# -- environment ----------------------------------------------------------------------------------
def settings_env(settings: Settings) -> dict[str, str]:
    """``SHOPFLOW_*`` variables that rebuild ``settings`` in another process.

    Settings built in code (a test's temp work dir, say) reach Airflow's processes this way.
    """
    from pydantic import SecretStr

    env: dict[str, str] = {}
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        text = json.dumps(value) if isinstance(value, dict | list | tuple) else str(value)
        env[f"SHOPFLOW_{name.upper()}"] = text
    return env


def airflow_env(
    settings: Settings | None = None, api_port: int | None = None, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The full environment for Airflow processes running ShopFlow's DAGs locally.

    Inherited ``AIRFLOW_*``/``SHOPFLOW_*`` variables are dropped so that the Airflow home, the
    metadata DB (``settings.airflow_database_url``, else SQLite in the home), the executor and the
    warehouse are exactly those of ``settings``; pass ``extra`` to override.

    Args:
        settings: ShopFlow settings (``airflow_home``, project dir, and everything propagated).
        api_port: port of the API server (UI, REST and the tasks' Execution API); a free one
            when ``None``.
        extra: variables set last (e.g. ``{"AIRFLOW__CORE__PARALLELISM": "4"}``).

    Returns:
        A complete environment mapping for ``subprocess``.
    """
    settings = settings or get_settings()
    port = api_port or free_port()
    home = settings.airflow_home.resolve()
    project = settings.project_dir.resolve()
    base_url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_", "AIRFLOW__", "SHOPFLOW_"))}
    # The venv's bin first: Airflow components re-exec "airflow" and task code runs "dbt".
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    # airflow_site: Airflow's local settings, which preload the tasks' libraries (see there).
    python_path = [str(project), str(project / "dags"), str(project / "ml" / "ops" / "airflow_site")]
    if env.get("PYTHONPATH"):
        python_path.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(python_path)
    env.update(settings_env(settings))
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(project / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            # The metadata DB: SQLite in the Airflow home unless settings name one (PostgreSQL).
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": (
                settings.airflow_database_url or f"sqlite:///{home / 'airflow.db'}"
            ),
            "AIRFLOW__CORE__EXECUTOR": settings.airflow_executor,
            # Two cores: more parallel task processes only thrash (and the runs share the marts).
            # Three slots, not two: two long training tasks (a retraining and the generator's
            # fine-tune) would otherwise hold both and stall the short warehouse tasks of the
            # next interval for minutes.
            "AIRFLOW__CORE__PARALLELISM": "3",
            "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": "2",
            "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
            # New DAG files appear within seconds; edits are re-parsed every 10 s.
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "10",
            "AIRFLOW__DAG_PROCESSOR__PRINT_STATS_INTERVAL": "0",
            # Local demo only: no login, everyone is admin, and the API listens on loopback only.
            "AIRFLOW__CORE__AUTH_MANAGER": (
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
            ),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API__BASE_URL": base_url,
            # Task processes talk to the API server; its default URL assumes port 8080.
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{base_url}/execution/",
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
            "NO_COLOR": "1",
        }
    )
    env.update(extra or {})
    return env


def airflow_executable() -> str:
    """The ``airflow`` console script of this interpreter's environment."""
    candidate = Path(sys.executable).parent / "airflow"
    return str(candidate) if candidate.exists() else "airflow"


# -- a real local Airflow -------------------------------------------------------------------------
class AirflowRunError(RuntimeError):
    """A DAG run failed or did not finish; the message names the failed tasks and their log files."""


class LocalAirflow:
    """Airflow 3 on this machine: ``db migrate``, then scheduler, DAG processor and API server.

    Each component leads a new process session (``setsid``). Stopping signals every process of
    those sessions, so it ends exactly what was started, including the task processes that Airflow
    moves into process groups of their own. A run that crashed before stopping is cleaned up by the
    next ``start()`` on the same Airflow home (from the pid file in ``log_dir``). The triggerer is
    not started by default (no ShopFlow task defers); pass ``components`` to add it.

    Example:
        >>> with LocalAirflow(settings) as airflow:  # doctest: +SKIP
        ...     airflow.wait_for_dag("ingest_transform_validate")
        ...     airflow.unpause("ingest_transform_validate")
        ...     airflow.backfill("ingest_transform_validate", date(2013, 10, 1), date(2013, 12, 1))
        ...     runs = airflow.wait_for_runs("ingest_transform_validate", timeout=900)
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        api_port: int | None = None,
        components: tuple[str, ...] = COMPONENTS,
        startup_timeout: float = 240.0,
        extra_env: Mapping[str, str] | None = None,
        progress: bool = True,
    ) -> None:
        self.settings = settings or get_settings()
        self.port = api_port or free_port()
        self.env = airflow_env(self.settings, self.port, extra_env)
        self.home = Path(self.env["AIRFLOW_HOME"])
        self.components = components
        self.startup_timeout = startup_timeout
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_dir = self.home / "local-airflow"
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self._client: Any = None
        self.timings: dict[str, float] = {}
        self.progress = progress
        """Show the awaited runs' task states while waiting (``ml.ops.progress``); False: silent."""
        self.console: Console | None = None
        """The ``rich`` console progress goes to (None: stdout)."""

    # -- lifecycle ----------------------------------------------------------------------------
    def __enter__(self) -> LocalAirflow:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def pid_file(self) -> Path:
        return self.log_dir / "session.pid"

    def cli(self, *args: str, timeout: float = 300.0, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``airflow <args>`` in this Airflow's environment and return the finished process."""
        done = subprocess.run(
            [airflow_executable(), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and done.returncode != 0:
            raise AirflowRunError(
                f"`airflow {' '.join(args)}` exited {done.returncode}:\n{(done.stdout + done.stderr)[-4000:]}"
            )
        return done

    def migrate(self) -> None:
        """Create or upgrade the SQLite metadata DB (idempotent)."""
        self.home.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        self.cli("db", "migrate", timeout=600)
        self.timings["db_migrate_s"] = time.monotonic() - started

    def start(self) -> None:
        """Migrate the DB, start the components and wait until they report healthy."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._stop_stale_session()
        self.migrate()
        started = time.monotonic()
        for name in self.components:
            log = (self.log_dir / f"{name}.log").open("ab")
            try:
                # Each component leads a session of its own (setsid), which every process it
                # starts stays in, so stopping the session stops all of them.
                process = subprocess.Popen(
                    [airflow_executable(), name],
                    env=self.env, cwd=self.home, stdout=log, stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL, start_new_session=True,
                )  # fmt: skip
            finally:
                log.close()  # the child holds its own descriptor
            self.processes[name] = process
            self.pid_file.write_text("\n".join(str(p.pid) for p in self.processes.values()))
            if len(self.processes) == 1:
                atexit.register(self.stop)
        self._wait_healthy(started)
        self.timings["startup_s"] = time.monotonic() - started

    def _wait_healthy(self, started: float) -> None:
        wanted = {"scheduler": "scheduler", "dag-processor": "dag_processor", "triggerer": "triggerer"}
        deadline = started + self.startup_timeout
        last: Any = None
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                last = self.api("GET", "/api/v2/monitor/health")
            except OSError as error:  # not listening yet
                last = error
            except AirflowRunError as error:
                last = error
            else:
                checks = [last.get("metadatabase", {}).get("status")] + [
                    (last.get(key) or {}).get("status")
                    for name, key in wanted.items()
                    if name in self.components
                ]
                if all(status == "healthy" for status in checks):
                    return
            time.sleep(1.0)
        raise AirflowRunError(
            f"Airflow did not become healthy within {self.startup_timeout:.0f} s (last answer: {last!r}); "
            f"component logs are in {self.log_dir}"
        )

    def _check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                tail = _tail(self.log_dir / f"{name}.log", 40)
                raise AirflowRunError(
                    f"airflow {name} exited with code {process.returncode}; "
                    f"log {self.log_dir / f'{name}.log'} ends with:\n{tail}"
                )

    def stop(self, grace: float = 20.0) -> None:
        """Stop every process the components started: SIGTERM, then SIGKILL what is left after ``grace``."""
        if self._client is not None:
            self._client.close()
            self._client = None
        if not self.processes:
            return
        _stop_sessions([p.pid for p in self.processes.values()], grace)
        for process in self.processes.values():
            with contextlib.suppress(Exception):
                process.wait(timeout=1)
        self.processes.clear()
        with contextlib.suppress(FileNotFoundError):
            self.pid_file.unlink()
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)

    def _stop_stale_session(self) -> None:
        """A previous LocalAirflow on this home crashed before stopping: stop what it left running."""
        try:
            leaders = [int(line) for line in self.pid_file.read_text().split()]
        except (FileNotFoundError, ValueError):
            return
        _stop_sessions([pid for pid in leaders if _is_airflow_session_leader(pid)], grace=10.0)
        with contextlib.suppress(FileNotFoundError):
            self.pid_file.unlink()

    def session_pids(self) -> list[int]:
        """Processes still alive in the components' sessions (empty once stopped)."""
        sessions = {p.pid for p in self.processes.values()}
        return _session_members(sessions) if sessions else []

    # -- REST API -----------------------------------------------------------------------------
    def api(self, method: str, path: str, body: Any = None, params: Mapping[str, Any] | None = None) -> Any:
        """Call the REST API (all-admins auth: no token needed) and return the decoded JSON.

        Raises:
            AirflowRunError: the API answered with an error status.
            OSError: nothing listens on the port (yet).
        """
        import httpx

        if self._client is None:
            self._client = httpx.Client(base_url=self.base_url, timeout=30.0)
        try:
            response = self._client.request(method, path, json=body, params=params)
        except httpx.TransportError as error:
            raise ConnectionError(f"{method} {self.base_url}{path}: {error}") from error
        if response.status_code >= 400:
            raise AirflowRunError(f"{method} {path} -> HTTP {response.status_code}: {response.text[:2000]}")
        return response.json() if response.content else None

    def wait_for_dag(self, dag_id: str, timeout: float = 120.0) -> dict[str, Any]:
        """Wait until the DAG processor has parsed ``dag_id``; fail fast on an import error."""
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive()
            errors = self.api("GET", "/api/v2/importErrors").get("import_errors", [])
            if errors:
                details = "\n\n".join(f"{e['filename']}:\n{e['stack_trace']}" for e in errors)
                raise AirflowRunError(f"DAG files failed to import:\n{details}")
            try:
                return dict(self.api("GET", f"/api/v2/dags/{dag_id}"))
            except AirflowRunError as error:
                if "HTTP 404" not in str(error) or time.monotonic() > deadline:
                    raise AirflowRunError(
                        f"DAG {dag_id!r} did not appear within {timeout:.0f} s "
                        f"(DAG folder {self.env['AIRFLOW__CORE__DAGS_FOLDER']}): {error}"
                    ) from error
            time.sleep(1.0)

    def unpause(self, dag_id: str) -> None:
        """Unpause a DAG (new DAGs are paused at creation)."""
        self.api("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})

    def pause(self, dag_id: str) -> None:
        """Pause a DAG."""
        self.api("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": True})

    def trigger(
        self, dag_id: str, conf: Mapping[str, Any] | None = None, logical_date: datetime | None = None
    ) -> str:
        """Create a manual run and return its run id.

        In Airflow 3 a manual run has no logical date (and no data interval) unless one is given;
        ShopFlow DAGs then read their interval from ``conf``.
        """
        body = {"logical_date": logical_date.isoformat() if logical_date else None, "conf": dict(conf or {})}
        return str(self.api("POST", f"/api/v2/dags/{dag_id}/dagRuns", body)["dag_run_id"])

    def backfill(
        self, dag_id: str, start: date, end: date, *, max_active_runs: int = 1, reprocess: str = "none"
    ) -> dict[str, Any]:
        """Create one run per schedule interval whose start is in ``[start, end)``.

        Args:
            dag_id: the DAG to backfill (must have a time-based schedule).
            start: first interval start (inclusive).
            end: no run for intervals starting on or after this day.
            max_active_runs: runs of this backfill allowed at once.
            reprocess: ``none`` (skip dates that already have a run), ``failed`` or ``completed``.

        Returns:
            The backfill as the REST API describes it (``id``, ``from_date``, ``to_date``, ...).
        """
        # The API's to_date is inclusive of logical dates; stop just before ``end``.
        last = utc_midnight(end) - timedelta(seconds=1)
        body = {
            "dag_id": dag_id,
            "from_date": utc_midnight(start).isoformat(),
            "to_date": last.isoformat(),
            "max_active_runs": max_active_runs,
            "reprocess_behavior": reprocess,
        }
        # On SQLite the API server refuses to create a backfill while another component holds the
        # database (503 "Database is locked"): the scheduler does whenever a run has just ended,
        # e.g. the bootstrap run's marts event scheduling training. Wait for it, a few times.
        for wait_s in (2.0, 4.0, 6.0, 8.0, *[10.0] * 10):
            try:
                return dict(self.api("POST", "/api/v2/backfills", body))
            except AirflowRunError as error:
                if "Database is locked" not in str(error):
                    raise
            time.sleep(wait_s)
        return dict(self.api("POST", "/api/v2/backfills", body))

    def runs(self, dag_id: str) -> list[dict[str, Any]]:
        """All runs of ``dag_id``, oldest first."""
        answer = self.api(
            "GET", f"/api/v2/dags/{dag_id}/dagRuns", params={"limit": 1000, "order_by": "run_after"}
        )
        return list(answer["dag_runs"])

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """The task instances of one run."""
        return list(
            self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]
        )

    def asset_events(
        self, asset_name: str | None = None, source_dag_id: str | None = None
    ) -> list[dict[str, Any]]:
        """Asset events, optionally of one asset name and/or producing DAG, oldest first."""
        params: dict[str, Any] = {"limit": 1000, "order_by": "timestamp"}
        if source_dag_id:
            params["source_dag_id"] = source_dag_id
        events = list(self.api("GET", "/api/v2/assets/events", params=params)["asset_events"])
        return [e for e in events if asset_name is None or e.get("name") == asset_name]

    def wait_for_runs(
        self,
        dag_id: str,
        timeout: float = 1800.0,
        run_ids: list[str] | None = None,
        backfill_id: int | None = None,
        poll: float = 2.0,
        *,
        label: str | None = None,
        step: tuple[str, int, int] | None = None,
    ) -> list[dict[str, Any]]:
        """Wait until no run of ``dag_id`` (or of ``run_ids``) is queued or running.

        Meanwhile the states of the awaited runs' tasks show as they change, with the elapsed time
        and a bar of runs done (see ``ml.ops.progress.RunsDisplay``), unless ``self.progress`` is off.

        Args:
            dag_id: the DAG.
            timeout: seconds to wait in all.
            run_ids: only these runs (default: every run of the DAG).
            backfill_id: also wait until this backfill has created and completed all its runs.
            poll: seconds between polls.
            label: what the progress display calls this wait (default: the DAG id).
            step: ``(label, done, total)`` of the caller's loop, drawn as a bar above the runs.

        Returns:
            The runs, oldest first, all successful.

        Raises:
            AirflowRunError: a run failed (naming its failed tasks and their log files with the log
                tail), a component died, or the timeout passed.
        """
        display = RunsDisplay(label or dag_id, dag_id, run_ids, step, self.console)
        with display if self.progress else contextlib.nullcontext():
            runs = self._poll_runs(dag_id, timeout, run_ids, backfill_id, poll, display)
        failed = [r for r in runs if r["state"] != "success"]
        if failed:
            raise AirflowRunError(self._describe_failures(dag_id, failed))
        return runs

    def _poll_runs(
        self,
        dag_id: str,
        timeout: float,
        run_ids: list[str] | None,
        backfill_id: int | None,
        poll: float,
        display: RunsDisplay,
    ) -> list[dict[str, Any]]:
        """Poll until the runs are done (see :meth:`wait_for_runs`), feeding ``display``; the runs."""
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive()
            runs = [r for r in self.runs(dag_id) if run_ids is None or r["dag_run_id"] in run_ids]
            if self.progress:
                display.update(runs, self._read_tasks(dag_id, display.runs_to_read(runs)))
            active = [r for r in runs if r["state"] in ACTIVE_RUN_STATES]
            backfill_done = True
            if backfill_id is not None:
                backfill_done = (
                    self.api("GET", f"/api/v2/backfills/{backfill_id}").get("completed_at") is not None
                )
            missing = set(run_ids or ()) - {r["dag_run_id"] for r in runs}
            if runs and not active and backfill_done and not missing:
                break
            if time.monotonic() > deadline:
                states = ", ".join(f"{r['dag_run_id']}={r['state']}" for r in runs) or "no runs"
                raise AirflowRunError(
                    f"runs of {dag_id!r} still active after {timeout:.0f} s ({states}); "
                    f"scheduler log: {self.log_dir / 'scheduler.log'}"
                )
            time.sleep(poll)
        return runs

    def _read_tasks(self, dag_id: str, run_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
        """The task instances of ``run_ids``; a run the API cannot answer for now is left out."""
        tasks = {}
        for run_id in run_ids:
            # Progress is best effort: a slow or restarting API server must not fail the wait.
            with contextlib.suppress(AirflowRunError, OSError, KeyError):
                tasks[run_id] = self.task_instances(dag_id, run_id)
        return tasks

    def _describe_failures(self, dag_id: str, runs: list[dict[str, Any]]) -> str:
        lines = [f"{len(runs)} run(s) of {dag_id!r} did not succeed:"]
        for run in runs:
            lines.append(f"- run {run['dag_run_id']}: {run['state']}")
            for ti in self.task_instances(dag_id, run["dag_run_id"]):
                if ti["state"] not in FAILED_TASK_STATES:
                    continue
                log = self.task_log_path(dag_id, run["dag_run_id"], ti["task_id"], ti.get("try_number"))
                lines.append(f"  task {ti['task_id']}: {ti['state']} (log: {log or 'none written'})")
                if log is not None and ti["state"] == "failed":
                    lines.extend("    " + line for line in _render_task_log(log, 25).splitlines())
        return "\n".join(lines)

    def task_log_path(
        self, dag_id: str, run_id: str, task_id: str, try_number: int | None = None
    ) -> Path | None:
        """The log file of a task attempt (the latest when ``try_number`` is ``None``)."""
        folder = self.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"
        if try_number:
            exact = folder / f"attempt={try_number}.log"
            if exact.exists():
                return exact
        attempts = sorted(folder.glob("attempt=*.log"), key=lambda p: p.stat().st_mtime)
        return attempts[-1] if attempts else None


# -- process sessions -----------------------------------------------------------------------------
def _session_members(sessions: set[int]) -> list[int]:
    """Live (non-zombie) processes whose session id is one of ``sessions``."""
    import psutil

    members = []
    for process in psutil.process_iter(["pid", "status"]):
        with contextlib.suppress(ProcessLookupError, PermissionError, OSError):
            if process.info["status"] != psutil.STATUS_ZOMBIE and os.getsid(process.info["pid"]) in sessions:
                members.append(process.info["pid"])
    return members


def _is_airflow_session_leader(pid: int) -> bool:
    """Whether ``pid`` still is a session leader running airflow (and not a recycled pid)."""
    import psutil

    try:
        return os.getsid(pid) == pid and any("airflow" in part for part in psutil.Process(pid).cmdline())
    except (psutil.Error, OSError):
        return False


def _signal_all(pids: list[int], signum: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signum)


def _stop_sessions(leaders: list[int], grace: float) -> None:
    """SIGTERM every process of the leaders' sessions, wait up to ``grace`` s, SIGKILL the rest.

    Task runners sit in process groups of their own but never leave their session, so the
    members are found by session id rather than signalled through the leader's process group.
    """
    sessions = set(leaders)
    if not sessions:
        return
    _signal_all(_session_members(sessions), signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and _session_members(sessions):
        time.sleep(0.25)
    # Some children (the executor's workers, the API server's) outlive SIGTERM while shutting down.
    for _ in range(5):
        left = _session_members(sessions)
        if not left:
            return
        _signal_all(left, signal.SIGKILL)
        time.sleep(0.5)


def _tail(path: Path, lines: int) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 64_000))
            return "\n".join(handle.read().decode("utf8", "replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def _render_task_log(path: Path, lines: int) -> str:
    """The last lines of an Airflow 3 task log (JSON lines), as ``level: event`` text."""
    rendered: list[str] = []
    for raw in _tail(path, 400).splitlines():
        try:
            record = json.loads(raw)
        except json.JSONDecodeError:
            rendered.append(raw)
            continue
        if not isinstance(record, dict):
            rendered.append(raw)
            continue
        rendered.append(f"{record.get('level', '')}: {record.get('event', '')}".strip())
        for detail in record.get("error_detail") or []:
            if isinstance(detail, dict):
                rendered.append(f"  {detail.get('exc_type')}: {detail.get('exc_value')}")
    return "\n".join(rendered[-lines:])
