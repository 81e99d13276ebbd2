"""The training task's process SIGKILLed mid-epoch: the retry resumes from the checkpoint and finishes
(issue 16, item 3), and ends exactly where an uninterrupted run ends.

``ml.modeling.fit.train`` writes ``checkpoint.pt`` after each epoch (weights, optimizer, history,
early-stopping state and every random state) by write-then-rename. The test starts the training in
its own process, kills it once epoch 1's checkpoint is saved (inside epoch 2, or a later one when
epochs are fast), then reruns the same entry point on the same run folder, as Airflow's retry of
the ``train`` task does: it must resume after the last saved epoch, not start again, and give the
same history and weights as one uninterrupted run.
The quick test kills ``fit.train`` on an ID-only model of 600 real Beauty users and retries it in
this process; the slow one the
DAG task's own function, ``ml.training.stages.train_challenger``, with the packaged MiniLM text.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
from faultkit import shop_settings, sigkill, start_python, wait_for_line

from ml.core.artifacts import DATASET, TRAIN, run_dir
from ml.core.settings import PROJECT_DIR, Settings
from ml.modeling.datasets import shipped_frames

SMALL = {
    "use_text": False,
    "hidden": 32,
    "layers": 1,
    "heads": 2,
    "max_len": 20,
    "batch_size": 64,
    "epochs": 4,
    "patience": 4,
    "num_threads": 1,  # one thread: the same arithmetic in every process, so results compare exactly
    "progress": False,
}
FIT = """
import json, logging, sys
import pandas as pd
from ml.modeling.config import TrainConfig
from ml.modeling.datasets import from_frames
from ml.modeling.fit import train
logging.basicConfig(level=logging.WARNING, format="%(message)s")
logging.getLogger("ml.modeling.fit").setLevel(logging.INFO)
folder, config = sys.argv[1], json.loads(sys.argv[2])
data = from_frames(pd.read_parquet(f"{folder}/examples.parquet"), pd.read_parquet(f"{folder}/items.parquet"))
result = train(data, TrainConfig(**config), sys.argv[3])
print("finished best epoch", result.best_epoch)
"""
TASK = """
import json, logging, sys
from ml.training.stages import train_challenger
logging.basicConfig(level=logging.WARNING, format="%(message)s")
logging.getLogger("ml.modeling.fit").setLevel(logging.INFO)
result = train_challenger(sys.argv[1], json.loads(sys.argv[2]))
print("finished best epoch", result["best_epoch"])
"""
SAVED = re.compile(r"checkpoint after epoch (\d+) saved")


def _snapshot(folder: Path, users: int) -> None:
    """A slice of real Beauty users, written as a training run's snapshot of the marts."""
    examples, items = shipped_frames(PROJECT_DIR / "data")
    keep = examples["user_id"].drop_duplicates().sort_values().sample(users, random_state=0)
    examples = examples[examples["user_id"].isin(set(keep))]
    folder.mkdir(parents=True, exist_ok=True)
    examples.to_parquet(folder / "examples.parquet", index=False)
    items[items["item_id"].isin(set(examples["item_id"]))].to_parquet(folder / "items.parquet", index=False)


def _weights(train_dir: Path) -> dict[str, torch.Tensor]:
    [weights] = [p for p in (train_dir / "model").iterdir() if p.suffix in (".pt", ".safetensors")]
    if weights.suffix == ".pt":
        state: dict[str, torch.Tensor] = torch.load(weights, map_location="cpu", weights_only=False)
        return state
    from safetensors.torch import load_file

    return load_file(weights)


def _kill_after_first_checkpoint(
    code: str, args: list[str], settings: Settings, train_dir: Path, tmp_path: Path
) -> int:
    """Run ``code`` in its own process and SIGKILL it once epoch 1's checkpoint is saved: inside
    epoch 2 or, on an idle machine where an epoch takes a fraction of a second, a later one, but
    always before the last epoch ends. Returns the epoch of the checkpoint the kill left."""
    log = tmp_path / "killed.log"
    process = start_python(code, settings, log, args=args)
    wait_for_line(process, lambda line: SAVED.search(line) is not None, log, timeout_s=1200)
    rest = sigkill(process, log)
    ckpt = torch.load(train_dir / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert 1 <= ckpt["epoch"] < SMALL["epochs"], "the kill came after the last epoch: nothing to resume"
    assert "finished" not in rest and not (train_dir / "history.json").exists()
    return int(ckpt["epoch"])


def _run(code: str, args: list[str], settings: Settings, log: Path) -> str:
    process = start_python(code, settings, log, args=args)
    out, _ = process.communicate(timeout=1800)
    log.write_text(out)
    assert process.returncode == 0, out[-3000:]
    return out


def _same_run(resumed: Path, uninterrupted: Path) -> None:
    history = json.loads((resumed / "history.json").read_text())
    alone = json.loads((uninterrupted / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1.0, 2.0, 3.0, 4.0]
    drop = {"seconds"}
    assert [{k: v for k, v in h.items() if k not in drop} for h in history] == [
        {k: v for k, v in h.items() if k not in drop} for h in alone
    ]
    ours, theirs = _weights(resumed), _weights(uninterrupted)
    assert ours.keys() == theirs.keys()
    for name in ours:
        assert torch.equal(ours[name], theirs[name]), name


def test_training_killed_mid_epoch_resumes_and_finishes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from ml.modeling.config import TrainConfig
    from ml.modeling.datasets import from_frames
    from ml.modeling.fit import train

    settings = shop_settings(tmp_path / "work")
    snapshot = tmp_path / "snapshot"
    _snapshot(snapshot, users=600)
    killed = tmp_path / "killed" / "train"
    done = _kill_after_first_checkpoint(
        FIT, [str(snapshot), json.dumps(SMALL), str(killed)], settings, killed, tmp_path
    )

    # The retry: the same function on the same run folder (here in this process: one process
    # start fewer in the quick gate; the slow test retries in a new process, as Airflow does).
    data = from_frames(
        pd.read_parquet(snapshot / "examples.parquet"), pd.read_parquet(snapshot / "items.parquet")
    )
    with caplog.at_level(logging.INFO, logger="ml.modeling.fit"):
        resumed = train(data, TrainConfig(**SMALL), killed)
    assert f"resuming {killed} after epoch {done}" in caplog.text
    assert resumed.best_epoch >= 1
    train(data, TrainConfig(**SMALL), tmp_path / "alone" / "train")
    _same_run(killed, tmp_path / "alone" / "train")


@pytest.mark.slow
def test_the_training_task_killed_mid_epoch_resumes_on_retry(tmp_path: Path) -> None:
    overrides: dict[str, Any] = {**SMALL, "use_text": True, "max_text_tokens": 32, "max_len": 10}
    results = {}
    for name in ("killed", "alone"):
        settings = shop_settings(tmp_path / name)
        _snapshot(run_dir("train-fault", settings) / DATASET, users=400)
        train_dir = run_dir("train-fault", settings) / TRAIN
        args = ["train-fault", json.dumps(overrides)]
        if name == "killed":
            done = _kill_after_first_checkpoint(TASK, args, settings, train_dir, tmp_path)
            out = _run(TASK, args, settings, tmp_path / "retry.log")  # Airflow's retry: a new process
            assert f"resuming {train_dir} after epoch {done}" in out
        else:
            _run(TASK, args, settings, tmp_path / "alone.log")
        results[name] = train_dir
    _same_run(results["killed"], results["alone"])


def _marts_of_beauty_users(settings: Settings, users: int) -> None:
    """marts.fct_training_examples / dim_items for a slice of real Beauty users, as dbt shapes them
    (the train DAG's input; ingest is not under test here)."""
    from ml.core.warehouse import Warehouse

    examples, items = shipped_frames(PROJECT_DIR / "data")
    keep = examples["user_id"].drop_duplicates().sample(users, random_state=0)
    examples = examples[examples["user_id"].isin(set(keep))].assign(source="beauty")
    items = items[items["item_id"].isin(set(examples["item_id"]))].assign(source="beauty")
    with Warehouse(settings).connect() as con:
        con.execute("create schema if not exists marts")
        for name, frame in (("fct_training_examples", examples), ("dim_items", items)):
            con.register("frame", frame)
            con.execute(f"create or replace table marts.{name} as select * from frame")
            con.unregister("frame")


def _wait_for_checkpoint(airflow: Any, run_id: str, train_dir: Path, timeout_s: float = 1200.0) -> int:
    """Wait until the ``train`` task is running and has saved its first checkpoint; its pid (the
    process that runs the task's code: Airflow's supervisor forks it and records it on the task
    instance, so killing it leaves the supervisor to report the attempt)."""
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        [ti] = [t for t in airflow.task_instances(DAG_ID, run_id) if t["task_id"] == "train"]
        assert ti["state"] not in {"success", "failed", "upstream_failed"}, ti
        if ti["state"] == "running" and ti.get("pid") and (train_dir / "checkpoint.pt").exists():
            return int(ti["pid"])
        time.sleep(0.2)
    pytest.fail(f"train of {run_id} saved no checkpoint within {timeout_s:.0f} s")


DAG_ID = "train_recommender"


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_the_train_task_killed_under_the_scheduler_is_retried_from_its_checkpoint(tmp_path: Path) -> None:
    """Issue 16, item 3, as production meets it: ``train_recommender`` through Airflow's real
    scheduler (LocalAirflow), the ``train`` task's process SIGKILLed after its first checkpoint;
    Airflow fails attempt 1, its retry (``retries=1``) resumes after the saved epoch and the run
    ends in a promoted champion."""
    import os
    import signal

    from ml import registry
    from ml.core.artifacts import run_dir
    from ml.ops.local_airflow import LocalAirflow

    epochs = 12
    settings = Settings(
        work_dir=tmp_path / "work",
        data_dir=PROJECT_DIR / "data",
        warehouse="duckdb",
        pii_salt="test-salt",  # type: ignore[arg-type]
        # ID-only and small: each epoch of 3,000 users takes about a second, long enough to be
        # killed inside one; the text encoder's fine-tuning has its own tests.
        train_overrides={**SMALL, "epochs": epochs, "patience": epochs, "val_max_cases": None},
        baselines=["popularity"],
    )
    _marts_of_beauty_users(settings, users=3000)
    with LocalAirflow(settings, progress=False) as airflow:
        airflow.wait_for_dag(DAG_ID)
        airflow.unpause(DAG_ID)
        run_id = airflow.trigger(DAG_ID, conf={"reason": "fault test"})
        train_dir = run_dir(run_id, settings) / TRAIN
        pid = _wait_for_checkpoint(airflow, run_id, train_dir)
        os.kill(pid, signal.SIGKILL)
        saved = torch.load(train_dir / "checkpoint.pt", map_location="cpu", weights_only=False)["epoch"]
        assert 1 <= saved < epochs, "the kill came after the last epoch: nothing to resume"

        [run] = airflow.wait_for_runs(DAG_ID, run_ids=[run_id], timeout=1800)
        assert run["state"] == "success"
        tries = airflow.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/train/tries")
        attempts = sorted((t["try_number"], t["state"]) for t in tries["task_instances"])
        assert attempts == [(1, "failed"), (2, "success")], attempts
        first = airflow.task_log_path(DAG_ID, run_id, "train", 1)
        retry = airflow.task_log_path(DAG_ID, run_id, "train", 2)
        assert first is not None and retry is not None and first != retry
        retry_log = retry.read_text()
        # The retry resumed after the checkpoint the kill left, not from epoch 0.
        resumed = [int(m) for m in re.findall(r"resuming \S+ after epoch (\d+)", retry_log)]
        assert resumed == [saved], retry_log[-3000:]
        history = json.loads((train_dir / "history.json").read_text())
        assert [h["epoch"] for h in history] == [float(e) for e in range(1, epochs + 1)]
        states = {ti["task_id"]: ti["state"] for ti in airflow.task_instances(DAG_ID, run_id)}
        assert set(states.values()) == {"success"}, states
    assert registry.champion(settings) is not None
    print(f"train killed (pid {pid}) after epoch {saved}; retry resumed after epoch {resumed[0]}")
