"""Tier 2: the BentoML service over HTTP through its ASGI app (in-process, no server)."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.testclient import TestClient


@pytest.fixture(scope="module")
def client(http_client: TestClient) -> TestClient:
    return http_client


def error_text(response: Any) -> str:
    """The message of an error body: one object, ``{"error": <message>}`` (the documented shape)."""
    body = response.json()
    assert isinstance(body, dict) and isinstance(body["error"], str), body
    return str(body["error"]).lower()


def test_health_and_openapi(client: TestClient) -> None:
    assert client.get("/livez").status_code == 200
    assert client.get("/readyz").status_code == 200
    spec = client.get("/docs.json").json()
    assert {"/recommend", "/similar", "/search", "/search_batch"} <= set(spec["paths"])


def test_recommend_by_user_and_by_history(client: TestClient, served: Any) -> None:
    user = str(served.examples["user_id"].iloc[0])
    response = client.post("/recommend", json={"user_id": user, "k": 5})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_version"] == served.tag
    assert body["strategy"] == "personalized"
    assert len(body["items"]) == 5
    assert set(body["items"][0]) == {"item_id", "title", "score", "reason", "reason_copy"}
    anon = client.post("/recommend", json={"recent_items": served.history(user)[:2], "k": 3})
    assert anon.status_code == 200 and len(anon.json()["items"]) == 3


def test_unknown_user_is_a_cold_start_not_an_error(client: TestClient) -> None:
    response = client.post("/recommend", json={"user_id": "stranger", "k": 4})
    assert response.status_code == 200
    assert response.json()["strategy"] == "cold_start_popular"
    assert "unknown" in response.json()["note"]


@pytest.mark.parametrize(
    ("payload", "hint"),
    [
        ({"user_id": "u", "k": 0}, "k"),
        ({"user_id": "u", "k": 101}, "k"),
        ({}, "user_id"),
        ({"recent_items": []}, "recent_items"),
        ({"recent_items": [f"i{n}" for n in range(201)]}, "recent_items"),
        ({"user_id": "u", "k": "ten"}, "k"),
    ],
)
def test_bad_recommend_requests_are_4xx_with_a_message(
    client: TestClient, payload: dict[str, Any], hint: str
) -> None:
    response = client.post("/recommend", json=payload)
    assert 400 <= response.status_code < 500, response.text
    assert hint in error_text(response)


def test_similar_and_unknown_item(client: TestClient, served: Any) -> None:
    item = str(served.examples["item_id"].iloc[0])
    response = client.post("/similar", json={"item_id": item, "k": 3})
    assert response.status_code == 200 and len(response.json()["items"]) == 3
    missing = client.post("/similar", json={"item_id": "NOT-AN-ITEM"})
    assert missing.status_code == 404
    assert "unknown item_id" in error_text(missing)


def test_search_and_its_limits(client: TestClient) -> None:
    response = client.post("/search", json={"query": "red lipstick", "k": 3})
    assert response.status_code == 200 and len(response.json()["items"]) == 3
    for bad in ({"query": ""}, {"query": "   "}, {"query": "x" * 513}, {"k": 3}):
        assert client.post("/search", json=bad).status_code == 400, bad


def test_search_batch_answers_each_query(client: TestClient) -> None:
    response = client.post(
        "/search_batch", json={"queries": [{"query": "shampoo", "k": 2}, {"query": "perfume", "k": 4}]}
    )
    assert response.status_code == 200, response.text
    assert [len(r["items"]) for r in response.json()] == [2, 4]


def test_batch_endpoints_answer_each_element(client: TestClient, served: Any) -> None:
    users = [str(u) for u in served.examples["user_id"].iloc[:2]]
    response = client.post(
        "/recommend_batch", json={"requests": [{"user_id": users[0], "k": 2}, {"user_id": users[1], "k": 4}]}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert [len(r["items"]) for r in body] == [2, 4]
    single = client.post("/recommend", json={"user_id": users[1], "k": 4}).json()
    assert [h["item_id"] for h in body[1]["items"]] == [h["item_id"] for h in single["items"]]
    assert client.post("/recommend_batch", json={"requests": [{"k": 2}]}).status_code == 400

    item = str(served.examples["item_id"].iloc[0])
    answers = client.post(
        "/similar_batch", json={"queries": [{"item_id": item, "k": 3}, {"item_id": "NOT-AN-ITEM"}]}
    )
    assert answers.status_code == 200, answers.text
    found, missing = answers.json()
    assert found["status"] == 200 and len(found["result"]["items"]) == 3 and found["error"] is None
    assert missing["status"] == 404 and missing["result"] is None and "/search" in missing["error"]
