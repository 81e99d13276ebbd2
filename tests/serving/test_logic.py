"""Tier 1: the serving logic in-process with a small real champion (no HTTP)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from ml.core.pii import user_hash
from ml.core.settings import Settings
from serving.engine import _LRU, ServingError, ServingModel


@pytest.fixture(scope="module")
def engine(served: Any) -> ServingModel:
    return ServingModel(
        served.version_dir,
        tag=served.tag,
        log_dir=served.settings.work_dir / "serving_logs",
        work_dir=served.settings.work_dir,
    )


def test_known_user_gets_personal_unseen_items_with_reasons(engine: ServingModel, served: Any) -> None:
    user = str(served.examples["user_id"].iloc[0])
    history = served.history(user)
    out = engine.recommend(user_id=user, k=10)
    assert out["strategy"] == "personalized"
    assert out["history_source"] == "user_history"
    assert out["history_length"] == len(history)
    ids = [h["item_id"] for h in out["items"]]
    assert len(ids) == 10 and len(set(ids)) == 10
    assert not set(ids) & set(history)
    scores = [h["score"] for h in out["items"]]
    assert scores == sorted(scores, reverse=True)
    assert all(h["reason"] and any(i in h["reason"] for i in history) for h in out["items"])
    assert all(h["title"] for h in out["items"])


def test_scores_match_the_model(engine: ServingModel, served: Any) -> None:
    """faiss retrieval returns exactly the model's own top-k (flat inner product is exact)."""
    user = str(served.examples["user_id"].iloc[5])
    history = served.history(user)
    expected = engine.model.recommend(history, k=5)
    got = engine.recommend(recent_items=history, k=5)["items"]
    assert [h["item_id"] for h in got] == [i for i, _ in expected]
    assert [h["score"] for h in got] == pytest.approx([s for _, s in expected], abs=1e-4)


def test_exclude_seen_false_may_return_history(engine: ServingModel, served: Any) -> None:
    user = str(served.examples["user_id"].iloc[1])
    out = engine.recommend(user_id=user, k=100, exclude_seen=False)
    assert set(served.history(user)) & {h["item_id"] for h in out["items"]}


def test_unknown_user_and_unknown_items_get_cold_start(engine: ServingModel) -> None:
    out = engine.recommend(user_id="nobody-at-all", k=5)
    assert out["strategy"] == "cold_start_popular"
    assert "unknown" in out["note"]
    assert len(out["items"]) == 5
    anon = engine.recommend(recent_items=["NOT-AN-ITEM"], k=3)
    assert anon["strategy"] == "cold_start_popular"
    assert anon["unknown_items"] == ["NOT-AN-ITEM"]


def test_recommend_needs_a_user_or_history(engine: ServingModel) -> None:
    with pytest.raises(ServingError) as error:
        engine.recommend(k=5)
    assert error.value.status == 400
    assert "user_id" in error.value.message


def test_hot_users_hit_the_cache(engine: ServingModel, served: Any) -> None:
    user = str(served.examples["user_id"].iloc[2])
    first = engine.recommend(user_id=user, k=5)
    hits = engine.user_cache.hits
    again = engine.recommend(user_id=user, k=5)
    assert engine.user_cache.hits == hits + 1
    assert again["items"] == first["items"]


def _same_answer(one: dict[str, Any], other: dict[str, Any]) -> None:
    """Equal answers, scores to float32 noise (a batched matrix product may round differently)."""
    strip = [{**h, "score": None} for h in one["items"]], [{**h, "score": None} for h in other["items"]]
    assert strip[0] == strip[1]
    assert [h["score"] for h in one["items"]] == pytest.approx([h["score"] for h in other["items"]], abs=1e-5)
    assert {k: v for k, v in one.items() if k != "items"} == {k: v for k, v in other.items() if k != "items"}


def test_batched_and_unbatched_answers_are_identical(engine: ServingModel, served: Any) -> None:
    """Merged requests (adaptive batching: one padded model pass for the uncached users, one faiss
    call for all) answer exactly what each request gets alone."""
    users = [str(u) for u in served.examples["user_id"].iloc[10:16]]
    queries: list[dict[str, Any]] = [{"user_id": u, "k": 3 + n} for n, u in enumerate(users)]
    queries += [
        {"user_id": users[0], "k": 20, "exclude_seen": False},
        {"recent_items": served.history(users[1])[:2], "k": 5},
        {"recent_items": [*served.history(users[2])[-3:], "NOT-AN-ITEM"], "k": 7},
        {"user_id": "nobody-at-all", "k": 4},
        {"recent_items": ["NOT-AN-ITEM"], "k": 2},
    ]
    alone = [engine.recommend(**q) for q in queries]
    engine.user_cache = _LRU(engine.user_cache.size)  # the batch computes its own user vectors
    batched = engine.recommend_many(queries)
    assert len(batched) == len(queries)
    for one, other in zip(alone, batched, strict=True):
        _same_answer(one, other)
    assert [len(a["items"]) for a in batched] == [q["k"] for q in queries]
    assert {a["strategy"] for a in batched} == {"personalized", "cold_start_popular"}

    items = [str(i) for i in served.examples["item_id"].iloc[:4]] + [served.cold_items[0], "NOT-AN-ITEM"]
    similar = engine.similar_many([{"item_id": i, "k": 3 + n} for n, i in enumerate(items)])
    for n, (item, answer) in enumerate(zip(items[:-1], similar[:-1], strict=True)):
        assert isinstance(answer, dict)
        _same_answer(engine.similar(item, k=3 + n), answer)
    assert similar[-2]["space"] == "text"  # type: ignore[index]
    missing = similar[-1]
    assert isinstance(missing, ServingError) and missing.status == 404


def test_similar_items_warm_and_cold(engine: ServingModel, served: Any) -> None:
    item = str(served.examples["item_id"].iloc[0])
    out = engine.similar(item, k=5)
    assert out["space"] == "model" and len(out["items"]) == 5
    assert item not in {h["item_id"] for h in out["items"]}
    expected = [i for i, _ in engine.model.similar_items(item, k=5)]
    assert [h["item_id"] for h in out["items"]] == expected
    cold = engine.similar(served.cold_items[0], k=5)
    assert cold["space"] == "text"


def test_unknown_item_is_404_with_a_hint(engine: ServingModel) -> None:
    with pytest.raises(ServingError) as error:
        engine.similar("NOT-AN-ITEM")
    assert error.value.status == 404
    assert "/search" in error.value.message


def test_search_finds_matching_text(engine: ServingModel) -> None:
    out = engine.search("lipstick", k=5)
    titles = " ".join(engine.model.item_texts[engine.model.index_of(h["item_id"])] for h in out["items"])
    assert "lip" in titles.lower()
    many = engine.search_many(["shampoo for dry hair", "nail polish"], k=3)
    assert [len(m["items"]) for m in many] == [3, 3]


def test_every_answer_is_logged(engine: ServingModel, served: Any) -> None:
    engine.recommend(user_id="logged-user", k=2)
    files = sorted((served.settings.work_dir / "serving_logs").glob("requests-*.jsonl"))
    assert files
    lines = [json.loads(line) for line in files[-1].read_text().splitlines()]
    last = lines[-1]
    assert last["endpoint"] == "recommend"
    assert last["user_hash"] == user_hash("logged-user")
    assert "logged-user" not in json.dumps(last)
    assert last["model_version"] == served.tag
    assert len(last["items"]) == len(last["scores"]) == 2
    assert last["latency_ms"] >= 0 and last["timestamp"]
    assert {"recommend", "similar", "search"} <= {line["endpoint"] for line in lines}


def test_histories_fall_back_to_the_run_snapshot_then_to_none(served: Any, tmp_path: Path) -> None:
    """Without histories.parquet: the lineage's run snapshot, else explicit histories only."""
    from ml.core.artifacts import run_dir

    version = tmp_path / "version"
    shutil.copytree(served.version_dir, version)
    (version / "histories.parquet").unlink()
    bare = ServingModel(version, tag=served.tag, log_dir=tmp_path / "logs")
    assert bare.histories_source == "none"
    user = str(served.examples["user_id"].iloc[0])
    assert bare.recommend(user_id=user, k=3)["strategy"] == "cold_start_popular"

    work = tmp_path / "work"
    snapshot = run_dir("serving-test", Settings(work_dir=work)) / "dataset"
    snapshot.mkdir(parents=True)
    served.examples.to_parquet(snapshot / "examples.parquet", index=False)
    found = ServingModel(version, tag=served.tag, log_dir=tmp_path / "logs", work_dir=work)
    assert found.histories_source.endswith("examples.parquet")
    assert found.recommend(user_id=user, k=3)["strategy"] == "personalized"


def test_concurrent_searches_share_encoder_passes_and_get_their_own_answers(engine: ServingModel) -> None:
    """QueryCombiner: N threads searching at once take fewer than N encoder passes, same answers."""
    from concurrent.futures import ThreadPoolExecutor

    queries = ["lipstick", "shampoo", "perfume", "nail polish", "mascara", "eye liner", "soap", "gel"] * 4
    alone = {q: engine.search(q, k=3)["items"] for q in set(queries)}
    combiner = engine.query_combiner
    passes, encoded = combiner.passes, combiner.encoded
    with ThreadPoolExecutor(len(queries)) as pool:
        answers = list(pool.map(lambda q: engine.search(q, k=3), queries))
    assert [a["query"] for a in answers] == queries
    for answer in answers:
        got = [h["item_id"] for h in answer["items"]]
        assert got == [h["item_id"] for h in alone[answer["query"]]]
        scores = [h["score"] for h in answer["items"]]
        assert scores == pytest.approx([h["score"] for h in alone[answer["query"]]], abs=1e-4)
    assert combiner.encoded - encoded == len(queries)
    assert combiner.passes - passes < len(queries)


def test_a_failing_encoder_pass_fails_every_waiter_with_its_error() -> None:
    import threading
    import time

    import numpy as np

    from serving.engine import QueryCombiner

    gate = threading.Event()
    encoding = threading.Event()
    batches: list[list[str]] = []
    raised: list[ValueError] = []

    def encode(texts: list[str]) -> np.ndarray:
        batches.append(list(texts))
        encoding.set()
        gate.wait(5)
        if "bad" in texts:
            raised.append(ValueError("encoder broke on 'bad'"))
            raise raised[-1]
        return np.ones((len(texts), 4), dtype=np.float32)

    combiner = QueryCombiner(encode)
    results: dict[str, Any] = {}

    def call(text: str) -> None:
        try:
            results[text] = combiner(text).shape
        except ValueError as error:
            results[text] = error

    # "first" holds the encoder (blocked on the gate) while good, bad and fine queue behind it, so
    # the next pass is exactly those three: bad's failure must reach good and fine too.
    first = threading.Thread(target=call, args=("first",))
    first.start()
    assert encoding.wait(5)
    threads = [threading.Thread(target=call, args=(t,)) for t in ("good", "bad", "fine")]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 5
    while len(combiner._queue) < 3 and time.monotonic() < deadline:
        time.sleep(0.001)
    gate.set()
    for t in [first, *threads]:
        t.join(10)
    assert [sorted(b) for b in batches] == [["first"], ["bad", "fine", "good"]]
    assert results["first"] == (4,)
    assert len(raised) == 1
    assert all(results[t] is raised[0] for t in ("good", "bad", "fine")), results
    assert (combiner.passes, combiner.encoded) == (1, 1)  # the failed pass counts no encodings
