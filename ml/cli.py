"""The ``shopflow`` command line: a thin wrapper over the ml stages (the DAGs call the same ones).

Heavy libraries are imported inside each command so that ``shopflow --help`` stays instant.
"""

from __future__ import annotations

import json
import os
import uuid
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from ml.core.calendar import check_grain
from ml.core.settings import get_settings

app = typer.Typer(
    help="ShopFlow: LLM-powered e-commerce recommendation, from landing files to served models.",
    no_args_is_help=True,
    add_completion=False,
)

Day = Annotated[datetime, typer.Argument(formats=["%Y-%m-%d"], help="A day, YYYY-MM-DD.")]


def _run_id(prefix: str) -> str:
    return f"cli__{prefix}__{uuid.uuid4().hex[:8]}"


def _number(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


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
    from ml.data.replay import replay as do_replay

    files = do_replay(
        get_settings(),
        start=start.date() if start else None,
        end=end.date() if end else None,
        grain=check_grain(grain) if grain else None,
        sources=source,
    )
    typer.echo(f"landed {len(files)} partition files under {get_settings().landing_dir}")


@app.command()
def land(
    path: Annotated[Path, typer.Argument(help="A CSV or Parquet file, or a folder of them.")],
    source: Annotated[
        str, typer.Option(help="Landing source, one of SHOPFLOW_SOURCES (e.g. a catalog source 'myshop').")
    ],
    table: Annotated[
        str | None,
        typer.Option(help="Contract table: interactions (default) or items; or invoice_lines."),
    ] = None,
    as_of: Annotated[
        datetime | None,
        typer.Option(
            formats=["%Y-%m-%d"],
            help="Items only: a day of the partition the catalogue lands in (default: the source's "
            "first landed interactions partition). A later partition's row of an item updates it.",
        ),
    ] = None,
    replace: Annotated[
        bool,
        typer.Option("--replace", help="Rewrite the partitions the input touches instead of merging."),
    ] = False,
) -> None:
    """Check your own files against the landing contract and land them as partitions.

    Nothing is written unless every file passes; each partition is written atomically. Landing
    the same rows again changes nothing. Then load them with `shopflow run-interval START END`.
    """
    from ml.data.ingest import ContractError
    from ml.data.land import land as do_land

    settings = get_settings()
    try:
        result = do_land(
            path, source, table, as_of=as_of.date() if as_of else None, replace=replace, settings=settings
        )
    except (ContractError, ValueError) as error:
        _fail(error)
    for part in result.written if len(result.written) <= 12 else []:  # a long history: totals only
        typer.echo(
            f"{part.path.relative_to(settings.landing_dir)}: +{part.added:,} rows"
            + (f", {part.skipped:,} already landed" if part.skipped else "")
            + (f", {part.replaced:,} replaced" if part.replaced else "")
            + f" ({part.total:,} in the partition)"
        )
    start, end = result.interval
    added, skipped = (sum(getattr(p, n) for p in result.partitions) for n in ("added", "skipped"))
    typer.echo(
        f"read {result.rows:,} rows from {len(result.files)} file(s): {added:,} landed, {skipped:,} "
        f"already landed; {len(result.written)} of {len(result.partitions)} "
        f"{result.source}/{result.table} partition(s) written under {settings.landing_dir}\n"
        f"load them with: shopflow run-interval {start} {end}"
    )


@app.command()
def ingest(
    start: Day,
    end: Day,
    run_id: Annotated[str | None, typer.Option(help="Run id recorded on rows and audit.")] = None,
) -> None:
    """Load the landing partitions of [START, END) into the warehouse's raw tables (idempotent)."""
    from ml.data.ingest import ContractError, ingest_interval

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
    from ml.data.quality.gx import QualityGateError
    from ml.data.quality.raw import check_quarantine_gate
    from ml.data.quality.raw import validate_raw as do_validate

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
    from ml.data.transform import DbtBuildError, dbt_build

    try:
        result = dbt_build(_run_id("dbt"), get_settings(), select=select)
    except DbtBuildError as error:
        _fail(error)
    typer.echo(str(result))


@app.command("validate-marts")
def validate_marts() -> None:
    """Run the marts GX suites; exit 1 (publish blocked) when any expectation fails."""
    from ml.data.quality.gx import QualityGateError
    from ml.data.quality.marts import validate_marts as do_validate

    try:
        result = do_validate(_run_id("marts"), get_settings())
    except QualityGateError as error:
        _fail(error)
    typer.echo(str(result))


@app.command("run-interval")
def run_interval(start: Day, end: Day) -> None:
    """Ingest → validate raw → dbt build → validate marts for [START, END), in-process (no Airflow)."""
    from ml.data.summary import render, warehouse_summary
    from ml.flows.interval import run_interval as do_run
    from ml.ops.progress import StepStatus

    settings = get_settings()
    title = f"run-interval [{start:%Y-%m-%d}, {end:%Y-%m-%d})"
    try:
        # One call runs the four stages; the spinner shows the time and the stages' last log line.
        with StepStatus(title) as status, status.follow_logs():
            status.step("ingest → validate raw → dbt build → validate marts")
            do_run(start.date(), end.date(), _run_id("interval"), settings)
    except Exception as error:  # each stage raises a named, explanatory error
        _fail(error)
    typer.echo(render(warehouse_summary(settings)))


@app.command()
def summary() -> None:
    """Rows per warehouse table, quarantined rows by reason, and where the docs are."""
    from ml.data.summary import render, warehouse_summary

    typer.echo(render(warehouse_summary(get_settings())))


@app.command()
def reports() -> None:
    """Write <reports_dir>/index.html, one page linking every report under the work dir (dbt docs,
    GX Data Docs, training run reports, Evidently drift reports), and print where it is."""
    from ml.flows.report_index import write_report_index

    page, index = write_report_index(get_settings())
    for section, found in index.sections.items():
        typer.echo(f"  {len(found):>4}  {section}")
    typer.echo(f"Index of {index.count()} reports: {page}")


@app.command()
def demo(
    train_users: Annotated[
        int, typer.Option(help="Users in the training slice (the whole catalog is always ranked).")
    ] = 4000,
    epochs: Annotated[int, typer.Option(help="Maximum training epochs (early stopping on NDCG@10).")] = 8,
    full_data: Annotated[
        bool,
        typer.Option("--full-data", help="Train on every user and replay the whole later period (slower)."),
    ] = False,
    later_intervals: Annotated[
        int | None,
        typer.Option(help="Later-period intervals to replay and monitor (default: 4; all with --full-data)."),
    ] = None,
    traffic_users: Annotated[int, typer.Option(help="Shoppers per later interval sent to the Bento.")] = 300,
    generator_steps: Annotated[
        int | None,
        typer.Option(
            help="LoRA steps of the generator's fine-tune beside the loop (finetune_generator; 0 skips it; "
            "default: ml.flows.closed_loop.GENERATOR_STEPS)."
        ),
    ] = None,
    timings_json: Annotated[
        Path | None,
        typer.Option(help="Also write the phase times, total, load average and contents here (bench-demo)."),
    ] = None,
) -> None:
    """The main job, the closed loop: replay the training period through Airflow's real scheduler
    (ingest → dbt → GX → publish), let the published marts train the first champion (train →
    evaluate → register → gate → Bento), serve it, then replay the later period interval by
    interval with real shoppers' traffic; monitor_drift detects drift and triggers retraining, and
    a promoted challenger's Bento takes over. Ends with a summary."""
    from ml.data.summary import render, warehouse_summary
    from ml.flows.closed_loop import (
        render_generator,
        render_models,
        render_monitoring,
        render_runs,
        render_showcase,
        render_timing,
        run_demo,
        timing_record,
    )
    from ml.flows.report_index import write_report_index

    load_at_start = os.getloadavg()
    settings = get_settings()
    settings = settings.model_copy(
        update={
            "train_max_users": None if full_data else train_users,
            "train_overrides": {"epochs": epochs, **settings.train_overrides},
        }
    )
    intervals = later_intervals if later_intervals is not None else (None if full_data else 4)
    result = run_demo(
        settings,
        echo=typer.echo,
        later_intervals=intervals,
        traffic_users=traffic_users,
        **({} if generator_steps is None else {"generator_steps": generator_steps}),
    )
    typer.echo("")
    typer.echo(render_runs(result))
    typer.echo("")
    typer.echo(render(warehouse_summary(settings)))
    typer.echo("")
    typer.echo(render_models(settings))
    typer.echo("")
    typer.echo(render_monitoring(result, settings))
    typer.echo("")
    if result.generator:
        typer.echo(render_generator(result))
        typer.echo("")
    if result.showcase:
        typer.echo(render_showcase(result))
        typer.echo("")
    typer.echo(render_timing(result))
    page, index = write_report_index(settings)
    typer.echo(f"\nEvery report of this run ({index.count()}), linked from one page: {page}")
    if timings_json:
        timings_json.parent.mkdir(parents=True, exist_ok=True)
        timings_json.write_text(json.dumps(timing_record(result, settings, load_at_start), indent=2) + "\n")
        typer.echo(f"phase times written to {timings_json}")


@app.command()
def train(
    overrides: Annotated[
        str | None,
        typer.Option(help='TrainConfig overrides as JSON, e.g. \'{"mode": "lora", "epochs": 5}\'.'),
    ] = None,
    max_users: Annotated[int | None, typer.Option(help="Train on a random slice of this many users.")] = None,
) -> None:
    """Train a challenger on the marts, evaluate it with the baselines, register it and gate it.

    Under torchrun (`torchrun --nproc-per-node N -m ml.cli train ...`) every process runs this:
    rank 0 snapshots the marts, all N train one model with DDP, then rank 0 alone evaluates,
    registers and gates it.
    """
    from rich.console import Console

    from ml.flows.train import describe, run_training
    from ml.ops.progress import StepStatus

    settings = get_settings()
    if max_users is not None:
        settings = settings.model_copy(update={"train_max_users": max_users})
    extra = json.loads(overrides) if overrides else {}
    # run_training echoes once after each of these steps but the last, so each line starts the next.
    # No spinner: the fit's and the encoder's tqdm bars hold the terminal. Rank 0 alone reports.
    steps = ["snapshot of the marts", "training", "evaluation (with baselines and the champion)"]
    steps.append("register → gate → smoke query → promote")
    quiet = os.environ.get("RANK", "0") != "0"
    with StepStatus("train", live=False, console=Console(quiet=quiet)) as status:
        status.step(steps.pop(0))

        def echo(line: str) -> None:
            typer.echo(line)
            if steps:
                status.step(steps.pop(0))

        outcome = run_training(_run_id("train"), extra, settings, lineage={"reason": "cli"}, echo=echo)
    if outcome is None:  # a torchrun rank other than 0: rank 0 reports
        return
    typer.echo(describe(outcome))
    typer.echo(f"report: {outcome.report_dir}")


@app.command()
def monitor(start: Day, end: Day) -> None:
    """Monitor the champion for [START, END) in-process: load the new request-log lines as a batch
    of its own (a later monitor_drift run judges only lines after them), compute data drift,
    prediction drift and online quality (Evidently reports + workspace), and say what
    monitor_drift would decide. Nothing is triggered and no decision is recorded."""

    from ml.monitoring.decision import decide, last_retrain_at
    from ml.monitoring.request_logs import RequestLogError, load_request_logs
    from ml.monitoring.run import monitor_interval

    settings = get_settings()
    run_id = _run_id("monitor")
    try:
        loaded = load_request_logs(run_id, settings)
    except RequestLogError as error:
        _fail(error)
    typer.echo(f"request log: {loaded.rows:,} new lines loaded as batch {run_id}")
    result = monitor_interval(start.date(), end.date(), run_id, settings)
    for check in (result.data, result.prediction):
        if check is not None:
            typer.echo(
                f"{check.kind} drift: {check.share:.0%} of {len(check.columns)} columns "
                f"({', '.join(check.drifted_columns) or 'none drifted'}); report {check.html}"
            )
    if result.online is not None:
        typer.echo(
            f"online hit rate: {_number(result.online.hit_rate)} over {result.online.judged} judged "
            f"(offline recall@10 {_number(result.online.expected)}) {result.online.note}"
        )
    for note in result.notes:
        typer.echo(f"note: {note}")
    last = last_retrain_at(settings, end.date(), run_id)
    decision = decide(result.alarms(), settings, 0, last, end.date())
    typer.echo(f"decision monitor_drift would take: {decision.action} - {decision.reason}")


models_app = typer.Typer(
    help="The model registry (BentoML model store) and the champion.", no_args_is_help=True
)
app.add_typer(models_app, name="models")


@models_app.command("list")
def models_list() -> None:
    """Every registered version with its validation and test NDCG@10; * marks the champion."""
    from ml import registry

    settings = get_settings()
    champion = registry.champion(settings)
    metric = settings.gate_metric
    typer.echo(f"  {'tag':<44} {'created':<26} {'val ' + metric:>12} {'test ' + metric:>12}")
    for version in registry.list_versions(settings):
        val, test = (version.metric(split, metric) for split in ("validation", "test"))
        mark = "*" if version.tag == champion else " "
        typer.echo(f"{mark} {version.tag:<44} {version.created:<26} {_number(val):>12} {_number(test):>12}")


@models_app.command("show")
def models_show(
    tag: Annotated[str, typer.Argument(help="Version tag, 'latest' or 'champion'.")] = "champion",
) -> None:
    """Metrics, config and lineage of one version, and its gate decisions."""
    from ml import registry

    settings = get_settings()
    try:
        version = registry.get(tag, settings)
    except registry.RegistryError as error:
        _fail(error)
    typer.echo(
        json.dumps(
            {"tag": version.tag, "created": version.created, "path": str(version.path), **version.metadata},
            indent=2,
            default=str,
        )
    )
    for decision in registry.decisions(settings):
        if version.tag in (decision.get("challenger"), decision.get("champion")):
            typer.echo(json.dumps(decision, default=str))


@models_app.command("promote")
def models_promote(
    tag: Annotated[str, typer.Argument(help="Version tag to make the champion.")],
    reason: Annotated[str, typer.Option(help="Recorded with the decision.")] = "manual promotion",
) -> None:
    """Make a version the champion by hand (recorded; the previous champion is kept for rollback).
    A running Bento follows it without a restart (see `shopflow models rollback`)."""
    from ml import registry

    try:
        typer.echo(f"champion: {registry.promote(tag, get_settings(), reason=reason)}")
    except registry.RegistryError as error:
        _fail(error)


@models_app.command("rollback")
def models_rollback(
    reason: Annotated[str, typer.Option(help="Recorded with the decision.")] = "manual rollback",
) -> None:
    """Make the previous champion the champion again (a running Bento follows within
    SHOPFLOW_SERVING_FOLLOW_CHAMPION_S seconds, once the version has loaded and passed the smoke
    queries; GET /version on the Bento shows it)."""
    from ml import registry

    try:
        typer.echo(f"champion: {registry.rollback(get_settings(), reason=reason)}")
    except registry.RegistryError as error:
        _fail(error)


generator_app = typer.Typer(
    help="The shop's generator: fine-tune, evaluate and gate it (issue 12); which one serves.",
    no_args_is_help=True,
)
app.add_typer(generator_app, name="generator")


@generator_app.command("finetune")
def generator_finetune(
    run_id: Annotated[str, typer.Option(help="Run folder name under <work_dir>/runs.")] = "generator_manual",
    max_steps: Annotated[int, typer.Option(help="Fine-tuning step budget (batch 8).")] = 40,
    mode: Annotated[str, typer.Option(help="lora (adapters, ~2 MB saved) or full.")] = "lora",
    eval_per_kind: Annotated[
        int, typer.Option(help="Grounded texts per kind (bundle name, description, explanation).")
    ] = 8,
) -> None:
    """The DAG finetune_generator's stages in this process, on the marts of SHOPFLOW_TRAIN_SOURCE:
    prepare -> fine-tune -> evaluate base vs tuned -> register -> gate."""
    from ml.training.generator import GeneratorRunError, run_all

    overrides = {"max_steps": max_steps, "mode": mode, "eval_per_kind": eval_per_kind}
    try:
        summary = run_all(run_id, get_settings(), overrides)
    except GeneratorRunError as error:
        _fail(error)
    typer.echo(json.dumps(summary, indent=2, default=str))


@generator_app.command("status")
def generator_status() -> None:
    """The champion generator (or the base) and every generator gate decision."""
    from ml import registry

    settings = get_settings()
    typer.echo(f"served generator: {registry.generator_champion(settings) or 'base (no tuned champion)'}")
    for decision in registry.generator_decisions(settings):
        typer.echo(json.dumps(decision, default=str))


@app.command("settings")
def show_settings() -> None:
    """Print the effective settings (secrets masked)."""
    settings = get_settings()
    values = settings.model_dump(mode="json")
    values["pii_salt"] = "***" if settings.pii_salt else None
    typer.echo(json.dumps(values, indent=2, default=str))


if __name__ == "__main__":
    app()
