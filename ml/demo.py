"""The main job on the embedded default: real data through the real Airflow scheduler.

``make demo`` calls :func:`run_demo`: land the training period of the shipped datasets, start
Airflow (scheduler, DAG processor, API server on SQLite), load the history with one bootstrap run
of ``ingest_transform_validate``, backfill the replay window interval by interval, and summarise
what the warehouse now holds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from ml.settings import Settings, get_settings

INGEST_DAG = "ingest_transform_validate"
TRAIN_DAG = "train_recommender"


@dataclass
class DemoResult:
    runs: list[dict[str, Any]] = field(default_factory=list)
    train_runs: list[dict[str, Any]] = field(default_factory=list)
    asset_events: int = 0
    seconds: dict[str, float] = field(default_factory=dict)


def run_demo(settings: Settings | None = None, echo: Any = print) -> DemoResult:
    """Run the data platform end to end through Airflow's scheduler and return what ran."""
    from ml.orchestration import LocalAirflow
    from ml.replay import replay
    from ml.transform import dbt_docs_generate

    settings = settings or get_settings()
    result = DemoResult()
    history_start = date.fromisoformat(settings.replay_history_start)
    history_end = date.fromisoformat(settings.replay_history_end)
    train_end = date.fromisoformat(settings.replay_train_end)

    started = time.monotonic()
    echo(f"1/5 Landing the training period (< {train_end}) as {settings.partition_grain}ly partitions …")
    files = replay(settings, end=train_end)
    echo(f"    {len(files)} landing files under {settings.landing_dir}")
    result.seconds["replay"] = time.monotonic() - started

    echo("2/5 Starting Airflow (scheduler, DAG processor, API server; SQLite metadata) …")
    with LocalAirflow(settings) as airflow:
        airflow.wait_for_dag(INGEST_DAG)
        airflow.wait_for_dag(TRAIN_DAG)
        # The train DAG is scheduled on the marts Asset; a paused consumer drops Asset events,
        # so it is unpaused first: every published ingest run then queues training.
        airflow.unpause(TRAIN_DAG)
        airflow.unpause(INGEST_DAG)
        result.seconds["airflow_start"] = time.monotonic() - started - result.seconds["replay"]
        echo(f"    API on {airflow.base_url}; logs in {airflow.log_dir}")

        mark = time.monotonic()
        echo(f"3/5 Bootstrap run: history [{history_start}, {history_end}) …")
        run_id = airflow.trigger(
            INGEST_DAG,
            conf={"interval_start": history_start.isoformat(), "interval_end": history_end.isoformat()},
        )
        airflow.wait_for_runs(INGEST_DAG, run_ids=[run_id], timeout=1800)
        result.seconds["bootstrap_run"] = time.monotonic() - mark

        mark = time.monotonic()
        echo(f"4/5 Backfill of the replay window [{history_end}, {train_end}), one run per interval …")
        backfill = airflow.backfill(INGEST_DAG, history_end, train_end)
        airflow.wait_for_runs(INGEST_DAG, backfill_id=backfill["id"], timeout=1800)
        result.seconds["backfill_runs"] = time.monotonic() - mark

        mark = time.monotonic()
        echo("5/5 Training runs the marts Asset events triggered (train → evaluate → register → gate) …")
        result.train_runs = _wait_for_triggered_runs(airflow, TRAIN_DAG)
        result.seconds["train_runs_after_ingest"] = time.monotonic() - mark

        result.runs = airflow.runs(INGEST_DAG)
        result.asset_events = len(airflow.asset_events("shopflow_marts", source_dag_id=INGEST_DAG))

    dbt_docs_generate(settings)
    result.seconds["total"] = time.monotonic() - started
    return result


def _wait_for_triggered_runs(airflow: Any, dag_id: str, settle: float = 20.0) -> list[dict[str, Any]]:
    """Wait until Asset-triggered runs stop appearing and all of them have finished.

    Events that arrive while a run is active (max_active_runs=1) are queued and become one more
    run when it ends, so one quiet wait is not enough: wait, pause ``settle`` s, look again.
    """
    seen = -1
    while True:
        runs = airflow.wait_for_runs(dag_id, timeout=3600)
        if len(runs) == seen:
            return runs
        seen = len(runs)
        time.sleep(settle)


def render_models(settings: Settings) -> str:
    """Each registered version with its metrics, and the gate decisions in order."""
    from ml import registry

    metric = settings.gate_metric
    champion = registry.champion(settings)
    lines = ["Models (BentoML store) and gate decisions", "-----------------------------------------"]
    for version in registry.list_versions(settings):
        val = version.metric("validation", metric)
        test = version.metric("test", metric)
        baselines = version.metrics.get("baselines", {})
        best: tuple[str | None, dict[str, Any]] = max(
            baselines.items(), key=lambda kv: kv[1].get(metric, 0.0), default=(None, {})
        )
        mark = "*" if version.tag == champion else " "
        lines.append(
            f"{mark} {version.tag}  val {metric} {val:.4f}  test {metric} {test:.4f}"
            f"  (best baseline: {best[0]} {best[1].get(metric, float('nan')):.4f})"
        )
    for decision in registry.decisions(settings):
        if decision["event"] == "gate":
            verdict = "promoted" if decision["promoted"] else "REJECTED"
            lines.append(f"  gate: {decision['challenger']} {verdict}: {decision['reason']}")
    lines.append(f"  champion now: {champion}")
    return "\n".join(lines)


def render_runs(result: DemoResult) -> str:
    lines = ["Airflow runs of ingest_transform_validate", "-----------------------------------------"]
    for run in result.runs:
        start, end = run.get("data_interval_start") or "", run.get("data_interval_end") or ""
        interval = f"[{start[:10]}, {end[:10]})" if start else "(conf interval)"
        lines.append(f"  {run['dag_run_id']:<58} {run.get('run_type', ''):<9} {interval:<26} {run['state']}")
    lines.append(f"  marts Asset events emitted: {result.asset_events}")
    lines.append("Airflow runs of train_recommender (triggered by those events)")
    for run in result.train_runs:
        lines.append(f"  {run['dag_run_id']:<58} {run.get('run_type', ''):<9} {run['state']}")
    timing = ", ".join(f"{k} {v:.0f} s" for k, v in result.seconds.items())
    lines.append(f"  wall time: {timing}")
    return "\n".join(lines)
