"""Baselines are computed once per snapshot: same bytes and config reuse them, anything else not."""

from __future__ import annotations

from typing import Any

import pandas as pd

from ml.core.artifacts import DATASET, run_dir
from ml.core.settings import Settings
from ml.training.baseline_cache import cached_baselines, snapshot_key


def _snapshot(run_id: str, settings: Settings, users: int) -> None:
    folder = run_dir(run_id, settings) / DATASET
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"user_id": [f"u{n}" for n in range(users)], "item_id": ["i1"] * users}).to_parquet(
        folder / "examples.parquet", index=False
    )
    pd.DataFrame({"item_id": ["i1"], "title": ["Lipstick"]}).to_parquet(folder / "items.parquet", index=False)


def test_same_snapshot_reuses_the_baselines_and_a_changed_one_recomputes(settings: Settings) -> None:
    calls: list[str] = []

    def compute(run: str) -> Any:
        def run_baselines() -> dict[str, dict[str, Any]]:
            calls.append(run)
            return {"popularity": {"ndcg@10": 0.01 * len(calls)}}

        return run_baselines

    config = {"lr": 0.001, "epochs": 8, "progress": True}
    for run_id, users in (("run_a", 10), ("run_b", 10), ("run_c", 11)):
        _snapshot(run_id, settings, users)
    key_a = snapshot_key("run_a", "loo", ["popularity"], config, settings)
    key_b = snapshot_key("run_b", "loo", ["popularity"], {**config, "progress": False}, settings)
    key_c = snapshot_key("run_c", "loo", ["popularity"], config, settings)

    first = cached_baselines(key_a, settings, compute("run_a"), "run_a")
    reused = cached_baselines(key_b, settings, compute("run_b"), "run_b")
    changed = cached_baselines(key_c, settings, compute("run_c"), "run_c")

    assert key_a == key_b != key_c  # progress display does not change a result; one more user does
    assert calls == ["run_a", "run_c"]
    assert first == {"popularity": {"ndcg@10": 0.01}}
    assert reused == {"popularity": {"ndcg@10": 0.01, "cached_from_run": "run_a"}}
    assert changed == {"popularity": {"ndcg@10": 0.02}}
    assert snapshot_key("run_a", "loo", ["popularity"], {**config, "epochs": 9}, settings) != key_a
