"""Baseline metrics computed once per training snapshot, reused by every run that has the same one.

The gate compares a challenger with the champion, not with the baselines: they are in the run
report so a person can see what the model is worth. Training SASRec costs about as much as the
challenger itself, and a second ``make demo`` in the same checkout, or a retraining that finds the
marts unchanged, snapshots exactly the same data. So the baselines' metrics are keyed by what
determines them: the snapshot's bytes, the protocol, the baselines asked for and the SASRec
configuration (less the fields that do not change what is learned: :data:`IGNORED_CONFIG_KEYS`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ml.core.artifacts import DATASET, run_dir
from ml.core.settings import Settings

IGNORED_CONFIG_KEYS = {"progress", "num_threads", "cache_dir", "device", "resume"}
"""TrainConfig fields that do not change what a baseline learns. Not ``TrainConfig.fingerprint``:
that one leaves out epochs and patience (a checkpoint may resume under more epochs), which do
change the metrics."""


def cache_path(key: str, settings: Settings) -> Path:
    return settings.work_dir / "cache" / "baselines" / f"{key}.json"


def snapshot_key(
    run_id: str, protocol: str, names: Sequence[str], sasrec: dict[str, Any], settings: Settings
) -> str:
    """A digest of everything the baselines' metrics depend on."""
    digest = hashlib.sha256()
    for name in ("examples.parquet", "items.parquet"):
        with open(run_dir(run_id, settings) / DATASET / name, "rb") as snapshot:
            for block in iter(lambda: snapshot.read(1 << 20), b""):
                digest.update(block)
    config = {k: v for k, v in sasrec.items() if k not in IGNORED_CONFIG_KEYS}
    digest.update(json.dumps([protocol, sorted(names), config], sort_keys=True, default=str).encode())
    return digest.hexdigest()[:24]


def cached_baselines(
    key: str, settings: Settings, compute: Callable[[], dict[str, dict[str, Any]]], run_id: str
) -> dict[str, dict[str, Any]]:
    """The baselines' metrics for ``key``: from the cache, else computed and stored (atomically).

    Each reused model's metrics say where they came from (``cached_from_run``).
    """
    path = cache_path(key, settings)
    if path.exists():
        stored = json.loads(path.read_text())
        return {
            name: {**metrics, "cached_from_run": stored["run_id"]}
            for name, metrics in stored["metrics"].items()
        }
    metrics = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps({"run_id": run_id, "metrics": metrics}, default=float))
    partial.replace(path)
    return metrics
