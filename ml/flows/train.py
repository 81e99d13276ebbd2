"""The training chain: stages of ``ml.training`` → gate → Bento smoke test → promotion.

One owner of the release rule, for the ``train_recommender`` DAG (one call per task) and for
``shopflow train`` (the whole chain in one process): a challenger becomes the champion only when
its gate decision promoted it *and* the Bento built around it answered the smoke query.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ml import registry
from ml.core.settings import Settings, get_settings
from ml.modeling.distributed import continue_alone, process_group
from ml.training import snapshot, stages
from serving.bento import build_bento, smoke_query


class NotPromotedError(RuntimeError):
    """The gate rejected the challenger: there is nothing to smoke-test or promote."""


def smoke_test_challenger(decision: dict[str, Any], settings: Settings | None = None) -> dict[str, Any]:
    """Build the Bento around a gated challenger, serve it and query every endpoint.

    Raises:
        NotPromotedError: the gate decision did not promote the challenger.
        RuntimeError: the Bento could not be built, served or queried.
    """
    if not decision["promoted"]:
        raise NotPromotedError(f"not promoted: {decision['reason']}")
    settings = settings or get_settings()
    tag = decision["challenger"]
    bento = build_bento(tag, settings)
    searchable = bool(registry.get(tag, settings).metadata["config"]["model"]["use_text"])
    return {"bento": bento, **smoke_query(bento, model_tag=tag, settings=settings, searchable=searchable)}


def promote_challenger(
    decision: dict[str, Any], smoke: dict[str, Any], settings: Settings | None = None
) -> dict[str, Any]:
    """Make the challenger the champion: only after its gate promoted it and its Bento answered."""
    if not decision["promoted"]:
        raise NotPromotedError(f"not promoted: {decision['reason']}")
    if not smoke.get("bento"):
        raise ValueError("no smoke-tested Bento: run smoke_test_challenger first")
    settings = settings or get_settings()
    champion = registry.promote(decision["challenger"], settings, reason=decision["reason"])
    return {"champion": champion, "bento": smoke["bento"]}


@dataclass
class TrainingOutcome:
    """What one ``shopflow train`` run did (``None`` on the torchrun ranks other than 0)."""

    run_id: str
    dataset: dict[str, Any]
    trained: dict[str, Any]
    evaluation: dict[str, Any]
    registered: dict[str, Any]
    decision: dict[str, Any]
    released: dict[str, Any] | None
    """The promotion (champion and Bento) when the gate promoted the challenger."""

    @property
    def report_dir(self) -> Path:
        return Path(self.evaluation["report_dir"])


def run_training(
    run_id: str,
    overrides: dict[str, Any] | None = None,
    settings: Settings | None = None,
    lineage: dict[str, Any] | None = None,
    echo: Callable[[str], None] = lambda _line: None,
) -> TrainingOutcome | None:
    """Snapshot, train, evaluate, register, gate and (when the gate promotes) release, in one process.

    Under torchrun every process calls this: rank 0 snapshots the marts, all ranks train one model
    with DDP, then rank 0 alone evaluates, registers, gates and releases; the others return None.
    """
    settings = settings or get_settings()
    overrides = overrides or {}
    with process_group(stages.train_config(settings, overrides).device) as dist:
        run_id = dist.broadcast(run_id)  # one run folder for all ranks
        dataset: dict[str, Any] = {}
        if dist.is_main:
            dataset = snapshot.build_dataset(run_id, settings)
            echo(
                f"dataset: {dataset['users']:,} users, {dataset['items']:,} items, "
                f"{dataset['interactions']:,} events"
            )
        dist.barrier()  # the snapshot is written before any rank reads it
        trained = stages.train_challenger(run_id, overrides, settings)
    if not dist.is_main:
        return None
    continue_alone()  # the other ranks are done: what follows (baselines too) runs in this process
    processes = f" x {dist.world_size} processes (DDP)" if dist.enabled else ""
    echo(
        f"trained: best epoch {trained['best_epoch']}, "
        f"{trained['train_seconds']:.0f} s on {trained['device']}{processes}"
    )
    evaluation = stages.evaluate_challenger(run_id, overrides, settings)
    echo((Path(evaluation["report_dir"]) / "metrics.md").read_text())
    registered = stages.register_challenger(run_id, evaluation, lineage, overrides, settings)
    decision = stages.gate_challenger(registered["tag"], run_id, settings)
    released = None
    if decision["promoted"]:
        released = promote_challenger(decision, smoke_test_challenger(decision, settings), settings)
    return TrainingOutcome(run_id, dataset, trained, evaluation, registered, decision, released)


def describe(outcome: TrainingOutcome) -> str:
    """One line on the gate's verdict and what was released."""
    tag, reason = outcome.registered["tag"], outcome.decision["reason"]
    if outcome.released:
        return f"{tag}: PROMOTED (Bento {outcome.released['bento']} answered) — {reason}"
    return f"{tag}: rejected — {reason}"
