"""The files a training run and a model version are made of: their layout, names and read/write.

One owner for the model-version package, which training writes, the registry stores and serving
and monitoring read::

    <work_dir>/runs/<run id>/          a training run (see ml.training.stages.stages)
        dataset/examples.parquet       the marts snapshot every stage of the run reads
        dataset/items.parquet
        train/model/ train/history.json
        report/                        metrics.json, metrics.md, plots
        package/                       what is registered as a version:
    <version>/model/                   weights, config, item table (ml.modeling.model.save)
    <version>/report/
    <version>/histories.parquet        the users the model was trained on, for serving lookups
    <version>/monitoring_reference.parquet   the training world monitoring compares against
    <version>/shopflow_metadata.json   metrics, config and lineage (ml.registry)
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pandas as pd

from ml.core.settings import Settings, get_settings

DATASET, TRAIN, REPORT, PACKAGE = "dataset", "train", "report", "package"
MODEL_DIR = "model"
HISTORIES_FILE = "histories.parquet"
METADATA_FILE = "shopflow_metadata.json"
REFERENCE_FILE = "monitoring_reference.parquet"


def safe_run_id(run_id: str) -> str:
    """A run id as a file or folder name: Airflow's contain ':' and '+' (scheduled__…T00:00:00+00:00)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", run_id)


def run_dir(run_id: str, settings: Settings | None = None) -> Path:
    """The training run's folder."""
    settings = settings or get_settings()
    return settings.work_dir / "runs" / safe_run_id(run_id)


def write_histories(examples: Any, folder: Path | str) -> Path:
    """Save per-user histories (a frame with user_id, item_id, position) for user lookups.

    Call this on the training snapshot when packaging a version (beside ``model/``), so the
    served Bento knows the users the model was trained on.
    """
    frame = pd.DataFrame(examples)[["user_id", "item_id", "position"]].astype(
        {"user_id": str, "item_id": str}
    )
    out = Path(folder) / HISTORIES_FILE
    out.parent.mkdir(parents=True, exist_ok=True)
    frame.sort_values(["user_id", "position"], kind="stable").to_parquet(out, index=False)
    return out


def read_histories(path: Path) -> dict[str, list[str]]:
    """user id → the item ids of its history, oldest first (a file of :func:`write_histories`)."""
    frame = pd.read_parquet(path, columns=["user_id", "item_id", "position"])
    frame = frame.sort_values(["user_id", "position"], kind="stable")
    return {
        str(user): [str(i) for i in group["item_id"]] for user, group in frame.groupby("user_id", sort=False)
    }
