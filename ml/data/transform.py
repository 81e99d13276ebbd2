"""The transform stage: run the dbt project (dbt/) against the configured warehouse.

dbt owns everything past ``raw.*``: staging views, intermediate views and the ``marts.*`` tables
that validation, training and serving read. This module calls dbt in-process through
``dbtRunner`` with the profile in ``dbt/profiles.yml`` (target = ``settings.warehouse``), keeps
its artefacts (target/, logs/) under ``<work_dir>/dbt`` so runs never write into the checkout,
and turns the run results into a small :class:`DbtResult` -- or a :class:`DbtBuildError` that
names what failed.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ml.core.artifacts import safe_run_id
from ml.core.catalog import PRICE_BANDS
from ml.core.settings import Settings, get_settings
from ml.core.warehouse import duckdb_lock

# Statuses of a run result that make a build fail ("runtime error" is how older dbt spelled error).
FAILED_STATUSES = frozenset({"error", "fail", "runtime error"})
WARNING_STATUSES = frozenset({"warn"})


@dataclass(frozen=True)
class DbtNodeResult:
    """One dbt node (model, data test, unit test...) that did not simply succeed."""

    unique_id: str
    name: str
    resource_type: str
    status: str
    message: str

    def __str__(self) -> str:
        return f"{self.resource_type} {self.name} [{self.status}]: {self.message}"


@dataclass(frozen=True)
class DbtResult:
    """The outcome of one dbt invocation.

    Attributes:
        run_id: The caller's run id (Airflow run id, CLI run id), also passed to dbt as var ``run_id``.
        command: The dbt sub-command that ran (``build``, ``docs generate``...).
        target: The dbt target (``duckdb`` or ``postgres``).
        success: Whether dbt reported success.
        elapsed_s: Wall-clock seconds of the invocation.
        status_counts: Number of nodes per status (``success``, ``pass``, ``fail``, ``warn``...).
        resource_counts: Number of nodes run per resource type (``model``, ``test``, ``unit_test``...).
        failures: Nodes that errored or failed.
        warnings: Nodes that passed with a warning (severity ``warn`` tests).
        invocation_id: dbt's invocation id (in ``run_results.json`` and the logs).
        run_results_path: A copy of ``run_results.json`` kept per run id, for lineage.
    """

    run_id: str
    command: str
    target: str
    success: bool
    elapsed_s: float
    status_counts: dict[str, int] = field(default_factory=dict)
    resource_counts: dict[str, int] = field(default_factory=dict)
    failures: list[DbtNodeResult] = field(default_factory=list)
    warnings: list[DbtNodeResult] = field(default_factory=list)
    invocation_id: str | None = None
    run_results_path: Path | None = None

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON (for XComs and asset-event extras)."""
        out = asdict(self)
        out["run_results_path"] = str(self.run_results_path) if self.run_results_path else None
        return out

    def __str__(self) -> str:
        statuses = ", ".join(f"{k}={v}" for k, v in sorted(self.status_counts.items()))
        resources = ", ".join(f"{k}={v}" for k, v in sorted(self.resource_counts.items()))
        outcome = "succeeded" if self.success else "FAILED"
        text = f"dbt {self.command} on {self.target} {outcome} in {self.elapsed_s:.1f}s: "
        text += f"{statuses} ({resources})"
        text += "".join(f"\n  warning: {w}" for w in self.warnings)
        text += "".join(f"\n  failed: {f}" for f in self.failures)
        return text


class DbtBuildError(RuntimeError):
    """dbt failed: a model errored, a data or unit test failed, or the project did not compile."""

    def __init__(self, message: str, result: DbtResult) -> None:
        super().__init__(message)
        self.result = result


def dbt_build(
    run_id: str,
    settings: Settings | None = None,
    select: str | None = None,
    vars: dict[str, Any] | None = None,
) -> DbtResult:
    """Run ``dbt build`` (models, data tests and unit tests in DAG order) on the warehouse.

    Args:
        run_id: Id of the calling run; recorded as dbt var ``run_id`` and names the kept
            copy of ``run_results.json``.
        settings: ShopFlow settings (warehouse, paths, ``max_basket_lines``); None reads them
            from the environment.
        select: A dbt selection (``--select``), e.g. ``"+fct_interactions"``; None builds all.
        vars: Extra dbt vars (e.g. ``{"time_split_test_start": "2014-01-01"}``); they override
            the defaults from settings.

    Returns:
        The result, with ``success`` true.

    Raises:
        DbtBuildError: If dbt fails; the message names every failing model and test.
    """
    settings = settings or get_settings()
    build_vars: dict[str, Any] = {
        "run_id": run_id,
        "max_basket_lines": settings.max_basket_lines,
        # The bands have one owner (ml.core.catalog); dbt_project.yml's default is for hand runs.
        "price_bands": list(PRICE_BANDS),
    }
    build_vars.update(vars or {})
    options = ["--vars", json.dumps(build_vars)]
    if select:
        options += ["--select", select]
    result = _invoke(["build"], options, run_id=run_id, settings=settings)
    if not result.success:
        raise DbtBuildError(_failure_message(result), result)
    return result


def dbt_docs_generate(settings: Settings | None = None) -> Path:
    """Generate the dbt docs site as one self-contained HTML file.

    Args:
        settings: ShopFlow settings; None reads them from the environment.

    Returns:
        Path of ``static_index.html`` (manifest and catalog embedded; open it from disk).

    Raises:
        DbtBuildError: If dbt cannot generate the docs (e.g. the project does not compile).
    """
    settings = settings or get_settings()
    result = _invoke(["docs", "generate"], ["--static"], run_id="docs", settings=settings)
    if not result.success:
        raise DbtBuildError(_failure_message(result), result)
    path = _dbt_dir(settings) / "target" / "static_index.html"
    if not path.exists():
        raise DbtBuildError(f"dbt docs generate succeeded but wrote no {path}", result)
    return path


# -- internals -------------------------------------------------------------------------------


def _dbt_dir(settings: Settings) -> Path:
    return settings.work_dir / "dbt"


def _invoke(command: list[str], options: list[str], *, run_id: str, settings: Settings) -> DbtResult:
    from dbt.cli.main import dbtRunner

    dbt_dir = _dbt_dir(settings)
    target_path = dbt_dir / "target"
    log_path = dbt_dir / "logs"
    target_path.mkdir(parents=True, exist_ok=True)
    log_path.mkdir(parents=True, exist_ok=True)
    project_dir = str(settings.dbt_project_dir)
    full_args = [
        *command,
        *options,
        "--project-dir",
        project_dir,
        "--profiles-dir",
        project_dir,
        "--target",
        settings.warehouse,
        "--target-path",
        str(target_path),
        "--log-path",
        str(log_path),
        "--no-use-colors",
    ]
    env = {
        **settings.dbt_env(),
        "SHOPFLOW_WAREHOUSE": settings.warehouse,
        # No machine here reaches the internet; don't let dbt try.
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
    }
    from contextlib import nullcontext

    started = time.perf_counter()
    # dbt opens the DuckDB file itself: it waits for the warehouse lock like every other opener.
    with duckdb_lock(settings) if settings.warehouse == "duckdb" else nullcontext(), _environment(env):
        try:
            outcome = dbtRunner().invoke(full_args)
        finally:
            _release_duckdb()
    elapsed = time.perf_counter() - started

    nodes = list(getattr(outcome.result, "results", None) or [])
    status_counts: Counter[str] = Counter()
    resource_counts: Counter[str] = Counter()
    failures: list[DbtNodeResult] = []
    warnings: list[DbtNodeResult] = []
    for node_result in nodes:
        status = _status(node_result.status)
        node = node_result.node
        resource_type = _status(node.resource_type)
        status_counts[status] += 1
        resource_counts[resource_type] += 1
        entry = DbtNodeResult(
            unique_id=node.unique_id,
            name=node.name,
            resource_type=resource_type,
            status=status,
            message=(node_result.message or "").strip(),
        )
        if status in FAILED_STATUSES:
            failures.append(entry)
        elif status in WARNING_STATUSES:
            warnings.append(entry)

    if outcome.exception is not None:
        # Compilation/parse errors: dbt produced no node results at all.
        failures.append(
            DbtNodeResult(
                unique_id="project",
                name="dbt project",
                resource_type="project",
                status="error",
                message=str(outcome.exception).strip(),
            )
        )

    invocation_id = None
    run_results_path = None
    run_results = target_path / "run_results.json"
    if nodes and run_results.exists():
        invocation_id = json.loads(run_results.read_text()).get("metadata", {}).get("invocation_id")
        kept = dbt_dir / "runs" / safe_run_id(run_id) / "run_results.json"
        kept.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(run_results, kept)
        run_results_path = kept

    return DbtResult(
        run_id=run_id,
        command=" ".join(command),
        target=settings.warehouse,
        success=bool(outcome.success) and not failures,
        elapsed_s=elapsed,
        status_counts=dict(status_counts),
        resource_counts=dict(resource_counts),
        failures=failures,
        warnings=warnings,
        invocation_id=invocation_id,
        run_results_path=run_results_path,
    )


def _status(value: Any) -> str:
    return str(getattr(value, "value", value))


def _failure_message(result: DbtResult) -> str:
    lines = [f"dbt {result.command} failed on target {result.target} (run {result.run_id}):"]
    failures = [str(failure) for failure in result.failures] or ["(dbt reported failure without a node)"]
    lines += [f"  - {failure}" for failure in failures]
    return "\n".join(lines)


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the duration of the block, then restore them."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, old in saved.items():
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old


def _release_duckdb() -> None:
    """Close the DuckDB database dbt-duckdb keeps open for the life of the process.

    dbt-duckdb caches its database handle in a class attribute; while it is open, another
    process cannot open the file and this process cannot open it read-only. Closing it after
    each invocation makes the warehouse file behave like any other closed file again.
    """
    try:
        from dbt.adapters.duckdb.connections import DuckDBConnectionManager
    except ImportError:  # dbt-duckdb not installed: nothing to release.
        return
    with DuckDBConnectionManager._LOCK:
        environment = DuckDBConnectionManager._ENV
        if environment is not None:
            environment.close()
            DuckDBConnectionManager._ENV = None
