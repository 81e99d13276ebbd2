"""Helpers of the fault tests (issue 16, item 3; tests cannot import a conftest): run a real
component in its own process, kill it with SIGKILL at a known point, and compare the warehouse
before, after and against one clean run."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

import pandas as pd

from ml.core.settings import PROJECT_DIR, Settings
from ml.core.warehouse import Warehouse
from ml.ops.local_airflow import settings_env

REVIEWS_FILE = PROJECT_DIR / "data" / "amazon_reviews_2018_all_beauty_5core" / "reviews.parquet"
REVIEWS_ROWS = 5_269
"""Rows of the shipped All_Beauty 2018 reviews: what every fault must keep (0 rows lost)."""
REVIEWS_START, REVIEWS_END = date(2004, 9, 1), date(2018, 9, 1)
"""The interval over every monthly partition the reviews land in (END exclusive)."""
LINEAGE = {"_run_id", "_loaded_at"}
"""Columns that say which run wrote a row and when: all else must be equal after a fault."""


def shop_settings(work_dir: Path, **values: object) -> Settings:
    """Settings with the reviews landed as a shop's source beside the defaults."""
    return Settings(
        work_dir=work_dir,
        data_dir=PROJECT_DIR / "data",
        extra_sources={"reviews": "catalog"},
        pii_salt="test-salt",  # type: ignore[arg-type]
        **values,  # type: ignore[arg-type]
    )


def child_env(settings: Settings) -> dict[str, str]:
    """This process's environment with ``settings`` as SHOPFLOW_* variables (inherited ones dropped)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOPFLOW_")}
    env.update(settings_env(settings))
    env["PYTHONUNBUFFERED"] = "1"
    return env


def start_python(
    code: str, settings: Settings, log_path: Path, args: list[str] | None = None, pipe: bool = True
) -> subprocess.Popen[str]:
    """``python -c code`` in its own process group with ``settings``; its output goes to a pipe
    (read it with :func:`wait_for_line` or ``communicate``) or, ``pipe=False``, straight to
    ``log_path`` (a chatty child that nobody reads would block on a full pipe)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    output = subprocess.PIPE if pipe else log_path.open("w")
    return subprocess.Popen(
        [sys.executable, "-c", code, *(args or [])],
        cwd=PROJECT_DIR,
        env=child_env(settings),
        stdout=output,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def wait_for_line(
    process: subprocess.Popen[str], found: Callable[[str], bool], log_path: Path, timeout_s: float
) -> str:
    """Read the process's output until a line satisfies ``found``; return it (kept in ``log_path``)."""
    assert process.stdout is not None
    deadline = time.monotonic() + timeout_s
    with log_path.open("a") as log:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([process.stdout], [], [], 1.0)
            if not ready:
                if process.poll() is not None:
                    break
                continue
            line = process.stdout.readline()
            if not line:
                break
            log.write(line)
            log.flush()
            if found(line):
                return line
    process.kill()
    raise AssertionError(
        f"no expected line within {timeout_s:.0f} s (exit {process.poll()}):\n{log_path.read_text()[-3000:]}"
    )


def sigkill(process: subprocess.Popen[str], log_path: Path) -> str:
    """SIGKILL the process group; return the rest of its output (also appended to ``log_path``)."""
    os.killpg(process.pid, signal.SIGKILL)
    rest, _ = process.communicate(timeout=60)
    with log_path.open("a") as log:
        log.write(rest or "")
    assert process.returncode == -signal.SIGKILL, f"exit {process.returncode}: not killed, it ended"
    return rest or ""


def table_state(settings: Settings, table: str, drop: set[str] = LINEAGE) -> pd.DataFrame:
    """A table's rows without lineage columns, in a canonical order (empty frame if no table)."""
    warehouse = Warehouse(settings)
    if not warehouse.table_exists(table):
        return pd.DataFrame()
    frame = warehouse.read(f"select * from {table}")
    frame = frame[[c for c in frame.columns if c not in drop]].copy()
    if "row_json" in frame:  # a quarantined row, as JSON, carries the lineage of its raw row too
        frame["row_json"] = [
            json.dumps({k: v for k, v in json.loads(text).items() if k not in drop}, sort_keys=True)
            for text in frame["row_json"]
        ]
    # As text in one format per column (pandas prints a datetime column without its time when
    # every value is midnight, so a frame's text would depend on its other rows), None/NaN alike.
    for column in frame.columns:
        if pd.api.types.is_datetime64_any_dtype(frame[column]):
            frame[column] = frame[column].dt.strftime("%Y-%m-%dT%H:%M:%S.%f")
    frame = frame.astype(str)
    return frame.sort_values(list(frame.columns)).reset_index(drop=True)


def land_reviews(settings: Settings) -> None:
    """Land the All_Beauty 2018 reviews as the shop's interactions (``shopflow land``'s function)."""
    from ml.data.land import land

    land(REVIEWS_FILE, "reviews", settings=settings)


class ThrowawayPostgres:
    """A PostgreSQL server of this test's own: initdb + pg_ctl on a free port in a temp dir.

    Never the shared server at 5432: the test restarts it. PostgreSQL refuses to run as root, so
    when the tests do, the server runs as the ``postgres`` system user (``runuser``).
    """

    def __init__(self) -> None:
        import glob
        import shutil
        import tempfile

        from ml.core.net import free_port

        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
        if not found and shutil.which("pg_ctl") is None:
            raise FileNotFoundError("no pg_ctl under /usr/lib/postgresql/*/bin nor on PATH")
        self.bin = Path(found[-1]).parent if found else Path(str(shutil.which("pg_ctl"))).parent
        self.port = free_port()
        # Not under pytest's tmp_path: its parents are root's (mode 700), unreachable for postgres.
        self.root = Path(tempfile.mkdtemp(prefix="shopflow-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.user: list[str] = []
        if os.geteuid() == 0:
            self.user = ["runuser", "-u", "postgres", "--"]
            shutil.chown(self.root, "postgres", "postgres")

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/shopflow"

    def _run(self, *args: str) -> str:
        done = subprocess.run(
            [*self.user, *args], capture_output=True, text=True, timeout=120, check=False, cwd=self.root
        )
        if done.returncode != 0:
            tail = self.log.read_text()[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{args[0]} failed: {done.stdout}{done.stderr}\n{tail}")
        return done.stdout

    def _ctl(self, action: str, *extra: str) -> str:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        return self._run(
            str(self.bin / "pg_ctl"),
            action,
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-w",
            "-o",
            options,
            *extra,
        )

    def start(self) -> None:
        self._run(
            str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8"
        )
        self._ctl("start")

    def restart(self) -> None:
        """Stop (fast: every session is terminated, open transactions roll back) and start again."""
        self._ctl("restart", "-m", "fast")

    def stop(self) -> None:
        import shutil

        if (self.data / "postmaster.pid").exists():
            self._ctl("stop", "-m", "immediate")
        shutil.rmtree(self.root, ignore_errors=True)
