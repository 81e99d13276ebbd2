"""The ``shopflow`` command line: a thin wrapper over the ml stages (the DAGs call the same ones).

Heavy libraries are imported inside each command so that ``shopflow --help`` stays instant.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Annotated

import typer

from ml.settings import get_settings

app = typer.Typer(
    help="ShopFlow: LLM-powered e-commerce recommendation, from landing files to served models.",
    no_args_is_help=True,
    add_completion=False,
)

Day = Annotated[datetime, typer.Argument(formats=["%Y-%m-%d"], help="A day, YYYY-MM-DD.")]


def _run_id(prefix: str) -> str:
    return f"cli__{prefix}__{uuid.uuid4().hex[:8]}"


def _fail(error: Exception) -> None:
    typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=1)


@app.command()
def replay(
    start: Annotated[
        datetime | None, typer.Option(formats=["%Y-%m-%d"], help="First partition day to land.")
    ] = None,
    end: Annotated[
        datetime | None, typer.Option(formats=["%Y-%m-%d"], help="Land partitions before this day.")
    ] = None,
    grain: Annotated[str | None, typer.Option(help="day, week or month (default: settings).")] = None,
    source: Annotated[
        list[str] | None, typer.Option(help="Shipped source to replay (repeatable): beauty, retail.")
    ] = None,
) -> None:
    """Cut the shipped datasets into landing partitions, as a shop's daily/weekly exports would land."""
    from ml.replay import replay as do_replay

    files = do_replay(
        get_settings(),
        start=start.date() if start else None,
        end=end.date() if end else None,
        grain=grain,
        sources=source,
    )
    typer.echo(f"landed {len(files)} partition files under {get_settings().landing_dir}")


@app.command()
def ingest(
    start: Day,
    end: Day,
    run_id: Annotated[str | None, typer.Option(help="Run id recorded on rows and audit.")] = None,
) -> None:
    """Load the landing partitions of [START, END) into the warehouse's raw tables (idempotent)."""
    from ml.ingest import ContractError, ingest_interval

    try:
        summary = ingest_interval(start.date(), end.date(), run_id or _run_id("ingest"), get_settings())
    except (ContractError, ValueError) as error:
        _fail(error)
    typer.echo(json.dumps(summary.rows_by_table, indent=2))


@app.command("validate-raw")
def validate_raw(
    start: Day,
    end: Day,
    run_id: Annotated[str | None, typer.Option(help="Run id recorded in the quarantine.")] = None,
) -> None:
    """Run the raw GX suites on [START, END); quarantine failing rows; fail over the quarantine rate."""
    from ml.quality import QualityGateError, check_quarantine_gate
    from ml.quality import validate_raw as do_validate

    settings = get_settings()
    result = do_validate(start.date(), end.date(), run_id or _run_id("validate"), settings)
    typer.echo(str(result))
    try:
        check_quarantine_gate(result, settings)
    except QualityGateError as error:
        _fail(error)


@app.command()
def transform(
    select: Annotated[str | None, typer.Option(help="dbt node selection, e.g. 'marts'.")] = None,
) -> None:
    """dbt build (models and tests) on the configured warehouse."""
    from ml.transform import DbtBuildError, dbt_build

    try:
        result = dbt_build(_run_id("dbt"), get_settings(), select=select)
    except DbtBuildError as error:
        _fail(error)
    typer.echo(str(result))


@app.command("validate-marts")
def validate_marts() -> None:
    """Run the marts GX suites; exit 1 (publish blocked) when any expectation fails."""
    from ml.quality import QualityGateError
    from ml.quality import validate_marts as do_validate

    try:
        result = do_validate(_run_id("marts"), get_settings())
    except QualityGateError as error:
        _fail(error)
    typer.echo(str(result))


@app.command("run-interval")
def run_interval(start: Day, end: Day) -> None:
    """Ingest → validate raw → dbt build → validate marts for [START, END), in-process (no Airflow)."""
    from ml.pipeline import run_interval as do_run
    from ml.summary import render, warehouse_summary

    settings = get_settings()
    try:
        do_run(start.date(), end.date(), _run_id("interval"), settings)
    except Exception as error:  # each stage raises a named, explanatory error
        _fail(error)
    typer.echo(render(warehouse_summary(settings)))


@app.command()
def summary() -> None:
    """Rows per warehouse table, quarantined rows by reason, and where the docs are."""
    from ml.summary import render, warehouse_summary

    typer.echo(render(warehouse_summary(get_settings())))


@app.command()
def demo() -> None:
    """The main job: replay the training period through Airflow's real scheduler, then summarise."""
    from ml.demo import render_runs, run_demo
    from ml.summary import render, warehouse_summary

    settings = get_settings()
    result = run_demo(settings, echo=typer.echo)
    typer.echo("")
    typer.echo(render_runs(result))
    typer.echo("")
    typer.echo(render(warehouse_summary(settings)))


@app.command("settings")
def show_settings() -> None:
    """Print the effective settings (secrets masked)."""
    settings = get_settings()
    values = settings.model_dump(mode="json")
    values["pii_salt"] = "***" if settings.pii_salt else None
    typer.echo(json.dumps(values, indent=2, default=str))


if __name__ == "__main__":
    app()
