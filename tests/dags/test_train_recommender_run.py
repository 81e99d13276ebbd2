"""``dag.test()`` of train_recommender on a slice of the real Beauty marts: a first challenger is
registered and promoted; a deliberately weaker one is registered and rejected, the champion stays."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ml.core.settings import PROJECT_DIR, Settings

DAG_ID = "train_recommender"
USERS = 150


@pytest.fixture
def train_settings(tmp_path: Path) -> Settings:
    return Settings(
        work_dir=tmp_path / "work",
        data_dir=PROJECT_DIR / "data",
        warehouse="duckdb",
        pii_salt="test-salt",  # type: ignore[arg-type]
        # frozen: the DAG is under test, not mode auto's CPU LoRA phase (tests/model/test_mode_auto.py)
        train_overrides={"mode": "frozen", "epochs": 3, "val_max_cases": None, "hidden": 32},
        baselines=["popularity", "item_knn"],
    )


def build_marts(settings: Settings) -> None:
    """marts.fct_training_examples / dim_items for a slice of real users, as dbt shapes them."""
    from ml.core.warehouse import Warehouse
    from ml.modeling.datasets import shipped_frames

    examples, items = shipped_frames(settings.data_dir)
    users = examples["user_id"].drop_duplicates().sample(USERS, random_state=1)
    examples = examples[examples["user_id"].isin(set(users))].assign(source="beauty")
    items = items[items["item_id"].isin(set(examples["item_id"]))].assign(source="beauty")
    warehouse = Warehouse(settings)
    with warehouse.connect() as con:
        con.execute("create schema if not exists marts")
        for name, frame in (("fct_training_examples", examples), ("dim_items", items)):
            con.register("frame", frame)
            con.execute(f"create or replace table marts.{name} as select * from frame")
            con.unregister("frame")


def _train_dag(settings: Settings, use_settings: Any) -> Any:
    from airflow.dag_processing.dagbag import DagBag

    use_settings(settings)
    bag = DagBag(dag_folder=str(PROJECT_DIR / "dags"))
    assert bag.import_errors == {}
    return bag.dags[DAG_ID]


@pytest.mark.timeout(900)
def test_train_dag_promotes_a_first_model_and_rejects_a_weaker_one(
    airflow_db: Path, train_settings: Settings, use_settings: Any
) -> None:
    from ml import registry

    build_marts(train_settings)
    dag = _train_dag(train_settings, use_settings)

    first = dag.test(logical_date=None, run_conf={"reason": "first model"})
    states = {ti.task_id: str(ti.state) for ti in first.get_task_instances()}
    assert first.state == "success", states
    assert set(states.values()) == {"success"}, states
    decision = first.get_task_instance("gate").xcom_pull(task_ids="gate")
    assert decision["promoted"] and decision["reason"] == "no champion yet"
    smoke = first.get_task_instance("smoke_test").xcom_pull(task_ids="smoke_test")
    assert smoke["bento"].startswith("shopflow:") and smoke["model_version"] == decision["challenger"]
    champion = registry.champion(train_settings)
    assert champion == decision["challenger"]

    version = registry.get(champion, train_settings)
    assert version.metadata["lineage"]["reason"] == "first model"
    assert version.metadata["config"]["model"]["hidden"] == 32
    report = json.loads((version.path / "report" / "metrics.json").read_text())
    assert set(report["models"]) == {"shopflow", "popularity", "item_knn"}
    assert (version.path / "report" / "comparison.png").stat().st_size > 5_000
    assert report["models"]["shopflow"]["n"] == USERS  # every sliced user has a test target

    # Untrained ID-only weights (no text, lr 0) rank at random: registered, recorded, not promoted.
    weak_overrides = {"use_text": False, "lr": 0.0, "epochs": 1}
    weak = dag.test(logical_date=None, run_conf={"reason": "weak", "overrides": weak_overrides})
    assert weak.state == "success"
    weak_states = {ti.task_id: str(ti.state) for ti in weak.get_task_instances()}
    assert weak_states["smoke_test"] == weak_states["promote"] == "skipped", weak_states
    rejected = weak.get_task_instance("gate").xcom_pull(task_ids="gate")
    assert not rejected["promoted"]
    assert rejected["challenger_value"] < rejected["champion_value"] + train_settings.promotion_margin
    # The champion was re-scored on this run's split (same cases), and that number decided.
    assert "re-scored on the same split" in rejected["reason"]
    weak_version = registry.get(rejected["challenger"], train_settings)
    rescored = weak_version.metrics["champion"]
    assert rescored["tag"] == champion
    assert rescored["validation"]["ndcg@10"] == pytest.approx(rejected["champion_value"])
    weak_report = json.loads((weak_version.path / "report" / "metrics.json").read_text())
    assert set(weak_report["models"]) == {"shopflow", "champion", "popularity", "item_knn"}
    assert registry.champion(train_settings) == champion
    assert len(registry.list_versions(train_settings)) == 2
    assert [d["event"] for d in registry.decisions(train_settings)] == ["gate", "promote", "gate"]
