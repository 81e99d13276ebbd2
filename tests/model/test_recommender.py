"""Short real fine-tunes of the recommender with the packaged MiniLM encoder."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from ml.modeling.config import TrainConfig, TrainResult
from ml.modeling.datasets import TrainingData, from_frames
from ml.modeling.evaluate import evaluate
from ml.modeling.fit import Trainer, train
from ml.modeling.model import Recommender

TINY = {
    "hidden": 32,
    "layers": 1,
    "heads": 2,
    "dropout": 0.1,
    "max_len": 10,
    "batch_size": 16,
    "lr": 1e-2,
    "progress": False,
    "num_threads": 1,
}


@pytest.fixture(scope="module")
def planted_run(
    planted_data: TrainingData, tmp_path_factory: pytest.TempPathFactory, tmp_cache: Path
) -> TrainResult:
    out = tmp_path_factory.mktemp("planted")
    # The frozen loop's run (mode auto's LoRA phase is tests/model/test_mode_auto.py's).
    config = TrainConfig(**TINY, mode="frozen", epochs=12, patience=12, cache_dir=tmp_cache)
    return train(planted_data, config, out)


def test_loss_falls_and_the_planted_successor_ranks_first(
    planted_run: TrainResult, planted_data: TrainingData, planted_successor: Callable[[int, int], int]
) -> None:
    losses = [h["loss"] for h in planted_run.history]
    assert losses[-1] < 0.5 * losses[0]
    model = planted_run.model
    n = planted_data.num_items - 1
    for a in (1, 5, 17, 30):
        # The chain's previous item, then A: B must come first. (With A alone, items whose text
        # is close to A's compete, as they would in a real catalog.)
        before = next(i for i in range(1, n + 1) if planted_successor(i, n) == a)
        top = model.recommend([f"i{before:03d}", f"i{a:03d}"], k=3)
        assert top[0][0] == f"i{planted_successor(a, n):03d}", top
    # Validation and test targets always follow the planted chain: near-perfect ranking.
    result = evaluate(model, planted_data, "test", ks=(1, 10))
    assert result["recall@1"] > 0.9
    assert result["n"] == planted_data.num_users


def test_history_and_config_are_written(planted_run: TrainResult) -> None:
    folder = planted_run.model_dir
    assert {p.name for p in folder.iterdir()} >= {"config.json", "model.safetensors", "items.json"}
    assert (folder.parent / "history.json").exists()
    assert planted_run.best_epoch >= 1
    assert planted_run.history[planted_run.best_epoch - 1]["val_ndcg@10"] == pytest.approx(
        planted_run.best_metric
    )


def test_save_then_load_gives_identical_scores(planted_run: TrainResult, tmp_path: Path) -> None:
    model = planted_run.model
    histories = [[1, 2, 3], [7], [4, 4, 9, 12]]
    before = model.score(histories)
    model.save(tmp_path / "copy")
    loaded = Recommender.load(tmp_path / "copy")
    after = loaded.score(histories)
    np.testing.assert_array_equal(before, after)
    assert loaded.config == model.config
    assert loaded.item_ids == model.item_ids


def test_recommend_excludes_the_history_unless_asked(planted_run: TrainResult) -> None:
    model = planted_run.model
    history = ["i001", "i002"]
    assert not {item for item, _ in model.recommend(history, k=10)} & set(history)
    ids = [item for item, _ in model.recommend(history, k=model.config.num_items, exclude_seen=False)]
    assert set(history) <= set(ids)
    assert "<pad>" not in ids
    with pytest.raises(KeyError, match="nope"):
        model.similar_items("nope")


@pytest.fixture(scope="module")
def beauty_model(
    beauty_items: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory, tmp_cache: Path
) -> Recommender:
    """A frozen-encoder model over 80 real Beauty items, trained on random in-category walks."""
    rng = np.random.default_rng(1)
    by_leaf = beauty_items.groupby("leaf")["item_id"].apply(list).to_dict()
    rows = []
    for u in range(150):
        leaf = list(by_leaf)[u % len(by_leaf)]
        for position, item in enumerate(rng.choice(by_leaf[leaf], size=6, replace=False), start=1):
            rows.append({"user_id": f"u{u}", "item_id": item, "position": position})
    data = from_frames(pd.DataFrame(rows), beauty_items[["item_id", "item_text"]])
    config = TrainConfig(**TINY, epochs=4, cache_dir=tmp_cache)
    return train(data, config, tmp_path_factory.mktemp("beauty")).model


def test_a_new_item_with_only_text_finds_its_kind(
    beauty_model: Recommender, beauty_items: pd.DataFrame
) -> None:
    leaf_of = dict(zip(beauty_items["item_id"], beauty_items["leaf"], strict=True))
    beauty_model.add_items(["NEW-LIPSTICK"], ["Revlon red lipstick matte | category: Beauty > Makeup > Lips"])
    neighbours = [item for item, _ in beauty_model.similar_items("NEW-LIPSTICK", k=5)]
    assert sum(leaf_of[i] == "Lipstick" for i in neighbours) >= 4, [leaf_of[i] for i in neighbours]
    # The cold item is in the catalog and gets a finite score for any history.
    scores = beauty_model.score([[1, 2]])
    assert scores.shape[1] == beauty_model.config.num_items
    assert np.isfinite(scores[0, beauty_model.index_of("NEW-LIPSTICK")])


def test_search_by_free_text(beauty_model: Recommender, beauty_items: pd.DataFrame) -> None:
    leaf_of = dict(zip(beauty_items["item_id"], beauty_items["leaf"], strict=True))
    hits = [item for item, _ in beauty_model.search("volumizing mascara for lashes", k=5)]
    assert sum(leaf_of.get(i) == "Mascara" for i in hits) >= 4, [leaf_of.get(i) for i in hits]


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")
def test_lora_step_changes_the_encoder(planted_data: TrainingData, tmp_cache: Path) -> None:
    config = TrainConfig(**TINY, mode="lora", encoder_items_per_step=16, cache_dir=tmp_cache)
    trainer = Trainer(planted_data, config, cache_dir=tmp_cache)
    assert trainer.encoder is not None
    lora_b = {n: p.detach().clone() for n, p in trainer.encoder.model.named_parameters() if "lora_B" in n}
    assert lora_b and all(float(v.abs().sum()) == 0.0 for v in lora_b.values())
    frozen = {n: p for n, p in trainer.encoder.model.named_parameters() if not p.requires_grad}
    assert frozen  # the base weights stay frozen under LoRA
    before = trainer.encoder.encode(["red lipstick number 1"])
    stats = trainer.step(next(iter(trainer.batches())))
    assert stats.encoder_tokens > 0 and np.isfinite(stats.loss)
    after_b = dict(trainer.encoder.model.named_parameters())
    assert any(float(after_b[n].detach().abs().sum()) > 0.0 for n in lora_b)
    after = trainer.encoder.encode(["red lipstick number 1"])
    assert not torch.allclose(before, after)


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")
def test_lora_training_saves_a_merged_encoder(
    planted_data: TrainingData, tmp_path: Path, tmp_cache: Path
) -> None:
    small = planted_data.subset_users(40)
    config = TrainConfig(
        **TINY, mode="lora", epochs=1, max_steps_per_epoch=1, encoder_items_per_step=8, cache_dir=tmp_cache
    )
    result = train(small, config, tmp_path / "run")
    assert (result.model_dir / "encoder" / "config.json").exists()
    loaded = Recommender.load(result.model_dir)
    np.testing.assert_allclose(loaded.score([[1, 2]]), result.model.score([[1, 2]]), rtol=1e-5, atol=1e-5)
    # The saved encoder is the tuned one: its query embedding differs from the base encoder's.
    tuned = loaded.text_encoder().encode(["red lipstick number 1"])
    base = (
        Trainer(small, TrainConfig(**TINY, cache_dir=tmp_cache))
        .model.text_encoder()
        .encode(["red lipstick number 1"])
    )
    assert not torch.allclose(tuned, base)


def test_training_resumes_from_its_checkpoint(
    planted_data: TrainingData, tmp_path: Path, tmp_cache: Path
) -> None:
    small = planted_data.subset_users(60)
    # The epoch loop's checkpoint (mode frozen: auto would add its LoRA phase's record after it).
    tiny = {**TINY, "mode": "frozen"}
    first = train(small, TrainConfig(**tiny, epochs=1, cache_dir=tmp_cache), tmp_path)
    second = train(small, TrainConfig(**tiny, epochs=2, cache_dir=tmp_cache), tmp_path)
    assert len(first.history) == 1 and len(second.history) == 2
    assert second.history[0] == first.history[0]
    # A different configuration does not resume from the old checkpoint.
    third = train(small, TrainConfig(**{**tiny, "hidden": 16}, epochs=1, cache_dir=tmp_cache), tmp_path)
    assert len(third.history) == 1


def test_sasrec_needs_no_encoder(planted_data: TrainingData, tmp_path: Path) -> None:
    config = TrainConfig(**TINY, use_text=False, epochs=2)
    result = train(planted_data, config, tmp_path)
    assert result.model.encoder is None
    assert not result.model.config.use_text
    with pytest.raises(ValueError, match="text"):
        result.model.search("lipstick")


# -- the champion re-scored on a challenger's split (ml.training.stages._AlignedScorer) -------------------


def _frames_of(data: TrainingData) -> tuple[pd.DataFrame, pd.DataFrame]:
    rows = [
        {"user_id": str(user), "item_id": str(data.item_ids[item]), "position": position}
        for user, sequence in zip(data.user_ids, data.sequences, strict=True)
        for position, item in enumerate(sequence, start=1)
    ]
    items = pd.DataFrame({"item_id": data.item_ids[1:], "item_text": data.item_texts[1:]})
    return pd.DataFrame(rows), items


def test_aligned_scorer_on_the_models_own_data_changes_nothing(
    planted_run: TrainResult, planted_data: TrainingData
) -> None:
    from ml.training.stages import _AlignedScorer

    own = evaluate(planted_run.model, planted_data, "test")
    aligned = evaluate(_AlignedScorer(planted_run.model, planted_data), planted_data, "test")  # type: ignore[arg-type]
    for metric in ("recall@5", "ndcg@10", "mrr"):
        assert aligned[metric] == pytest.approx(own[metric])


def test_aligned_scorer_follows_a_reordered_and_grown_catalog(
    planted_run: TrainResult, planted_data: TrainingData
) -> None:
    from ml.training.stages import _AlignedScorer

    examples, items = _frames_of(planted_data)
    # A later snapshot: the catalog lists items in another order and has two new products.
    new = pd.DataFrame({"item_id": ["n001", "n002"], "item_text": ["pink lipstick new", "blue shampoo new"]})
    later = from_frames(examples, pd.concat([new, items.iloc[::-1]], ignore_index=True), source="toy")
    model = planted_run.model
    history = ["i001", "i002"]
    direct = model.score([[model.index_of(i) for i in history]])
    scores = _AlignedScorer(model, later).score([[later.item_index[i] for i in history]])
    assert scores.shape == (1, later.num_items)
    for item in ("i005", "i017", "i030"):
        assert scores[0, later.item_index[item]] == pytest.approx(direct[0, model.index_of(item)])
    assert np.isfinite(
        scores[0, [later.item_index["n001"], later.item_index["n002"]]]
    ).all()  # joined by text
