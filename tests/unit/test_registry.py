"""Registry: versions in the BentoML store, a gate with recorded numbers, promote and rollback."""

from __future__ import annotations

from pathlib import Path

import pytest

from ml import registry
from ml.core.settings import Settings


def save(tmp_path: Path, settings: Settings, name: str, ndcg: float) -> registry.ModelVersion:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "weights.bin").write_bytes(name.encode())
    return registry.register(
        folder,
        metrics={"validation": {"ndcg@10": ndcg}, "test": {"ndcg@10": ndcg - 0.001}},
        config={"mode": "frozen"},
        lineage={"git_sha": "abc"},
        settings=settings,
    )


def test_first_model_passes_the_gate_better_is_promoted_worse_is_rejected(
    tmp_path: Path, settings: Settings
) -> None:
    first = save(tmp_path, settings, "first", 0.030)
    decision = registry.evaluate_gate(first.tag, settings)
    assert decision.promoted and decision.reason == "no champion yet" and decision.champion is None
    registry.promote(first.tag, settings, reason=decision.reason)

    worse = save(tmp_path, settings, "worse", 0.0302)  # better, but by less than the 0.0005 margin
    rejected = registry.evaluate_gate(worse.tag, settings)
    assert not rejected.promoted
    assert (rejected.challenger_value, rejected.champion_value) == (
        pytest.approx(0.0302),
        pytest.approx(0.030),
    )
    assert registry.champion(settings) == first.tag

    better = save(tmp_path, settings, "better", 0.036)
    accepted = registry.evaluate_gate(better.tag, settings)
    assert accepted.promoted and accepted.champion == first.tag
    registry.promote(better.tag, settings, reason=accepted.reason)
    assert registry.champion(settings) == better.tag
    assert (registry.get("champion", settings).path / "weights.bin").read_bytes() == b"better"

    events = [(d["event"], d.get("promoted")) for d in registry.decisions(settings)]
    assert events == [("gate", True), ("promote", None), ("gate", False), ("gate", True), ("promote", None)]


def test_rollback_restores_the_previous_champion(tmp_path: Path, settings: Settings) -> None:
    a, b = save(tmp_path, settings, "a", 0.02), save(tmp_path, settings, "b", 0.03)
    registry.promote(a.tag, settings)
    registry.promote(b.tag, settings)
    assert registry.rollback(settings) == a.tag
    assert registry.champion(settings) == a.tag
    with pytest.raises(registry.RegistryError, match="nothing to roll back to"):
        registry.rollback(settings)


def test_versions_are_listed_oldest_first_with_metadata(tmp_path: Path, settings: Settings) -> None:
    a, b = save(tmp_path, settings, "a", 0.02), save(tmp_path, settings, "b", 0.03)
    versions = registry.list_versions(settings)
    assert [v.tag for v in versions] == [a.tag, b.tag]
    assert versions[1].metric("validation", "ndcg@10") == pytest.approx(0.03)
    assert versions[1].metadata["lineage"] == {"git_sha": "abc"}
    with pytest.raises(registry.RegistryError, match="no model"):
        registry.get("shopflow_recommender:doesnotexist", settings)
