"""Airflow under CeleryExecutor on this machine, without containers: the production executor, for real.

The compose stack (docker-compose.yml) runs CeleryExecutor with a Redis broker and PostgreSQL for
Airflow's metadata and the warehouse. :class:`CeleryAirflow` runs the same on the local servers:

* **metadata DB**: a throwaway PostgreSQL database per run (:func:`throwaway_metadata_db`, unique
  name, dropped afterwards with every connection to it); Celery's result backend lives there too;
* **broker**: the local Redis, on a database number this run claims for itself
  (:func:`claim_broker_db`), so parallel runs on one Redis never take each other's tasks; it is
  flushed and released on stop;
* **components**: scheduler, API server (the UI, REST and the Execution API the workers' tasks
  talk to) and DAG processor, as :class:`~ml.ops.local_airflow.LocalAirflow` starts them, plus one
  ``airflow celery worker`` per :class:`CeleryWorker`: by default two on the ``default`` queue and a
  third on ``gpu``, where ``train_recommender`` sends its training task
  (``SHOPFLOW_TRAINING_QUEUE=gpu``).

Each worker leads a process session of its own, so :meth:`CeleryAirflow.kill_worker` can SIGKILL a
worker with everything it runs (pool process, task supervisor, task), as a lost machine would.
Each worker's name is what its tasks record as their ``hostname`` (``[core] hostname_callable`` is
:func:`ml.ops.worker_name.worker_hostname`), so the metadata DB says which worker ran which attempt.
Nothing here is imported by a DAG file.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from ml.core.settings import Settings, get_settings
from ml.ops.local_airflow import AirflowRunError, LocalAirflow, _session_members, _signal_all, _stop_sessions
from ml.ops.local_airflow import _tail as tail_file
from ml.ops.worker_name import WORKER_NAME_ENV, worker_hostname

REDIS_URL = "redis://127.0.0.1:6379"
"""The local Redis (the broker); a run adds the database number it claims."""
PG_SERVER = "postgresql://postgres@127.0.0.1:5432"
"""The local PostgreSQL server (trust auth) where each run creates its metadata database."""
BROKER_CLAIM_KEY = "shopflow:celery-local:owner"
"""Key a run sets (NX) in the Redis database it claims; its value says who holds it."""
BROKER_DBS = tuple(range(15, 7, -1))
"""Redis database numbers runs may claim (8-15; 0-7 are left to everything else on the server)."""


@dataclass(frozen=True)
class CeleryWorker:
    """One ``airflow celery worker``: its name (also its tasks' ``hostname``) and the queues it consumes."""

    name: str
    queues: tuple[str, ...] = ("default",)
    concurrency: int = 1


DEFAULT_WORKERS = (
    CeleryWorker("default-1", ("default",)),
    CeleryWorker("default-2", ("default",)),
    CeleryWorker("gpu-1", ("gpu",)),
)
"""The production layout in small: two CPU workers and one training worker (queue ``gpu``)."""


# -- the throwaway metadata database and the broker database ---------------------------------------
@contextlib.contextmanager
def throwaway_metadata_db(server: str = PG_SERVER, prefix: str = "shopflow_celery") -> Iterator[str]:
    """A new PostgreSQL database named ``<prefix>_<random>`` (its plain DSN); dropped afterwards.

    Raises:
        AirflowRunError: the server at ``server`` cannot be reached (the message names it).
    """
    import psycopg2

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg2.connect(f"{server}/postgres")
    except psycopg2.OperationalError as error:
        raise AirflowRunError(
            f"PostgreSQL at {server} (Airflow's metadata DB) is not reachable: {error}"
        ) from error
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        yield f"{server}/{name}"
    finally:
        with admin.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
            cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.close()


def _redis(url: str, db: int) -> Any:
    import redis

    return redis.Redis.from_url(url, db=db, socket_connect_timeout=5)


def claim_broker_db(redis_url: str = REDIS_URL, owner: str = "", ttl_s: int = 6 * 3600) -> int:
    """Claim an empty Redis database for one run's broker and return its number.

    A database is claimed by setting :data:`BROKER_CLAIM_KEY` there only if it is absent (``SET NX``),
    so two runs never share one; the key expires after ``ttl_s`` should a run die without releasing.

    Raises:
        AirflowRunError: Redis is not reachable at ``redis_url``, or every database in
            :data:`BROKER_DBS` is in use.
    """
    import redis

    owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
    for db in BROKER_DBS:
        client = _redis(redis_url, db)
        try:
            if client.dbsize() == 0 and client.set(BROKER_CLAIM_KEY, owner, nx=True, ex=ttl_s):
                return db
        except redis.exceptions.ConnectionError as error:
            raise AirflowRunError(
                f"Redis at {redis_url} (the Celery broker) is not reachable: {error}"
            ) from error
        finally:
            client.close()
    raise AirflowRunError(
        f"no free Redis database for the broker at {redis_url}: databases {list(BROKER_DBS)} all hold keys"
    )


def release_broker_db(redis_url: str, db: int) -> None:
    """Empty a claimed broker database (queued messages, results, the claim) for the next run."""
    client = _redis(redis_url, db)
    try:
        client.flushdb()
    finally:
        client.close()


def worker_command(worker: CeleryWorker) -> list[str]:
    """``airflow celery worker`` for ``worker``: its queues, concurrency and node name ``<name>@<host>``."""
    from ml.ops.local_airflow import airflow_executable

    return [
        airflow_executable(), "celery", "worker",
        "--queues", ",".join(worker.queues),
        "--concurrency", str(worker.concurrency),
        "--celery-hostname", f"{worker.name}@%h",
        # All workers share this machine: each would start a log server on port 8793, and the
        # API server reads the task logs from the shared folder anyway.
        "--skip-serve-logs",
        "--without-gossip", "--without-mingle",
    ]  # fmt: skip


def start_worker_process(
    worker: CeleryWorker, env: Mapping[str, str], log_path: Path, cwd: Path
) -> subprocess.Popen[bytes]:
    """Start ``worker`` as a subprocess leading a session of its own, output appended to ``log_path``.

    ``env`` is a full Airflow environment with the Celery settings (:func:`celery_env`); the
    worker's name is added as :data:`WORKER_NAME_ENV` for :func:`worker_hostname`.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = log_path.open("ab")
    try:
        return subprocess.Popen(
            worker_command(worker), env={**env, WORKER_NAME_ENV: worker.name}, cwd=cwd, stdout=log,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
    finally:
        log.close()  # the child holds its own descriptor


def worker_queues(broker_url: str, timeout: float = 2.0) -> dict[str, list[str]]:
    """Queues each worker answering on ``broker_url`` consumes (``celery inspect active_queues``),
    by worker name (the part of the node name before ``@``)."""
    from celery import Celery

    app = Celery("shopflow-inspect", broker=broker_url)
    try:
        answer = app.control.inspect(timeout=timeout).active_queues() or {}
    finally:
        app.close()
    return {node.split("@", 1)[0]: sorted(q["name"] for q in queues) for node, queues in answer.items()}


# -- Airflow on Celery --------------------------------------------------------------------------------
def celery_env(
    metadata_url: str,
    broker_url: str,
    *,
    heartbeat_timeout_s: float | None = None,
) -> dict[str, str]:
    """The Airflow variables that make the components and workers run CeleryExecutor.

    Args:
        metadata_url: SQLAlchemy URL of the metadata DB (``postgresql+psycopg2://...``); Celery's
            result backend is the same database.
        broker_url: ``redis://host:port/db``.
        heartbeat_timeout_s: ``[scheduler] task_instance_heartbeat_timeout``: how long a running
            task may go without a heartbeat before the scheduler fails it (and retries it, if it has
            retries left). ``None`` keeps Airflow's 300 s; tests lower it to see a lost worker soon.
    """
    if not metadata_url.startswith("postgresql"):
        raise ValueError(
            "CeleryExecutor needs a PostgreSQL metadata DB (settings.airflow_database_url), "
            f"got {metadata_url!r}"
        )
    # SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3, which is not installed: name psycopg2.
    psycopg2_url = "postgresql+psycopg2://" + metadata_url.split("://", 1)[1]
    env = {
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CELERY__BROKER_URL": broker_url,
        "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{psycopg2_url}",
        "AIRFLOW__OPERATORS__DEFAULT_QUEUE": "default",
        # Tasks record the worker's name as their hostname (all local workers share one FQDN).
        # (ml.ops.worker_name imports nothing of ShopFlow: tasks fork from the worker process.)
        "AIRFLOW__CORE__HOSTNAME_CALLABLE": f"{worker_hostname.__module__}.worker_hostname",
        # Two cores: more parallel tasks only thrash; each worker runs one task at a time.
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": "1",
        # Said explicitly: with acks_late a message whose worker died is redelivered only after
        # this long; by then Airflow's own retry (heartbeat timeout) has long rerun the task.
        "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT": "86400",
    }
    if heartbeat_timeout_s is not None:
        env["AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT"] = str(int(heartbeat_timeout_s))
        # Look for such tasks often enough to notice within the timeout's order of magnitude.
        env["AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL"] = str(
            max(2.0, heartbeat_timeout_s / 4)
        )
    return env


class CeleryAirflow(LocalAirflow):
    """:class:`LocalAirflow` on CeleryExecutor: its components plus local Celery workers.

    ``settings.airflow_database_url`` must name a PostgreSQL database (see
    :func:`throwaway_metadata_db`). The broker is ``broker_url`` when given, else a Redis database
    claimed at start on ``redis_url`` and released at stop.

    Example:
        >>> with throwaway_metadata_db() as dsn:  # doctest: +SKIP
        ...     url = dsn.replace("postgresql://", "postgresql+psycopg2://", 1)
        ...     settings = Settings(airflow_database_url=url, training_queue="gpu", ...)
        ...     with CeleryAirflow(settings, heartbeat_timeout_s=30) as airflow:
        ...         airflow.wait_for_dag("ingest_transform_validate")
        ...         ...
        ...         airflow.kill_worker("default-1")
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        workers: tuple[CeleryWorker, ...] = DEFAULT_WORKERS,
        redis_url: str = REDIS_URL,
        broker_url: str | None = None,
        heartbeat_timeout_s: float | None = None,
        extra_env: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> None:
        settings = settings or get_settings()
        if not settings.airflow_database_url:
            raise ValueError(
                "CeleryExecutor needs a PostgreSQL metadata DB: set SHOPFLOW_AIRFLOW_DATABASE_URL "
                "(settings.airflow_database_url), e.g. from throwaway_metadata_db()"
            )
        settings = settings.model_copy(update={"airflow_executor": "CeleryExecutor"})
        names = [w.name for w in workers]
        if len(set(names)) != len(names):
            raise ValueError(f"worker names must be unique, got {names}")
        self.workers = {w.name: w for w in workers}
        self.redis_url = redis_url
        self.broker_url = broker_url
        self._claimed_db: int | None = None
        self.heartbeat_timeout_s = heartbeat_timeout_s
        # The broker URL is filled in at start (after claiming a database); a placeholder for now.
        env = celery_env(
            str(settings.airflow_database_url),
            broker_url or f"{redis_url}/0",
            heartbeat_timeout_s=heartbeat_timeout_s,
        )
        super().__init__(settings, extra_env={**env, **(extra_env or {})}, **kwargs)
        self.worker_processes: dict[str, subprocess.Popen[bytes]] = {}

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        """Claim a broker database, start the components (``LocalAirflow.start``), then the workers."""
        if self.broker_url is None:
            self._claimed_db = claim_broker_db(self.redis_url, owner=f"celery-airflow:{self.home}")
            self.broker_url = f"{self.redis_url}/{self._claimed_db}"
        self.env["AIRFLOW__CELERY__BROKER_URL"] = self.broker_url
        super().start()
        started = time.monotonic()
        for worker in self.workers.values():
            self.start_worker(worker.name)
        self.wait_for_workers(list(self.workers))
        self.timings["workers_startup_s"] = time.monotonic() - started

    def start_worker(self, name: str) -> None:
        """Start (or restart, after :meth:`kill_worker`) the worker ``name`` in a session of its own."""
        self.worker_processes[name] = start_worker_process(
            self.workers[name], self.env, self.log_dir / f"worker-{name}.log", cwd=self.home
        )
        self._write_pid_file()

    def _write_pid_file(self) -> None:
        # Workers' sessions join the components' in the pid file: a crashed run's next start stops them.
        pids = [p.pid for p in self.processes.values()] + [p.pid for p in self.worker_processes.values()]
        self.pid_file.write_text("\n".join(str(pid) for pid in pids))

    def wait_for_workers(self, names: list[str], timeout: float = 240.0) -> dict[str, list[str]]:
        """Wait until each named worker answers a Celery ping; return the queues each consumes.

        Raises:
            AirflowRunError: a worker exited (with its log's tail) or did not answer in time.
        """
        deadline = time.monotonic() + timeout
        wanted = set(names)
        while True:
            self._check_workers_alive(names)
            queues = self.worker_queues()
            if wanted <= set(queues):
                return {name: queues[name] for name in names}
            if time.monotonic() > deadline:
                raise AirflowRunError(
                    f"Celery workers {sorted(wanted - set(queues))} did not answer within {timeout:.0f} s "
                    f"on broker {self.broker_url}; logs in {self.log_dir}"
                )
            time.sleep(1.0)

    def worker_queues(self) -> dict[str, list[str]]:
        """Queues each answering worker consumes, asked over the broker (see :func:`worker_queues`)."""
        return worker_queues(str(self.broker_url))

    def _check_workers_alive(self, names: list[str]) -> None:
        for name in names:
            process = self.worker_processes[name]
            if process.poll() is not None:
                log = self.log_dir / f"worker-{name}.log"
                raise AirflowRunError(
                    f"Celery worker {name} exited with code {process.returncode}; log {log} ends with:\n"
                    f"{tail_file(log, 40)}"
                )

    def kill_worker(self, name: str) -> list[int]:
        """SIGKILL worker ``name`` and everything in its session (pool, task supervisor, task).

        What a lost machine looks like to Airflow: no goodbye, no task-state update, the broker
        message unacknowledged. Returns the pids killed.
        """
        process = self.worker_processes[name]
        pids = _session_members({process.pid})
        _signal_all(pids, 9)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=10)
        return pids

    def stop(self, grace: float = 20.0) -> None:
        """Stop the workers (warm shutdown: SIGTERM, then SIGKILL), the components, and free the broker."""
        if self.worker_processes:
            _stop_sessions([p.pid for p in self.worker_processes.values()], grace)
            for process in self.worker_processes.values():
                with contextlib.suppress(Exception):
                    process.wait(timeout=1)
            self.worker_processes.clear()
        super().stop(grace)
        if self._claimed_db is not None:
            with contextlib.suppress(Exception):
                release_broker_db(self.redis_url, self._claimed_db)
            self._claimed_db = None
            self.broker_url = None

    # -- what ran where --------------------------------------------------------------------------
    def attempts(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """Every attempt of every task of a run, from the metadata DB: earlier tries from
        ``task_instance_history``, the latest from ``task_instance``; sorted by task, then try.

        Each has ``task_id``, ``try_number``, ``state``, ``hostname`` (the worker's name),
        ``queue`` and ``external_executor_id`` (the Celery task id).
        """
        import psycopg2

        dsn = "postgresql://" + str(self.settings.airflow_database_url).split("://", 1)[1]
        columns = "task_id, try_number, state, hostname, queue, external_executor_id"
        sql = (
            f"select {columns} from task_instance where dag_id = %(dag)s and run_id = %(run)s union all "
            f"select {columns} from task_instance_history where dag_id = %(dag)s and run_id = %(run)s"
        )
        con = psycopg2.connect(dsn)
        try:
            with con.cursor() as cur:
                cur.execute(sql, {"dag": dag_id, "run": run_id})
                rows = cur.fetchall()
        finally:
            con.close()
        keys = columns.split(", ")
        return sorted(
            (dict(zip(keys, row, strict=True)) for row in rows), key=lambda a: (a["task_id"], a["try_number"])
        )


def metadata_url(dsn: str) -> str:
    """The SQLAlchemy URL (psycopg2 driver) of a plain ``postgresql://`` DSN."""
    parsed = urlparse(dsn)
    if parsed.scheme not in {"postgresql", "postgres"}:
        raise ValueError(f"not a PostgreSQL DSN: {dsn!r}")
    return "postgresql+psycopg2://" + dsn.split("://", 1)[1]


def worker_log(airflow: CeleryAirflow, name: str) -> Path:
    """The log file of worker ``name``."""
    return airflow.log_dir / f"worker-{name}.log"
