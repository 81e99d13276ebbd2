"""/ask through the real Bento: the session's `bentoml serve` of the sample champion answers a
catalog question with the right item, and the in-process app refuses a product the shop lacks.

The served catalog is the sample champion's (a model version keeps item texts, so prices are
bands). The test store's generator cache is empty and the Bento never converts a GGUF itself, so these
answers are templates (the response says why) unless SHOPFLOW_GENERATOR_CACHE_DIR points at a
converted one; the generator's own answers are tested in tests/retrieval/test_assistant.py (slow)
and measured by `make bench-search`.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from ml.generation.grounding import short_title
from ml.retrieval.assistant import NO_MATCH
from ml.retrieval.facts import CatalogFacts


def _catalog_item(served: Any) -> tuple[str, str, str]:
    """(item id, title, brand) of a served item with a brand and a title of 3+ words."""
    from ml.modeling.model import load

    model = load(served.version_dir / "model")
    facts = CatalogFacts.from_texts(model.item_ids, model.item_texts)
    for i in range(1, len(facts)):
        brand, title = facts.brands[i], facts.titles[i]
        if brand and len(short_title(title).split()) >= 3 and facts.categories[i]:
            return facts.item_ids[i], title, brand
    raise AssertionError("the sample catalog has no branded item")


def test_ask_through_bentoml_serve_cites_the_right_item(served: Any, live_server: Any) -> None:
    item_id, title, brand = _catalog_item(served)
    with httpx.Client(base_url=live_server.base_url, timeout=60) as http:
        response = http.post("/ask", json={"question": f"Who makes the {short_title(title)}?"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_version"] == served.tag
    assert body["no_match"] is False and body["asked"] == "brand"
    assert body["items"][0]["item_id"] == item_id
    assert f"[{item_id}]" in body["answer"] and brand in body["answer"]
    # Generated only where the server's generator cache holds the converted checkpoint.
    assert body["strategy"] in ("template", "generated")
    assert body["fallback"] is (body["strategy"] == "template")
    if body["fallback"]:
        assert body["generator"] is None and body["note"]


def test_ask_refuses_a_product_the_shop_does_not_have(http_client: Any) -> None:
    response = http_client.post(
        "/ask",
        json={
            "question": "Do you sell the white hanging heart t-light holder?",
            "history": [{"role": "user", "content": "hello"}],
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["no_match"] is True and body["strategy"] == "no_match"
    assert body["items"] == [] and body["answer"] == NO_MATCH
    assert http_client.post("/ask", json={"question": "   "}).status_code == 400


def test_ask_keeps_its_openapi_contract(live_server: Any, tmp_path: Path) -> None:
    """schemathesis (all checks) on /ask alone: the request limits and nullable answers it declares
    are what the service does (tests/serving/test_contract.py does the same for the other paths)."""
    done = subprocess.run(
        [
            str(Path(sys.executable).with_name("schemathesis")),
            "run",
            f"{live_server.base_url}/docs.json",
            "--checks",
            "all",
            "--include-path-regex",
            "^/ask$",
            "--max-examples",
            "10",
            "--seed",
            "13",
            "--generation-database",
            "none",
            "--request-timeout",
            "60",
            "--no-color",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-6000:]
    assert "Tested: 1" in output, output[-3000:]
