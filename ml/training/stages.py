"""The training run, stage by stage: what each task of the ``train_recommender`` DAG calls.

Stages hand over through one run folder, ``<work_dir>/runs/<run id>/``:

    build_dataset   → dataset/examples.parquet, dataset/items.parquet (a snapshot of the marts)
    train_challenger→ train/model/ (weights, config, item table), train/history.json
    evaluate_challenger → report/ (metrics.json, metrics.md, loss.png, comparison.png)
    register_challenger → a version in the BentoML model store
    gate_challenger → the recorded decision (whether the challenger beats the champion)

What follows a winning gate - build and smoke-query the Bento, then promote - is the release in
``ml.flows.train``: it needs serving, which training never imports.

The snapshot is taken once, so every stage of a run sees the same data even if an ingest run
rebuilds the marts meanwhile. Each stage returns a small JSON-able dict (Airflow XCom).
"""

from __future__ import annotations

import json
import subprocess
from datetime import timedelta
from typing import Any

from ml import registry
from ml.core.artifacts import DATASET, REPORT, TRAIN, run_dir, write_histories
from ml.core.settings import PROJECT_DIR, Settings, get_settings
from ml.modeling.baselines import evaluate_baselines
from ml.modeling.config import TrainConfig
from ml.modeling.evaluate import evaluate
from ml.modeling.fit import PHASES_FILE, train
from ml.modeling.model import load
from ml.monitoring.features import write_reference
from ml.training.baseline_cache import cached_baselines, snapshot_key
from ml.training.report import write_run_report
from ml.training.snapshot import load_snapshot


def git_sha() -> str | None:
    """The checkout's commit, for lineage (None outside a git checkout)."""
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
            cwd=PROJECT_DIR,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None


def train_config(settings: Settings, overrides: dict[str, Any] | None = None) -> Any:
    """TrainConfig from settings.train_overrides, then the run's own overrides."""

    values = {
        "cache_dir": settings.work_dir / "cache",
        **settings.train_overrides,
        **(overrides or {}),
    }
    return TrainConfig(**values)


class _AlignedScorer:
    """A registered model scoring in another snapshot's item indices.

    The champion was trained on an older snapshot: items new since then join it by their text
    (as they would in serving), and its scores are reordered into this snapshot's vocabulary,
    so champion and challenger are measured on exactly the same cases.
    """

    def __init__(self, model: Any, data: Any) -> None:
        import numpy as np

        ids = [str(i) for i in data.item_ids[1:]]
        texts = data.item_texts[1:]
        missing = [(i, t) for i, t in zip(ids, texts, strict=True) if i not in model._index]
        if missing and model.config.use_text:
            model.add_items([i for i, _ in missing], [t for _, t in missing])
        # Items the model cannot know (an ID-only champion meeting new items) map to padding.
        self.columns = np.array([0] + [model._index.get(i, 0) for i in ids])
        self.model = model

    def score(self, histories: Any) -> Any:
        import numpy as np

        mapped = [self.columns[np.asarray(h, dtype=np.int64)] for h in histories]
        scores = self.model.score(mapped)[:, self.columns]
        scores[:, self.columns == 0] = -np.inf
        return scores


def _evaluate_champion(data: Any, protocol: str, settings: Settings) -> dict[str, Any] | None:
    """Champion's validation and test metrics on this run's split (None before the first champion)."""

    tag = registry.champion(settings)
    if tag is None:
        return None
    scorer = _AlignedScorer(load(registry.get(tag, settings).path / "model"), data)
    return {
        "tag": tag,
        "validation": evaluate(scorer, data, "validation", protocol),  # type: ignore[arg-type]
        "test": evaluate(scorer, data, "test", protocol),  # type: ignore[arg-type]
    }


def publish_skip_reason(run_type: Any, settings: Settings | None = None) -> str | None:
    """Why a run started by a marts Asset event should not train (None: it should).

    With ``retrain_on_publish = "until_champion"`` new marts train a model only while there is no
    champion; after that, retraining is what ``monitor_drift`` (or a person) asks for.

    Args:
        run_type: the run's type: a ``DagRunType`` (the Task SDK's enum has no ``__str__``, so
            its ``value`` is compared) or its string value.
    """

    settings = settings or get_settings()
    kind = getattr(run_type, "value", run_type)
    if kind != "asset_triggered" or settings.retrain_on_publish == "always":
        return None
    tag = registry.champion(settings)
    if tag is None:
        return None
    return (
        f"marts updated, {tag} is champion: retraining is left to monitor_drift "
        "(SHOPFLOW_RETRAIN_ON_PUBLISH=until_champion)"
    )


def train_challenger(
    run_id: str, overrides: dict[str, Any] | None = None, settings: Settings | None = None
) -> dict[str, Any]:
    """Fine-tune the recommender on the run's snapshot (resumes from its checkpoint on retry)."""

    settings = settings or get_settings()
    config = train_config(settings, overrides)
    result = train(load_snapshot(run_id, settings), config, run_dir(run_id, settings) / TRAIN)
    return {
        "model_dir": str(result.model_dir),
        "best_epoch": result.best_epoch,
        "validation_ndcg@10": result.best_metric,
        "train_seconds": round(result.train_seconds, 1),
        "device": result.device,
        "mode_ran": result.mode_ran,
        "phases": result.phases,
        "config": json.loads(config.model_dump_json()),
    }


def evaluate_challenger(
    run_id: str, overrides: dict[str, Any] | None = None, settings: Settings | None = None
) -> dict[str, Any]:
    """Test and validation metrics of the challenger and of the baselines, same split; the run report."""

    settings = settings or get_settings()
    folder = run_dir(run_id, settings)
    data = load_snapshot(run_id, settings)
    model = load(folder / TRAIN / "model")
    config = train_config(settings, overrides)
    history = json.loads((folder / TRAIN / "history.json").read_text())
    # Which fine-tuning level ran and what each phase cost (mode auto: frozen, then maybe LoRA).
    phases_file = folder / TRAIN / PHASES_FILE
    training = json.loads(phases_file.read_text()) if phases_file.exists() else None
    ours = {
        **evaluate(model, data, "test", config.protocol),
        # auto's LoRA phase, when it ran, is the history's last record (its seconds included).
        "train_seconds": sum(h.get("seconds", 0.0) for h in history),
    }
    validation = evaluate(model, data, "validation", config.protocol)

    # Once per snapshot: a rerun on the same marts (a second demo, an unchanged retraining) reuses them.
    baselines = cached_baselines(
        snapshot_key(run_id, config.protocol, settings.baselines, config.model_dump(), settings),
        settings,
        lambda: evaluate_baselines(
            data, "test", config.protocol, folder / "baselines", sasrec=config, include=settings.baselines
        ),
        run_id,
    )
    champion = _evaluate_champion(data, config.protocol, settings)
    models = {"shopflow": ours, **({"champion": champion["test"]} if champion else {}), **baselines}
    paths = write_run_report(
        folder / REPORT,
        models=models,
        history=history,
        extra={
            "validation": validation,
            "protocol": config.protocol,
            "run_id": run_id,
            **({"training": training} if training else {}),
        },
    )
    return {
        "metrics": {"validation": validation, "test": ours, "baselines": baselines, "champion": champion},
        "report_dir": str(folder / REPORT),
        "report_files": {k: str(v) for k, v in paths.items()},
    }


def register_challenger(
    run_id: str,
    evaluation: dict[str, Any],
    lineage: dict[str, Any] | None = None,
    overrides: dict[str, Any] | None = None,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """Save model + report in the BentoML model store with metrics, config and lineage."""
    import shutil

    settings = settings or get_settings()
    folder = run_dir(run_id, settings)
    package = folder / "package"
    shutil.rmtree(package, ignore_errors=True)
    shutil.copytree(folder / TRAIN / "model", package / "model")
    shutil.copytree(folder / REPORT, package / "report")
    import pandas as pd

    examples = pd.read_parquet(folder / DATASET / "examples.parquet")
    # The served Bento looks users up by the histories the model was trained on.
    write_histories(examples, package)
    # Monitoring compares each new interval with the model's own training world, computed once.
    until = pd.Timestamp(examples["event_ts"].max()).to_pydatetime() + timedelta(seconds=1)
    write_reference(package, settings, until=until)
    # Bundles and explanations travel with the version: the Bento serves them from this copy
    # (ml.training.bundles; generated copy within settings.bundle_copy_budget_s, else templates).
    from ml.training.bundles import package_run_bundles

    package_run_bundles(package, examples, settings)
    version = registry.register(
        package,
        metrics=evaluation["metrics"],
        config=json.loads(train_config(settings, overrides).model_dump_json()),
        lineage={"run_id": run_id, "git_sha": git_sha(), "source": settings.train_source, **(lineage or {})},
        settings=settings,
    )
    return {"tag": version.tag, "path": str(version.path)}


def gate_challenger(tag: str, run_id: str, settings: Settings | None = None) -> dict[str, Any]:
    """Record whether the challenger beats the champion by the margin (promotes nothing)."""
    from dataclasses import asdict

    settings = settings or get_settings()
    # The champion re-scored on this run's split, recorded at registration (same cases).
    rescored = registry.get(tag, settings).metrics.get("champion") or {}
    same_split = rescored.get("validation", {}).get(settings.gate_metric)
    decision = registry.evaluate_gate(
        tag,
        settings,
        run_id=run_id,
        champion_value=same_split if rescored.get("tag") == registry.champion(settings) else None,
    )
    return asdict(decision)
