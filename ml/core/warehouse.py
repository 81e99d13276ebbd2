"""The warehouse: a DuckDB file by default, PostgreSQL in production.

A deliberately thin layer: open a connection, run SQL with named parameters (``:name``), read a
DataFrame, and replace a set of rows in one transaction. dbt owns everything past ``raw.*``.
"""

from __future__ import annotations

import io
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pandas as pd

from ml.core import schemas
from ml.core.settings import Settings, get_settings

_NAMED_PARAM = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")

# Schemas and tables ingest and validation write; dbt builds the rest.
OWN_TABLES: dict[str, list[schemas.Column]] = {
    **{f"raw.{name}": cols for name, cols in schemas.RAW_TABLES.items()},
    "raw.ingest_audit": schemas.INGEST_AUDIT,
    "quarantine.rows": schemas.QUARANTINE,
    **schemas.MONITORING_TABLES,
}


_lock_guard = threading.RLock()
_lock_depth = 0
_lock_file: Any = None


@contextmanager
def duckdb_lock(settings: Settings) -> Iterator[None]:
    """Hold the warehouse file's lock: one ShopFlow process at a time opens the DuckDB file.

    DuckDB lets one process open a file for writing; a second one fails at once ("Could not set
    lock on file"). Airflow runs an ingest task and a training or monitoring task at the same time,
    so every opener (:meth:`Warehouse.connect`, dbt) waits here on an ``flock`` of
    ``<file>.lock`` instead, up to ``duckdb_lock_timeout_s``. Re-entrant within a process.
    PostgreSQL needs none of this.
    """
    global _lock_depth, _lock_file
    import fcntl
    import time

    with _lock_guard:
        if _lock_depth == 0:
            path = settings.duckdb_file.with_name(settings.duckdb_file.name + ".lock")
            path.parent.mkdir(parents=True, exist_ok=True)
            handle = path.open("a")
            deadline = time.monotonic() + settings.duckdb_lock_timeout_s
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        handle.close()
                        raise TimeoutError(
                            f"the warehouse {settings.duckdb_file} stayed locked by another process "
                            f"for {settings.duckdb_lock_timeout_s:.0f} s (lock file {path})"
                        ) from None
                    time.sleep(0.5)
            _lock_file = handle
        _lock_depth += 1
    try:
        yield
    finally:
        with _lock_guard:
            _lock_depth -= 1
            if _lock_depth == 0 and _lock_file is not None:
                fcntl.flock(_lock_file, fcntl.LOCK_UN)
                _lock_file.close()
                _lock_file = None


class Warehouse:
    """Connections to the configured warehouse."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        self.engine = self.settings.warehouse

    # -- connections -----------------------------------------------------------------------
    @contextmanager
    def connect(self) -> Iterator[Any]:
        """A DB-API connection; commits on success, rolls back on error."""
        if self.engine == "duckdb":
            import duckdb

            path = self.settings.duckdb_file
            path.parent.mkdir(parents=True, exist_ok=True)
            with duckdb_lock(self.settings):
                limit = self.settings.duckdb_memory_limit
                con = duckdb.connect(str(path), config={"memory_limit": limit} if limit else {})
                try:
                    con.execute("BEGIN TRANSACTION")
                    yield con
                    con.execute("COMMIT")
                except BaseException:
                    con.execute("ROLLBACK")
                    raise
                finally:
                    con.close()
        else:
            import psycopg2

            self._create_postgres_database()
            con = psycopg2.connect(self.settings.postgres_dsn)
            try:
                yield con
                con.commit()
            except BaseException:
                con.rollback()
                raise
            finally:
                con.close()

    def _create_postgres_database(self) -> None:
        import psycopg2
        from psycopg2 import sql

        dsn = self.settings.postgres_dsn
        dbname = dsn.rsplit("/", 1)[-1].split("?")[0]
        try:
            psycopg2.connect(dsn).close()
            return
        except psycopg2.OperationalError as error:
            if "does not exist" not in str(error):
                raise
        admin = psycopg2.connect(dsn.rsplit("/", 1)[0] + "/postgres")
        admin.autocommit = True
        try:
            with admin.cursor() as cur:
                cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
        except psycopg2.errors.DuplicateDatabase:
            pass
        finally:
            admin.close()

    def _sql(self, sql: str) -> str:
        replacement = r"$\1" if self.engine == "duckdb" else r"%(\1)s"
        return _NAMED_PARAM.sub(replacement, sql)

    # -- statements ------------------------------------------------------------------------
    def execute(self, con: Any, sql: str, params: dict[str, Any] | None = None) -> None:
        if self.engine == "duckdb":
            con.execute(self._sql(sql), params or {})
        else:
            with con.cursor() as cur:
                cur.execute(self._sql(sql), params or {})

    def read(self, sql: str, params: dict[str, Any] | None = None, con: Any = None) -> pd.DataFrame:
        """Run a query and return a DataFrame."""
        if con is None:
            with self.connect() as own:
                return self.read(sql, params, own)
        if self.engine == "duckdb":
            return con.execute(self._sql(sql), params or {}).df()
        with con.cursor() as cur:
            cur.execute(self._sql(sql), params or {})
            names = [d[0] for d in cur.description]
            return pd.DataFrame(cur.fetchall(), columns=names)

    def scalar(self, sql: str, params: dict[str, Any] | None = None) -> Any:
        frame = self.read(sql, params)
        return None if frame.empty else frame.iat[0, 0]

    def insert(self, con: Any, table: str, frame: pd.DataFrame) -> None:
        """Append a DataFrame whose columns are a subset of the table's."""
        if frame.empty:
            return
        columns = ", ".join(frame.columns)
        if self.engine == "duckdb":
            con.register("_shopflow_insert", frame)
            try:
                con.execute(f"INSERT INTO {table} ({columns}) SELECT {columns} FROM _shopflow_insert")
            finally:
                con.unregister("_shopflow_insert")
            return
        buffer = io.StringIO()
        frame.to_csv(buffer, index=False, header=False, na_rep="\\N", date_format="%Y-%m-%d %H:%M:%S")
        buffer.seek(0)
        with con.cursor() as cur:
            cur.copy_expert(f"COPY {table} ({columns}) FROM STDIN WITH (FORMAT csv, NULL '\\N')", buffer)

    def ensure_tables(self, con: Any) -> None:
        """Create the schemas and tables that ingest and validation own (idempotent)."""
        for qualified, columns in OWN_TABLES.items():
            schema = qualified.split(".")[0]
            self.execute(con, f"CREATE SCHEMA IF NOT EXISTS {schema}")
            self.execute(con, schemas.create_table_sql(self.engine, qualified, columns))

    def table_exists(self, qualified: str) -> bool:
        schema, name = qualified.split(".")
        found = self.scalar(
            "select count(*) from information_schema.tables"
            " where table_schema = :schema and table_name = :name",
            {"schema": schema, "name": name},
        )
        return bool(found)
