"""The model registry is the BentoML model store; this module adds the champion and the gate.

Every trained model is saved as a version of ``shopflow_recommender`` with its metrics, config and
lineage as metadata. Which version is the champion, and why, is kept beside the store in
``<bentoml_home>/shopflow/``: ``champion.json`` (the current champion and the ones before it, for
rollback) and ``decisions.jsonl`` (every gate decision, promotion and rollback with its numbers).
Both are written atomically, so a crash never leaves a half-written pointer.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ml.core.artifacts import METADATA_FILE
from ml.core.settings import Settings, get_settings

MODEL_NAME = "shopflow_recommender"


class RegistryError(RuntimeError):
    """A registry operation cannot be done (unknown version, nothing to roll back to, ...)."""


@dataclass(frozen=True)
class ModelVersion:
    tag: str
    created: str
    metrics: dict[str, Any]
    metadata: dict[str, Any]
    path: Path

    def metric(self, split: str, name: str) -> float | None:
        value = self.metrics.get(split, {}).get(name)
        return None if value is None else float(value)


@dataclass(frozen=True)
class GateDecision:
    challenger: str
    champion: str | None
    metric: str
    challenger_value: float
    champion_value: float | None
    margin: float
    promoted: bool
    reason: str
    decided_at: str
    run_id: str | None = None


def _store(settings: Settings) -> Any:
    """The model store under ``settings.bentoml_home``.

    Passed explicitly to every bentoml.models call: BentoML's own default store is a process-wide
    singleton fixed at first use, and one process (a test session, a scheduler worker) may need
    several homes.
    """
    from bentoml._internal.models.model import ModelStore

    folder = settings.bentoml_home / "models"
    folder.mkdir(parents=True, exist_ok=True)
    return ModelStore(str(folder))


def _without_nulls(value: Any) -> Any:
    """BentoML metadata accepts only basic types, not None: drop the empty entries."""
    if isinstance(value, dict):
        return {str(k): _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_without_nulls(v) for v in value if v is not None]
    return value


def _ledger_dir(settings: Settings) -> Path:
    folder = settings.bentoml_home / "shopflow"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _write_json_atomically(path: Path, value: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(value, indent=2, default=str))
    os.replace(tmp, path)


def _append_decision(settings: Settings, record: dict[str, Any]) -> None:
    with (_ledger_dir(settings) / "decisions.jsonl").open("a") as ledger:
        ledger.write(json.dumps(record, default=str) + "\n")


def _champion_state(settings: Settings) -> dict[str, Any]:
    path = _ledger_dir(settings) / "champion.json"
    if not path.exists():
        return {"champion": None, "previous": []}
    return dict(json.loads(path.read_text()))


def register(
    model_dir: Path,
    *,
    metrics: dict[str, Any],
    config: dict[str, Any],
    lineage: dict[str, Any],
    settings: Settings | None = None,
) -> ModelVersion:
    """Save a trained model directory as a new version in the BentoML model store.

    Args:
        model_dir: what ``train`` saved (weights, config, item embeddings, report).
        metrics: ``{"validation": {...}, "test": {...}, "baselines": {...}}``.
        config: the training config.
        lineage: data snapshot (marts Asset event / intervals), GX validation id, dbt run, git sha.
        settings: ShopFlow settings (BentoML home).
    """
    settings = settings or get_settings()
    import bentoml

    metadata = json.loads(json.dumps({"metrics": metrics, "config": config, "lineage": lineage}, default=str))
    with bentoml.models.create(
        name=MODEL_NAME,
        metadata=_without_nulls(metadata),
        labels={"owner": "shopflow"},
        _model_store=_store(settings),
    ) as ref:
        shutil.copytree(model_dir, ref.path, dirs_exist_ok=True)
        # The complete record, nulls included, travels with the files.
        (Path(ref.path) / METADATA_FILE).write_text(json.dumps(metadata, indent=2))
    return get(str(ref.tag), settings)


def get(tag: str, settings: Settings | None = None) -> ModelVersion:
    """One version by tag (``name:version``, or ``latest``/``champion``)."""
    import bentoml

    settings = settings or get_settings()
    if tag == "champion":
        current = champion(settings)
        if current is None:
            raise RegistryError("no champion yet: train and promote a model first")
        tag = current
    if ":" not in tag:
        tag = f"{MODEL_NAME}:{tag}"
    try:
        model = bentoml.models.get(tag, _model_store=_store(settings))
    except Exception as error:  # bentoml raises NotFound with a store-specific message
        raise RegistryError(f"no model {tag!r} in the store at {settings.bentoml_home}") from error
    metadata: dict[str, Any] = dict(model.info.metadata)
    return ModelVersion(
        tag=str(model.tag),
        created=model.info.creation_time.isoformat(timespec="seconds"),
        metrics=dict(metadata.get("metrics") or {}),
        metadata=metadata,
        path=Path(model.path),
    )


def list_versions(settings: Settings | None = None) -> list[ModelVersion]:
    """All versions, oldest first."""
    import bentoml

    settings = settings or get_settings()
    models = sorted(
        bentoml.models.list(MODEL_NAME, _model_store=_store(settings)), key=lambda m: m.info.creation_time
    )
    return [get(str(m.tag), settings) for m in models]


def champion(settings: Settings | None = None) -> str | None:
    """The champion's tag, or ``None`` before the first promotion."""
    return _champion_state(settings or get_settings())["champion"]


def decisions(settings: Settings | None = None) -> list[dict[str, Any]]:
    """Every recorded gate decision, promotion and rollback, oldest first."""
    path = _ledger_dir(settings or get_settings()) / "decisions.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def evaluate_gate(
    challenger_tag: str,
    settings: Settings | None = None,
    run_id: str | None = None,
    champion_value: float | None = None,
) -> GateDecision:
    """Decide whether a challenger beats the champion on the validation metric by the margin.

    Args:
        challenger_tag: the registered challenger.
        settings: ShopFlow settings (metric, margin, store).
        run_id: recorded with the decision.
        champion_value: the champion's metric re-measured on the challenger's own validation
            split. Without it the champion's registered value is used, which was measured on
            the older snapshot it trained on; the reason then says so.

    The decision is recorded (with both numbers) whichever way it goes; it promotes nothing.
    """
    settings = settings or get_settings()
    challenger = get(challenger_tag, settings)
    metric = settings.gate_metric
    value = challenger.metric("validation", metric)
    if value is None:
        raise RegistryError(f"{challenger.tag} has no validation {metric!r} in its metrics")
    current = champion(settings)
    basis = "re-scored on the same split"
    if current is not None and champion_value is None:
        champion_value = get(current, settings).metric("validation", metric)
        basis = "as registered, on its own snapshot"
    if champion_value is None:
        promoted, reason = True, "no champion yet"
    elif value >= champion_value + settings.promotion_margin:
        promoted = True
        reason = (
            f"validation {metric} {value:.5f} beats the champion's {champion_value:.5f} ({basis}) "
            f"by at least the margin {settings.promotion_margin}"
        )
    else:
        promoted = False
        reason = (
            f"validation {metric} {value:.5f} does not beat the champion's {champion_value:.5f} "
            f"({basis}) by the margin {settings.promotion_margin}"
        )
    decision = GateDecision(
        challenger=challenger.tag,
        champion=current,
        metric=metric,
        challenger_value=value,
        champion_value=champion_value,
        margin=settings.promotion_margin,
        promoted=promoted,
        reason=reason,
        decided_at=datetime.now(UTC).isoformat(timespec="seconds"),
        run_id=run_id,
    )
    _append_decision(settings, {"event": "gate", **asdict(decision)})
    return decision


def promote(tag: str, settings: Settings | None = None, reason: str = "manual") -> str:
    """Make ``tag`` the champion (the previous one is kept for rollback)."""
    settings = settings or get_settings()
    version = get(tag, settings)
    state = _champion_state(settings)
    if state["champion"] == version.tag:
        return version.tag
    previous = [*state["previous"], state["champion"]] if state["champion"] else state["previous"]
    _write_json_atomically(
        _ledger_dir(settings) / "champion.json", {"champion": version.tag, "previous": previous}
    )
    _append_decision(
        settings,
        {
            "event": "promote",
            "champion": version.tag,
            "replaced": state["champion"],
            "reason": reason,
            "decided_at": datetime.now(UTC).isoformat(timespec="seconds"),
        },
    )
    return version.tag


def rollback(settings: Settings | None = None, reason: str = "manual") -> str:
    """Make the previous champion the champion again; returns its tag."""
    settings = settings or get_settings()
    state = _champion_state(settings)
    if not state["previous"]:
        raise RegistryError("nothing to roll back to: there has been only one champion (or none)")
    *rest, restored = state["previous"]
    _write_json_atomically(_ledger_dir(settings) / "champion.json", {"champion": restored, "previous": rest})
    _append_decision(
        settings,
        {
            "event": "rollback",
            "champion": restored,
            "replaced": state["champion"],
            "reason": reason,
            "decided_at": datetime.now(UTC).isoformat(timespec="seconds"),
        },
    )
    return str(restored)


# -- the generator: its own model name, champion pointer and ledger ----------------------------------
# The fine-tuned generator is versioned in the same store as the recommender, under its own name;
# its champion and decisions sit in their own files beside the recommender's, so neither ledger's
# readers meet the other's events.
GENERATOR_MODEL_NAME = "shopflow_generator"
_GENERATOR_CHAMPION = "generator_champion.json"
_GENERATOR_DECISIONS = "generator_decisions.jsonl"


def register_generator(
    tuned_dir: Path,
    *,
    metrics: dict[str, Any],
    config: dict[str, Any],
    lineage: dict[str, Any],
    settings: Settings | None = None,
) -> ModelVersion:
    """Save a tuned generator (``ml.generation.finetune.save_tuned``'s folder) as a version of
    ``shopflow_generator``, with its evaluation (base and tuned), config and lineage."""
    settings = settings or get_settings()
    import bentoml

    metadata = json.loads(json.dumps({"metrics": metrics, "config": config, "lineage": lineage}, default=str))
    with bentoml.models.create(
        name=GENERATOR_MODEL_NAME,
        metadata=_without_nulls(metadata),
        labels={"owner": "shopflow", "kind": "generator"},
        _model_store=_store(settings),
    ) as ref:
        shutil.copytree(tuned_dir, ref.path, dirs_exist_ok=True)
        (Path(ref.path) / METADATA_FILE).write_text(json.dumps(metadata, indent=2))
    return get(str(ref.tag), settings)


def generator_champion(settings: Settings | None = None) -> str | None:
    """The champion generator's tag, or ``None`` while the base model serves."""
    path = _ledger_dir(settings or get_settings()) / _GENERATOR_CHAMPION
    return json.loads(path.read_text())["champion"] if path.exists() else None


def generator_decisions(settings: Settings | None = None) -> list[dict[str, Any]]:
    """Every generator gate decision and promotion, oldest first."""
    path = _ledger_dir(settings or get_settings()) / _GENERATOR_DECISIONS
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def gate_generator(
    challenger_tag: str,
    comparison: dict[str, Any],
    *,
    reference: str,
    settings: Settings | None = None,
    run_id: str | None = None,
) -> dict[str, Any]:
    """Record the generator gate's decision and promote the challenger when it won.

    Args:
        challenger_tag: the registered tuned generator.
        comparison: ``ml.generation.evaluate.compare`` of the challenger against the reference,
            both measured on the same held-out cases in one run.
        reference: what it was compared with: the champion's tag, or ``"base"`` when there is none.
        settings: ShopFlow settings (the store).
        run_id: recorded with the decision.

    Returns:
        The decision record (``promoted``, ``reason``, every metric's values).
    """
    settings = settings or get_settings()
    if ":" not in challenger_tag:
        challenger_tag = f"{GENERATOR_MODEL_NAME}:{challenger_tag}"
    challenger = get(challenger_tag, settings)
    current = generator_champion(settings)
    if reference != (current or "base"):
        raise RegistryError(
            f"the challenger was compared with {reference!r}, but the generator champion is "
            f"{current or 'none (the base model serves)'}: evaluate again against it"
        )
    promoted = bool(comparison["beats"])
    if promoted:
        reason = f"no metric below {reference}; better on {', '.join(comparison['better'])}"
    elif comparison.get("too_few"):
        reason = f"too few cases to decide: {comparison['too_few']}"
    elif comparison["worse"]:
        reason = f"below {reference} on {', '.join(comparison['worse'])}"
    else:
        reason = f"no metric better than {reference}"
    now = datetime.now(UTC).isoformat(timespec="seconds")
    decision = {
        "event": "gate",
        "challenger": challenger.tag,
        "reference": reference,
        "promoted": promoted,
        "reason": reason,
        "metrics": comparison["metrics"],
        "decided_at": now,
        "run_id": run_id,
    }
    ledger = _ledger_dir(settings)
    with (ledger / _GENERATOR_DECISIONS).open("a") as handle:
        handle.write(json.dumps(decision, default=str) + "\n")
        if promoted:
            promotion = {"event": "promote", "champion": challenger.tag, "replaced": current}
            handle.write(json.dumps({**promotion, "reason": reason, "decided_at": now}) + "\n")
    if promoted:
        path = ledger / _GENERATOR_CHAMPION
        previous = json.loads(path.read_text())["previous"] if path.exists() else []
        _write_json_atomically(
            path, {"champion": challenger.tag, "previous": [*previous, current] if current else previous}
        )
    return decision


def load_served_generator(
    settings: Settings | None = None, *, device: str | None = None, tag: str | None = None
) -> Any:
    """The generator serving should use: the champion (base + its tuned weights), else the base.
    ``tag``: a registered generator to load instead of the champion the pointer names now.

    One call for /ask, bundles and explanations: ``ml.generation.load.Generator`` either way, its
    ``name`` saying which (``smollm2+lora``; ``smollm2`` when no tuned generator won its gate).
    """
    settings = settings or get_settings()
    from ml.generation.finetune import load_tuned, tuned_record
    from ml.generation.load import DEFAULT_GENERATOR, load_generator

    tag = tag or generator_champion(settings)
    if tag is None:
        return load_generator(DEFAULT_GENERATOR, cache_dir=settings.generator_cache_dir, device=device)
    version = get(tag, settings)
    base = tuned_record(version.path)["base"]
    generator = load_generator(base, cache_dir=settings.generator_cache_dir, device=device)
    return load_tuned(generator, version.path)
