"""Tier 3: `bentoml serve` as a real server process, called over the network."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from pydantic import SecretStr


def test_bentoml_serve_answers_every_endpoint(served: Any, live_server: Any) -> None:
    """The session's `bentoml serve` (tests/serving/conftest.py: live_server) answers each endpoint."""
    base = live_server.base_url
    with httpx.Client(base_url=base, timeout=30) as http:
        user = str(served.examples["user_id"].iloc[0])
        item = str(served.examples["item_id"].iloc[0])
        rec = http.post("/recommend", json={"user_id": user, "k": 5})
        assert rec.status_code == 200 and rec.json()["model_version"] == served.tag
        assert http.post("/recommend", json={"recent_items": [item], "k": 2}).status_code == 200
        assert len(http.post("/similar", json={"item_id": item, "k": 3}).json()["items"]) == 3
        assert http.post("/similar", json={"item_id": "NOPE"}).status_code == 404
        assert len(http.post("/search", json={"query": "mascara", "k": 2}).json()["items"]) == 2
        batch = http.post("/search_batch", json={"queries": [{"query": "perfume", "k": 1}]})
        assert batch.status_code == 200 and len(batch.json()) == 1
        assert http.post("/recommend", json={"user_id": user, "k": 1000}).status_code == 400
        assert http.get("/metrics").status_code == 200
        # Concurrent single-query batch requests are merged by the dispatcher; each gets its own.
        queries = ["lipstick", "shampoo", "perfume", "nail polish", "mascara", "eye liner", "soap", "gel"]
        with ThreadPoolExecutor(len(queries)) as pool:
            answers = list(
                pool.map(
                    lambda q: http.post("/search_batch", json={"queries": [{"query": q, "k": 1}]}),
                    queries,
                )
            )
        assert [a.status_code for a in answers] == [200] * len(queries)
        assert [a.json()[0]["query"] for a in answers] == queries
        # The load client (serving/loadtest.py) against the real server: closed loop, no errors.
        from serving.loadtest import run_cell

        cell = run_cell(base, "recommend", [{"user_id": user, "k": 5}], 4, 1.0, warmup_s=0.2)
        assert cell.requests > 10 and cell.errors == 0, cell
        assert 0 < cell.p50_ms <= cell.p99_ms <= cell.max_ms
    print(f"bentoml serve ready in {live_server.ready_s:.1f} s")
    # Every answered request is logged (the log may flush off the request path: wait a little).
    logs = served.settings.work_dir / "serving_logs"
    deadline = time.monotonic() + 10
    while True:
        endpoints = {
            json.loads(line)["endpoint"]
            for f in logs.glob("requests-*.jsonl")
            for line in f.read_text().splitlines()
            if line.strip()
        }
        if {"recommend", "similar", "search"} <= endpoints or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert {"recommend", "similar", "search"} <= endpoints


def test_a_token_guards_the_real_server_and_clients_send_it(served: Any, service_env: dict[str, str]) -> None:
    """SHOPFLOW_SERVING_API_TOKEN on `bentoml serve`: 401 without it, probes and /metrics open,
    and the load client sends it from the settings."""
    from serving.bento import running_server
    from serving.client import auth_headers
    from serving.loadtest import run_cell

    settings = served.settings.model_copy(update={"serving_api_token": SecretStr("real-server-token")})
    with running_server(settings=settings) as server, httpx.Client(base_url=server.base_url) as http:
        refused = http.post("/recommend", json={"user_id": "u", "k": 1})
        assert refused.status_code == 401 and "missing credentials" in refused.json()["error"]
        wrong = http.post("/search", json={"query": "soap"}, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and "invalid credentials" in wrong.json()["error"]
        for probe in ("/livez", "/readyz", "/metrics"):
            assert http.get(probe).status_code == 200, probe
        cell = run_cell(
            server.base_url, "search", [{"query": "soap", "k": 1}], 2, 0.5, 0.1, auth_headers(settings)
        )
        assert cell.requests > 0 and cell.errors == 0, cell
        unauthenticated = run_cell(server.base_url, "search", [{"query": "soap", "k": 1}], 1, 0.3, 0)
        assert unauthenticated.errors == unauthenticated.requests > 0
        assert unauthenticated.error_examples[0].startswith("401")


def test_built_bento_passes_the_smoke_query(served: Any, service_env: dict[str, str]) -> None:
    """What the training DAG runs before promotion: build the Bento around a tag, serve it, query it.

    With a token configured: the Bento's server gets it and the smoke query sends it."""
    from serving.bento import build_bento, smoke_query

    started = time.monotonic()
    bento = build_bento(served.tag, served.settings)
    built_s = time.monotonic() - started
    assert bento.startswith("shopflow:")
    settings = served.settings.model_copy(update={"serving_api_token": SecretStr("smoke-token")})
    result = smoke_query(bento, settings=settings)
    assert result["model_version"] == served.tag
    assert {e["status"] for e in result["endpoints"].values()} == {200}
    print(f"bento built in {built_s:.1f} s, ready in {result['ready_s']} s: {result['endpoints']}")
