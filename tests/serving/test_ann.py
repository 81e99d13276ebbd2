"""Approximate item indexes (serving/index.py): built at Bento build time above the catalog-size
threshold, read (never built) by the engine at start, and answering like exact search."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from serving.index import (
    ANN_DIR,
    MANIFEST,
    RECALL_TARGET,
    build_ann,
    catalog_index,
    exact_index,
    prepare_version,
    recall_at_k,
    write_catalog_indexes,
)


def clustered(n: int, dim: int, seed: int) -> np.ndarray:
    """SYNTHETIC vectors in clusters with unequal norms (like an item table: near-duplicates)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((50, dim)).astype(np.float32)
    x = centres[rng.integers(0, 50, n)] + 0.5 * rng.standard_normal((n, dim)).astype(np.float32)
    return x * rng.uniform(0.7, 1.3, (n, 1)).astype(np.float32)


def test_hnsw_reaches_the_recall_target_against_exact_on_unseen_queries() -> None:
    items = clustered(6000, 32, seed=1)
    tune, held_out = clustered(200, 32, seed=2), clustered(200, 32, seed=3)
    index, record = build_ann(items, tune)
    assert record["kind"] == "hnsw" and record["items"] == 6000 and record["dim"] == 32
    assert record["recall_at_10"] >= RECALL_TARGET  # the build's own check, on the tuning queries
    _, truth = exact_index(items).search(held_out, 10)
    _, found = index.search(held_out, 10)
    assert recall_at_k(found, truth) >= 0.95
    # a search width too small is measurably worse: the tuning is not a no-op
    index.hnsw.efSearch = 1
    _, narrow = index.search(held_out, 1)
    assert recall_at_k(narrow, truth[:, :1]) < 1.0


def test_catalog_index_reads_what_the_build_wrote_else_falls_back_to_exact(tmp_path: Path) -> None:
    items = clustered(3000, 16, seed=4)
    queries = {"table": clustered(50, 16, seed=5)}
    # below the threshold: exact, and a stale folder from an earlier build is removed
    (tmp_path / ANN_DIR).mkdir()
    (tmp_path / ANN_DIR / "table.faiss").write_bytes(b"stale")
    assert write_catalog_indexes(tmp_path, {"table": items}, queries, min_items=10_000) == {}
    assert not (tmp_path / ANN_DIR).exists()
    _, kind = catalog_index(tmp_path, "table", items, min_items=1000)
    assert kind == "exact"  # at the threshold but never built: exact, not a build at start
    manifest = write_catalog_indexes(tmp_path, {"table": items}, queries, min_items=1000)
    ef = manifest["indexes"]["table"]["ef_search"]
    assert json.loads((tmp_path / ANN_DIR / MANIFEST).read_text()) == manifest
    index, kind = catalog_index(tmp_path, "table", items, min_items=1000)
    assert kind == "hnsw" and index.ntotal == 3000 and index.hnsw.efSearch == ef
    # an index of another catalog (the version changed under it) is not trusted
    _, kind = catalog_index(tmp_path, "table", items[:2000], min_items=1000)
    assert kind == "exact"


@pytest.fixture
def version_copy(served: Any, tmp_path: Path) -> Path:
    """The served sample version, copied: the session's version stays as the other tests expect."""
    return Path(shutil.copytree(served.version_dir, tmp_path / "version"))


def test_engine_serves_the_built_hnsw_index_like_exact(
    served: Any, version_copy: Path, tmp_path: Path
) -> None:
    from serving.engine import ServingModel

    manifest = prepare_version(version_copy, min_items=10)
    assert set(manifest["indexes"]) == {"table", "unit_table", "text"}
    for name, record in manifest["indexes"].items():
        assert (version_copy / ANN_DIR / f"{name}.faiss").is_file()
        assert record["recall_at_10"] >= 0.95, (name, record)
    approx = ServingModel(version_copy, tag=served.tag, log_dir=tmp_path / "logs", ann_min_items=10)
    exact = ServingModel(version_copy, tag=served.tag, log_dir=tmp_path / "logs", ann_min_items=10**9)
    assert approx.index_kinds == {"table": "hnsw", "unit_table": "hnsw", "text": "hnsw"}
    assert exact.index_kinds == {"table": "exact", "unit_table": "exact", "text": "exact"}
    users = sorted(served.examples["user_id"].unique())[:10]
    overlaps = []
    for user in users:
        history = served.history(user)[:-1]
        a = [i["item_id"] for i in approx.recommend(None, history, 10, True)["items"]]
        b = [i["item_id"] for i in exact.recommend(None, history, 10, True)["items"]]
        assert len(a) == len(b) == 10
        overlaps.append(len(set(a) & set(b)) / 10)
    for item in [served.history(u)[0] for u in users] + served.cold_items[:3]:
        a = [i["item_id"] for i in approx.similar(item, 10)["items"]]
        b = [i["item_id"] for i in exact.similar(item, 10)["items"]]
        overlaps.append(len(set(a) & set(b)) / 10)
    assert np.mean(overlaps) >= 0.95, overlaps
    # below the threshold the build leaves nothing behind
    assert prepare_version(version_copy, min_items=10**9) == {}
    assert not (version_copy / ANN_DIR).exists()


@pytest.mark.slow
def test_built_bento_carries_the_index_and_serves_from_it(served: Any, service_env: dict[str, str]) -> None:
    """The whole path: build_bento above the threshold writes ann/ into the version, the Bento
    references that version, and the served Bento answers (its log names the HNSW indexes it read)."""
    import yaml

    from ml import registry
    from serving.bento import build_bento, running_server

    settings = served.settings.model_copy(update={"serving_ann_min_items": 10})
    try:
        bento = build_bento(served.tag, settings)
        from bentoml._internal.configuration.containers import BentoMLContainer

        # BentoML 1.4 keeps a local Bento's models in the model store and lists them in bento.yaml
        # (they are copied in only on export or containerize): the index must be in that version.
        info = yaml.safe_load(
            (Path(BentoMLContainer.bento_store.get().get(bento).path) / "bento.yaml").read_text()
        )
        [model] = [m["tag"] for service in info["services"] for m in service["models"]]
        assert model == served.tag
        index = registry.get(model, settings).path / ANN_DIR / "table.faiss"
        assert index.stat().st_size > 0, f"no {index}"
        env = {"SHOPFLOW_SERVING_ANN_MIN_ITEMS": "10"}
        with running_server(bento, settings=settings, extra_env=env) as server:
            import httpx

            history = served.history(sorted(served.examples["user_id"].unique())[0])
            answer = httpx.post(f"{server.base_url}/recommend", json={"recent_items": history, "k": 5}).json()
            assert len(answer["items"]) == 5
        assert "hnsw" in server.log_path.read_text()
    finally:
        prepare_version(served.version_dir, min_items=10**9)  # the session's version as it was


def test_user_vectors_precomputed_at_build_are_what_warm_up_computes(
    served: Any, version_copy: Path, tmp_path: Path
) -> None:
    from serving.engine import ServingModel
    from serving.index import PRECOMPUTED_DIR, USER_VECTORS, read_user_vectors

    # On a copy without precomputed vectors: a Bento built earlier in the session (test_serve.py)
    # wrote them into the session's version, and this test must compute them itself.
    shutil.rmtree(version_copy / PRECOMPUTED_DIR, ignore_errors=True)
    computed = ServingModel(version_copy, tag=served.tag, log_dir=tmp_path / "a")
    users = computed.warm_up()
    assert users > 0
    prepare_version(version_copy, min_items=10**9)
    assert (version_copy / PRECOMPUTED_DIR / USER_VECTORS).is_file()
    stored = read_user_vectors(version_copy, len(computed.item_ids))
    assert len(stored) == users
    for key, vector in stored.items():
        np.testing.assert_allclose(vector, computed.user_cache.get(key), rtol=1e-4, atol=1e-5)
    read = ServingModel(version_copy, tag=served.tag, log_dir=tmp_path / "b")
    assert read.warm_up() == users
    some = next(iter(stored))
    np.testing.assert_array_equal(read.user_cache.get(some), stored[some])
    # a file of another catalog is not trusted
    assert read_user_vectors(version_copy, len(computed.item_ids) + 1) == {}
