"""The closed loop through Airflow's real scheduler (LocalAirflow): monitor_drift → train_recommender.

A real champion (the packaged MiniLM, frozen, on real Beauty users) serves a month of those users'
requests; its request log, the interval's interactions and the items are in the warehouse. Then:

* no drift: monitor_drift decides ``none`` and no training run is created;
* injected drift (the catalog is repriced and rebranded after the model was registered, the
  controlled-drift case): monitor_drift decides ``retrain``, its TriggerDagRunOperator starts
  ``train_recommender`` with the alarms as the reason, and the run trains, gates and promotes;
* slow: the same with a challenger that cannot learn (lr 0, no text): the gate rejects it and
  the champion keeps serving.

The marts are built from the shipped data with pandas (as tests/dags does), not by dbt: the dbt
build is covered by tests/data, the whole loop on dbt marts by ``make demo``.
"""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from ml.core.settings import PROJECT_DIR, Settings

USERS = 300
CURRENT = (date(2014, 1, 1), date(2014, 2, 1))
"""The users of the slice are real shoppers of this month."""
TRAIN_END = datetime(2014, 1, 1)
MONITORED = (date(2013, 10, 1), date(2014, 1, 1))
"""The champion's reference window (its last 90 days): on a slice this small, any other window
differs by sampling noise alone, so the quiet case watches the reference itself, and the drift
case the same window after the controlled catalog change."""


def _settings(root: Path, **overrides: Any) -> Settings:
    return Settings(
        work_dir=root / "work",
        data_dir=PROJECT_DIR / "data",
        warehouse="duckdb",
        pii_salt="test-salt",  # type: ignore[arg-type]
        sources={"beauty": "catalog"},
        baselines=["popularity"],
        train_overrides=GOOD,
        drift_share_threshold=0.3,
        drift_column_threshold=0.15,
        min_monitored_requests=10,
        **overrides,
    )


GOOD = {"mode": "frozen", "epochs": 3, "val_max_cases": None, "hidden": 32, "max_len": 10, "progress": False}
"""Frozen: the loop is under test, not mode auto's LoRA phase (up to a minute a training here)."""
UNTRAINABLE = {**GOOD, "use_text": False, "lr": 0.0, "epochs": 1}
"""ID-only weights that never move: ranks at random. As the champion, any real challenger beats
it; as the challenger, the gate must reject it (on 300 users two real models differ by noise)."""


def build_marts(settings: Settings) -> pd.DataFrame:
    """The marts the two DAGs read, for real users who shopped in the monitored month.

    ``fct_training_examples`` holds the training period (before 2014), ``fct_interactions``
    everything; returns the monitored month's interactions.
    """
    from ml.core.warehouse import Warehouse
    from ml.data.transform import dbt_build
    from ml.modeling.datasets import shipped_frames
    from ml.modeling.splits import loo_labels, time_labels

    examples, items = shipped_frames(settings.data_dir)
    month = examples["event_ts"].between(pd.Timestamp(CURRENT[0]), pd.Timestamp(CURRENT[1]), inclusive="left")
    users = examples.loc[month, "user_id"].drop_duplicates().sort_values().sample(USERS, random_state=3)
    examples = examples[examples["user_id"].isin(set(users))].assign(source="beauty")
    items = items[items["item_id"].isin(set(examples["item_id"]))].assign(source="beauty")
    items["category_leaf"] = items["categories"].fillna("").str.split(" > ").str[-1]
    items["category_top"] = items["categories"].fillna("").str.split(" > ").str[0]
    training = examples[examples["event_ts"] < TRAIN_END].copy()
    training["position"] = training.groupby("user_id").cumcount() + 1
    training["n_user_events"] = training.groupby("user_id")["position"].transform("size")
    training["loo_split"] = loo_labels(training["position"], training["n_user_events"])
    training["time_split"] = time_labels(training["event_ts"])
    interactions = examples.assign(rating=None, quantity=None)
    interactions["interaction_id"] = (
        "beauty:" + interactions["user_id"] + ":" + interactions["position"].astype(str)
    )
    warehouse = Warehouse(settings)
    with warehouse.connect() as con:
        con.execute("create schema if not exists marts")
        for name, frame in (
            ("fct_training_examples", training),
            ("fct_interactions", interactions),
            ("dim_items", items),
        ):
            con.register("frame", frame)
            con.execute(f"create or replace table marts.{name} as select * from frame")
            con.unregister("frame")
    # What monitoring reads is a dbt mart over these: built by dbt itself, with its tests.
    dbt_build("e2e-monitored-interactions", settings, select="fct_monitored_interactions")
    return examples[month.loc[examples.index]]


def register_champion(settings: Settings, overrides: dict[str, Any]) -> str:
    """Train, register (with its monitoring reference) and promote a champion in-process, through
    the same stages the train DAG runs (evaluation against baselines left out for time)."""
    from ml import registry
    from ml.core.artifacts import REPORT, run_dir
    from ml.training.snapshot import build_dataset
    from ml.training.stages import register_challenger, train_challenger

    run_id = "champion"
    build_dataset(run_id, settings)
    trained = train_challenger(run_id, overrides, settings)
    (run_dir(run_id, settings) / REPORT).mkdir()
    (run_dir(run_id, settings) / REPORT / "metrics.json").write_text("{}")
    metrics = {"validation": {"ndcg@10": trained["validation_ndcg@10"]}}
    tag = register_challenger(run_id, {"metrics": metrics}, {"reason": "test champion"}, overrides, settings)[
        "tag"
    ]
    registry.promote(tag, settings, reason="test champion")
    assert (registry.get(tag, settings).path / "monitoring_reference.parquet").exists()
    return str(tag)


def serve_month(settings: Settings, tag: str, users: list[str]) -> None:
    """The champion answers these users' requests; the request log is what monitoring loads."""
    import torch

    from ml import registry
    from serving.engine import ServingModel

    # A serving process turns autograd off for good; this is the test process: restore it after.
    grad = torch.is_grad_enabled()
    try:
        version_dir = registry.get(tag, settings).path
        engine = ServingModel(version_dir, tag, settings.serving_log_dir, settings.work_dir)
        for user in users:
            engine.recommend(user, None, 10)
    finally:
        torch.set_grad_enabled(grad)


def inject_catalog_drift(settings: Settings) -> None:
    """Controlled drift after registration: prices triple, brands and categories are replaced."""
    from ml.core.warehouse import Warehouse
    from ml.data.transform import dbt_build

    warehouse = Warehouse(settings)
    with warehouse.connect() as con:
        con.execute(
            "update marts.dim_items set price = price * 3, "
            "brand = 'Private Label ' || substr(item_id, 1, 5), "
            "category_leaf = 'Clearance ' || substr(item_id, 2, 3)"
        )
    # As the next ingest run's dbt build would: the mart monitoring reads follows the catalog.
    dbt_build("e2e-catalog-drift", settings, select="fct_monitored_interactions")


def _monitor(airflow: Any, interval: tuple[date, date]) -> tuple[str, dict[str, str]]:
    run_id = airflow.trigger(
        "monitor_drift",
        conf={"interval_start": interval[0].isoformat(), "interval_end": interval[1].isoformat()},
    )
    airflow.wait_for_runs("monitor_drift", run_ids=[run_id], timeout=600)
    return run_id, {ti["task_id"]: ti["state"] for ti in airflow.task_instances("monitor_drift", run_id)}


def _run_loop(settings: Settings, champion_overrides: dict[str, Any]) -> dict[str, Any]:
    from ml import registry
    from ml.monitoring.decision import monitoring_runs
    from ml.ops.local_airflow import LocalAirflow

    month = build_marts(settings)
    champion = register_champion(settings, champion_overrides)
    shoppers = sorted(set(month["user_id"]))
    with LocalAirflow(settings) as airflow:
        for dag_id in ("monitor_drift", "train_recommender"):
            airflow.wait_for_dag(dag_id)
            airflow.unpause(dag_id)
        airflow.wait_for_runs("monitor_drift", timeout=600)  # the scheduled run of today's interval

        serve_month(settings, champion, shoppers)
        quiet, quiet_states = _monitor(airflow, MONITORED)
        assert quiet_states["no_action"] == "success", quiet_states
        assert quiet_states["trigger_retraining"] == quiet_states["alert"] == "skipped", quiet_states
        assert airflow.runs("train_recommender") == []

        inject_catalog_drift(settings)
        serve_month(settings, champion, shoppers)
        drifted, drift_states = _monitor(airflow, MONITORED)
        assert drift_states["trigger_retraining"] == drift_states["alert"] == "success", drift_states
        assert drift_states["no_action"] == "skipped"
        triggered = f"monitor__{drifted}"
        train_runs = airflow.wait_for_runs("train_recommender", run_ids=[triggered], timeout=1500)
        conf = train_runs[0]["conf"]
    runs = monitoring_runs(settings).set_index("run_id")
    return {
        "champion": champion,
        "runs": runs,
        "quiet": quiet,
        "drifted": drifted,
        "conf": conf,
        "gate": [d for d in registry.decisions(settings) if d["event"] == "gate"],
        "champion_now": registry.champion(settings),
    }


@pytest.mark.timeout(1800)
def test_drift_triggers_a_retraining_that_is_promoted_and_no_drift_triggers_none(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    loop = _run_loop(settings, UNTRAINABLE)

    quiet, drifted = loop["runs"].loc[loop["quiet"]], loop["runs"].loc[loop["drifted"]]
    assert quiet["action"] == "none" and quiet["data_drift_share"] == 0.0
    assert drifted["action"] == "retrain" and drifted["data_drift_share"] == 3 / 8
    assert "(price, category, brand)" in drifted["reason"]
    assert Path(drifted["report_dir"], "data_drift.html").stat().st_size > 10_000
    assert (settings.evidently_dir).exists()

    assert loop["conf"]["reason"] == drifted["reason"]
    assert loop["conf"]["report"] == drifted["report_dir"]
    (gate,) = loop["gate"]
    assert gate["run_id"] == f"monitor__{loop['drifted']}"
    # The champion ranks at random; the DAG's challenger (text + sequence, trained) wins on the
    # same validation cases.
    assert gate["promoted"], gate
    assert loop["champion_now"] == gate["challenger"] != loop["champion"]


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_a_worse_retrained_challenger_is_rejected_and_the_champion_keeps_serving(tmp_path: Path) -> None:
    settings = _settings(tmp_path).model_copy(update={"train_overrides": UNTRAINABLE})
    loop = _run_loop(settings, GOOD)
    assert loop["runs"].loc[loop["drifted"], "action"] == "retrain"
    (gate,) = loop["gate"]
    assert not gate["promoted"], gate
    assert loop["champion_now"] == loop["champion"]
