"""The Great Expectations plumbing both quality gates share: the file context, checkpoints, results.

GX validates pandas DataFrames read from the warehouse, not the warehouse through SQLAlchemy:
GX 1.24's SQL path is broken on DuckDB (every expectation fails with "list index out of range"),
and one code path serves DuckDB and PostgreSQL alike. The GX project is a file context under
``settings.gx_dir``: suites, checkpoints and validation results persist there and the Data Docs
site (``<gx_dir>/gx/uncommitted/data_docs/local_site/index.html``) shows every run, and opens
offline (``docs_offline``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

import pandas as pd

from expectations._rules import rule_name
from ml.core import schemas
from ml.core.settings import Settings, get_settings
from ml.data.quality.docs_offline import make_data_docs_offline

if TYPE_CHECKING:
    import great_expectations as gx
    from great_expectations.core.expectation_validation_result import (
        ExpectationSuiteValidationResult,
    )
    from great_expectations.data_context.types.resource_identifiers import ValidationResultIdentifier

DATASOURCE = "shopflow_warehouse"
DOCS_SITE = "local_site"
ROW_ID = "_row_id"


# Raw rows: every failing row's id is needed, so COMPLETE. With _row_id as the frame's named index
# and exclude_unexpected_values, GX returns the ids as one list per expectation instead of a dict
# per row (235k guest lines: a list costs ~0.1 s, per-row dicts several seconds and 10x the JSON).
RAW_RESULT_FORMAT: dict[str, Any] = {
    "result_format": "COMPLETE",
    "unexpected_index_column_names": [ROW_ID],
    "exclude_unexpected_values": True,
    "return_unexpected_index_query": False,
    "partial_unexpected_count": 20,
}


# Marts: only whether each expectation holds and what was observed.
MARTS_RESULT_FORMAT: dict[str, Any] = {"result_format": "SUMMARY", "partial_unexpected_count": 10}


class QualityGateError(RuntimeError):
    """Data failed a quality gate; publishing must stop. ``result`` holds the details."""

    def __init__(self, message: str, result: Any = None) -> None:
        super().__init__(message)
        self.result = result


class QualityCheckError(RuntimeError):
    """A check could not be evaluated (an expectation raised, GX returned incomplete results)."""


# -- the GX project ------------------------------------------------------------------------------
def gx_context(settings: Settings | None = None) -> gx.data_context.FileDataContext:
    """The file-mode GX project under ``settings.gx_dir`` (created on first use)."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    settings = settings or get_settings()
    settings.gx_dir.mkdir(parents=True, exist_ok=True)
    context = gx.get_context(mode="file", project_root_dir=settings.gx_dir)
    bars = context.variables.progress_bars  # a ProgressBarsConfig, or a dict once read back from YAML
    globally = bars.get("globally") if isinstance(bars, dict) else getattr(bars, "globally", None)
    if globally is not False:
        # Progress bars would flood the Airflow task logs.
        context.variables.progress_bars = ProgressBarsConfig(globally=False)
        context.variables.save()
    return context


def data_docs_index(context: Any) -> Path | None:
    """Path of the local Data Docs site's index.html, if it has been built."""
    for site in context.get_docs_sites_urls(site_name=DOCS_SITE):
        url = site.get("site_url")
        if url:
            return Path(unquote(urlparse(url).path))
    return None


def run_checkpoint(
    context: Any,
    *,
    name: str,
    asset: str,
    suite: gx.ExpectationSuite,
    frame: pd.DataFrame,
    run_id: str,
    result_format: dict[str, Any],
    parameters: dict[str, Any] | None = None,
    update_docs: bool = True,
) -> tuple[ValidationResultIdentifier, ExpectationSuiteValidationResult]:
    """Validate ``frame`` against ``suite`` through a Checkpoint that updates Data Docs.

    The suite, validation definition and checkpoint are written to the GX project on every call
    (add or update): the code in ``expectations/`` is the source of truth, never the YAML/JSON.

    Args:
        context: the GX data context.
        name: checkpoint and validation definition name.
        asset: dataframe asset name in the ShopFlow pandas data source.
        suite: the expectation suite.
        frame: the rows to validate.
        run_id: shown as the run name in Data Docs.
        result_format: GX result format.
        parameters: suite parameter values (``$PARAMETER`` references in the suite).
        update_docs: rebuild Data Docs after this checkpoint. A caller validating several tables
            passes False and calls :func:`build_data_docs` once: every build reads every stored
            result, so a build per table costs more with each run.

    Returns:
        The key of the stored validation result, and the result.
    """
    import great_expectations as gx
    from great_expectations.checkpoint import UpdateDataDocsAction
    from great_expectations.core.run_identifier import RunIdentifier

    # The project's files (fluent config, suites, definitions, checkpoints, results, Data Docs)
    # are rewritten in place by GX: two processes validating at once (two raw gates of one
    # interval) read each other's half-written suite. One validation at a time per project.
    with project_lock(context):
        try:
            datasource = context.data_sources.get(DATASOURCE)
        except KeyError:
            datasource = context.data_sources.add_pandas(DATASOURCE)
        if asset in datasource.get_asset_names():
            data_asset = datasource.get_asset(asset)
        else:
            data_asset = datasource.add_dataframe_asset(asset)
        try:
            batch = data_asset.get_batch_definition("whole_frame")
        except KeyError:
            batch = data_asset.add_batch_definition_whole_dataframe("whole_frame")

        stored_suite = context.suites.add_or_update(suite)
        definition = context.validation_definitions.add_or_update(
            gx.ValidationDefinition(name=name, data=batch, suite=stored_suite)
        )
        checkpoint = context.checkpoints.add_or_update(
            gx.Checkpoint(
                name=name,
                validation_definitions=[definition],
                actions=[UpdateDataDocsAction(name="update_data_docs", site_names=[DOCS_SITE])]
                if update_docs
                else [],
                result_format=result_format,
            )
        )
        outcome = checkpoint.run(
            batch_parameters={"dataframe": frame},
            expectation_parameters=parameters or {},
            run_id=RunIdentifier(run_name=run_id, run_time=datetime.now().astimezone()),
        )
        if update_docs:
            _make_docs_offline(context)
    ((key, result),) = outcome.run_results.items()
    for expectation_result in result.results:
        info = expectation_result.exception_info or {}
        if info.get("raised_exception"):
            config = expectation_result.expectation_config
            raise QualityCheckError(
                f"{suite.name}: {config.type if config else '?'} could not be evaluated on {asset}: "
                f"{info.get('exception_message')}"
            )
    return key, result


@contextmanager
def project_lock(context: Any) -> Iterator[None]:
    """Hold an ``flock`` on the GX project (``<root>/.shopflow.lock``) for one validation."""
    import fcntl

    path = Path(context.root_directory) / ".shopflow.lock"
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # waits: a validation takes seconds, not minutes
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _make_docs_offline(context: Any) -> None:
    site = data_docs_index(context)
    if site is not None:  # GX's pages load their CSS/JS from CDNs: point them at vendored copies
        make_data_docs_offline(site.parent)


def build_data_docs(context: Any) -> Path | None:
    """Rebuild the local Data Docs site once (offline assets included); returns its index."""
    with project_lock(context):
        context.build_data_docs(site_names=[DOCS_SITE])
        _make_docs_offline(context)
    return data_docs_index(context)


def slim_stored_result(
    context: Any, key: ValidationResultIdentifier, result: ExpectationSuiteValidationResult
) -> None:
    """Cut the failing-row lists of a stored validation result to a sample (modifies ``result``).

    Quarantine has taken the row ids from them. With ``exclude_unexpected_values`` GX keeps every
    failing id twice (the "partial" list is the whole list in one dict), so a full Online Retail
    load would store ~30 MB of ids, and every Data Docs index build reads every stored result.
    """
    sample = RAW_RESULT_FORMAT["partial_unexpected_count"]
    for expectation_result in result.results:
        details = expectation_result.result
        if not details:
            continue
        details.pop("unexpected_index_list", None)
        partial = details.get("partial_unexpected_index_list")
        if partial and isinstance(partial[0], dict):
            details["partial_unexpected_index_list"] = [
                {column: list(values)[:sample] for column, values in partial[0].items()}
            ]
    with project_lock(context):
        context.validation_results_store.set(key, result)


# -- raw: quarantine -----------------------------------------------------------------------------
def coerce_types(frame: pd.DataFrame, table: str) -> pd.DataFrame:
    """Give the columns their logical types whatever the engine returned (DuckDB or psycopg2)."""
    columns: dict[str, Any] = {}
    for column in schemas.RAW_TABLES[table]:
        values = frame[column.name] if column.name in frame.columns else pd.Series(None, index=frame.index)
        if column.type == schemas.INTEGER:
            columns[column.name] = pd.to_numeric(values, errors="coerce").astype("Int64")
        elif column.type == schemas.FLOAT:
            columns[column.name] = pd.to_numeric(values, errors="coerce").astype("float64")
        elif column.type in (schemas.TIMESTAMP, schemas.DATE):
            columns[column.name] = pd.to_datetime(values, errors="coerce")
        else:
            columns[column.name] = values.astype(object).where(values.notna(), None)
    # Built in one go so the frame is consolidated (GX copies it several times).
    return pd.DataFrame(columns, index=frame.index)


def as_dates(values: pd.Series) -> list[date]:
    return sorted({pd.Timestamp(v).date() for v in values.dropna().unique()})


def failures_by_rule(result: ExpectationSuiteValidationResult, rules: list[str]) -> dict[str, list[str]]:
    """Failing ``_row_id``s per rule, checked against GX's own unexpected counts."""
    failing: dict[str, list[str]] = {r: [] for r in rules}
    for expectation_result in result.results:
        config = expectation_result.expectation_config
        name = rule_name(config)
        details = expectation_result.result or {}
        ids: list[str] = []
        for entry in details.get("unexpected_index_list") or []:
            ids.extend(entry[ROW_ID] if isinstance(entry, dict) else [entry])
        expected = int(details.get("unexpected_count") or 0)
        if len(ids) != expected:
            raise QualityCheckError(
                f"{name}: GX reported {expected} unexpected rows but listed {len(ids)} row ids"
            )
        failing[name] = ids
    return failing
