"""/bundle and the explanations of /recommend through the real Bento (the session's live server).

The sample champion is packaged as register_challenger packages a version: its bundles and
explanation cache (template copy: no generator in the gate) travel with it.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import pandas as pd
import pytest

from ml.generation import bundles as b
from ml.generation.grounding import check


@pytest.fixture(scope="module")
def catalog(served: Any) -> b.BundleCatalog:
    return b.BundleCatalog(pd.read_parquet(served.version_dir / b.BUNDLES_DIR / b.CATALOG_FILE))


def _assert_sensible(body: dict[str, Any], catalog: b.BundleCatalog, size: int) -> None:
    items = body["items"]
    assert 2 <= len(items) <= size
    assert all(i["item_id"] in catalog.index for i in items)  # catalog items only
    leaves = [b.leaf_category(i["category"]) for i in items]
    assert None not in leaves and len(set(leaves)) == len(leaves), leaves  # no substitutes
    prices = [i["price"] for i in items]
    assert all(p is not None and p > 0 for p in prices)
    assert body["total_price"] == pytest.approx(sum(prices), abs=0.011)
    facts = b.bundle_facts(catalog, b.Bundle("x", tuple(i["item_id"] for i in items), (), None))
    assert check(body["name"], facts, kind="bundle_name"), body["name"]
    assert check(body["description"], facts, kind="bundle_description"), body["description"]


def test_bundle_for_a_catalog_item_and_for_a_brand_new_item(
    live_server: Any, served: Any, catalog: Any
) -> None:
    packaged = pd.read_parquet(served.version_dir / b.BUNDLES_DIR / b.BUNDLES_FILE)
    seed = str(packaged.loc[packaged["item_ids"].map(len) == 3, "seed"].iloc[0])
    with httpx.Client(base_url=live_server.base_url, timeout=60) as http:
        known = http.post("/bundle", json={"item_id": seed, "size": 3})
        new = http.post(
            "/bundle",
            json={
                "title": "Velvet Matte Lipstick, Cherry Red",
                "category": "Beauty > Makeup > Lips > Lipstick",
                "price": 8.5,
                "size": 3,
            },
        )
    assert known.status_code == 200, known.text
    body = known.json()
    assert (body["basis"], body["strategy"], body["seed_item_id"]) == ("item", "packaged", seed)
    assert body["items"][0]["item_id"] == seed and body["items"][0]["source"] == "seed"
    _assert_sensible(body, catalog, 3)

    assert new.status_code == 200, new.text
    body = new.json()
    assert (body["basis"], body["strategy"], body["seed_item_id"]) == ("new_item", "embeddings", None)
    assert body["copy_status"] == "template"
    assert {i["source"] for i in body["items"]} == {"embedding"}
    assert all(b.leaf_category(i["category"]) != "Lipstick" for i in body["items"])
    _assert_sensible(body, catalog, 3)


def test_recommend_reasons_are_grounded_sentences_about_a_history_item(
    live_server: Any, served: Any, catalog: Any
) -> None:
    user = str(served.examples["user_id"].iloc[0])
    history = served.history(user)
    with httpx.Client(base_url=live_server.base_url, timeout=60) as http:
        response = http.post("/recommend", json={"user_id": user, "k": 5})
    assert response.status_code == 200, response.text
    for item in response.json()["items"]:
        assert item["reason_copy"] == "template"  # the sample's package has template copy
        found = re.fullmatch(r"(?P<text>.+) \(you interacted with (?P<seen>\S+)\)", item["reason"])
        assert found is not None, item["reason"]
        assert found["seen"] in history
        facts = b.explanation_facts(
            catalog.facts[catalog.index[item["item_id"]]], catalog.facts[catalog.index[found["seen"]]]
        )
        assert check(found["text"], facts, kind="explanation"), found["text"]


def test_copy_the_package_lacks_is_written_by_the_generator_on_the_request_path(
    served: Any, catalog: Any, tiny_base: Any, tmp_path: Any
) -> None:
    """The engine with a generator writing request-path copy (the Bento's live copy; the tiny
    random Llama writes noise, so its texts fail the check and the template is served for them)."""
    from ml.generation.live import LiveCopy
    from ml.generation.load import load_generator
    from serving.engine import ServingError, ServingModel

    engine = ServingModel(served.version_dir, tag=served.tag, log_dir=tmp_path / "logs")
    generator = load_generator(tiny_base, device="cpu")
    engine.live_copy = LiveCopy(lambda: "tiny", lambda _tag: generator, budget_s=60)
    packaged = pd.read_parquet(served.version_dir / b.BUNDLES_DIR / b.BUNDLES_FILE)
    seed = str(packaged.loc[packaged["item_ids"].map(len) == 3, "seed"].iloc[0])
    # Size 2 was not packaged: built now, its copy written within the budget.
    body = engine.bundle(item_id=seed, size=2)
    assert body["strategy"] == "embeddings"
    assert body["copy_status"] in {"generated", "fallback"}
    _assert_sensible(body, catalog, 2)

    unpriced = next(i for i in catalog.item_ids[1:] if not catalog.priced(catalog.index[i]))
    with pytest.raises(ServingError, match=r"has no price .*a bundle has a total"):
        engine.bundle(item_id=unpriced)

    user = str(served.examples["user_id"].iloc[0])
    engine.recommend(user_id=user, k=5)  # the misses are queued, never waited for
    assert engine.live_copy.idle(timeout=60)
    again = engine.recommend(user_id=user, k=5)
    assert {i["reason_copy"] for i in again["items"]} <= {"generated", "fallback"}
    for item in again["items"]:
        found = re.fullmatch(r"(?P<text>.+) \(you interacted with (?P<seen>\S+)\)", item["reason"])
        assert found is not None, item["reason"]
        facts = b.explanation_facts(
            catalog.facts[catalog.index[item["item_id"]]], catalog.facts[catalog.index[found["seen"]]]
        )
        assert check(found["text"], facts, kind="explanation"), found["text"]
    assert engine.live_copy.stats()["written"] == 2 + len(again["items"])
