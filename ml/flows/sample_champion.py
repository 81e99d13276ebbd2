"""A tiny but real champion: trained on a slice of the shipped Beauty data, registered and promoted.

The serving tests and the serving benchmark make their own champion with it in seconds on a CPU,
exactly as the training DAG would register and promote one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ml import registry
from ml.core.artifacts import write_histories
from ml.core.settings import Settings
from ml.modeling.config import TrainConfig
from ml.modeling.datasets import from_frames, shipped_frames
from ml.modeling.fit import train

# A tiny but real recommender (packaged MiniLM frozen, one sequence layer): trains in seconds on
# a CPU, so the serving tests and the serving benchmark can make their own champion.
SAMPLE_CONFIG: dict[str, Any] = {
    # Frozen: mode auto's CPU LoRA phase would add up to a minute to every session that needs a
    # sample champion (the serving tests); the phase has its own tests (tests/model/test_mode_auto.py).
    "mode": "frozen",
    "hidden": 32,
    "layers": 1,
    "heads": 2,
    "dropout": 0.1,
    "max_len": 10,
    "max_text_tokens": 32,
    "batch_size": 32,
    "lr": 1e-2,
    "epochs": 2,
    "patience": 2,
    "progress": False,
    "num_threads": 2,
}


@dataclass(frozen=True)
class SampleChampion:
    """A registered and promoted sample model, with the data it was trained on."""

    tag: str
    version_dir: Path
    examples: Any
    """The sampled users' interactions (a DataFrame: user_id, item_id, position, ...)."""
    cold_items: list[str]
    """Catalog items no sampled user interacted with (text only)."""


def register_sample_champion(
    settings: Settings,
    scratch: Path,
    users: int = 50,
    cold: int = 10,
    seed: int = 0,
    run_id: str = "serving-sample",
) -> SampleChampion:
    """Train a small real model on a slice of the shipped Beauty data, register and promote it.

    The slice is ``users`` random users with all their items plus ``cold`` items none of them
    touched; the model is registered in ``settings``' BentoML store and promoted, exactly as the
    training DAG does, so a service loads it the way it loads a real champion.

    Args:
        settings: whose store receives the version (``settings.bentoml_home``).
        scratch: a folder for the training run and embedding cache.
        users: how many users to sample.
        cold: how many never-seen catalog items to add.
        seed: the user sample's random state.
        run_id: the lineage run id recorded with the version.
    """
    import shutil

    import pandas as pd

    examples, items = shipped_frames(settings.data_dir)
    sample = examples["user_id"].drop_duplicates().sort_values().sample(users, random_state=seed)
    examples = examples[examples["user_id"].isin(set(sample))].reset_index(drop=True)
    seen = set(examples["item_id"])
    cold_frame = items[~items["item_id"].isin(seen)].sort_values("item_id").head(cold)
    items = pd.concat([items[items["item_id"].isin(seen)], cold_frame], ignore_index=True)
    data = from_frames(examples, items, source="beauty")

    result = train(data, TrainConfig(**SAMPLE_CONFIG, cache_dir=scratch / "cache"), scratch / "run" / "train")
    package = scratch / "run" / "package"
    if package.exists():
        shutil.rmtree(package)
    shutil.copytree(result.model_dir, package / "model")
    (package / "report").mkdir()
    (package / "report" / "metrics.json").write_text("{}")
    write_histories(examples, package)
    # Bundles and explanations as register_challenger packages them (template copy, no generator).
    from ml.training.bundles import package_bundles

    package_bundles(package, examples, items)
    version = registry.register(
        package,
        metrics={"validation": {"ndcg@10": result.best_metric}},
        config=SAMPLE_CONFIG,
        lineage={"run_id": run_id},
        settings=settings,
    )
    registry.promote(version.tag, settings, reason=f"sample champion ({users} users)")
    return SampleChampion(version.tag, version.path, examples, [str(i) for i in cold_frame["item_id"]])
