"""The bearer token (SHOPFLOW_SERVING_API_TOKEN) through the service's ASGI app."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from ml.core.settings import get_settings

TOKEN = "s3cret-token-for-tests"


@pytest.fixture
def token(http_client: TestClient, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The token configured for the app's process (the middleware reads the settings per request)."""
    monkeypatch.setenv("SHOPFLOW_SERVING_API_TOKEN", TOKEN)
    get_settings.cache_clear()
    assert get_settings().serving_api_token is not None
    yield TOKEN
    monkeypatch.delenv("SHOPFLOW_SERVING_API_TOKEN")
    get_settings.cache_clear()


def test_without_a_token_setting_the_service_is_open(http_client: TestClient) -> None:
    assert get_settings().serving_api_token is None
    assert http_client.post("/search", json={"query": "soap", "k": 1}).status_code == 200


@pytest.mark.parametrize(
    ("headers", "says"),
    [
        ({}, "missing credentials"),
        ({"Authorization": "Bearer wrong-token"}, "invalid credentials"),
        ({"Authorization": TOKEN}, "invalid credentials"),  # no Bearer scheme
        ({"Authorization": f"Basic {TOKEN}"}, "invalid credentials"),
    ],
)
def test_endpoints_refuse_missing_or_wrong_tokens(
    http_client: TestClient, token: str, headers: dict[str, str], says: str
) -> None:
    for path, body in [
        ("/recommend", {"user_id": "someone", "k": 2}),
        ("/search", {"query": "soap", "k": 1}),
        ("/similar", {"item_id": "x"}),
        ("/search_batch", {"queries": [{"query": "soap"}]}),
    ]:
        response = http_client.post(path, json=body, headers=headers)
        assert response.status_code == 401, (path, response.text)
        assert says in response.json()["error"]
        assert "Authorization: Bearer" in response.json()["error"] or says == "invalid credentials"
        assert response.headers["www-authenticate"].startswith("Bearer")
    assert http_client.get("/docs.json", headers=headers).status_code == 401


def test_the_right_token_is_answered(http_client: TestClient, token: str) -> None:
    auth = {"Authorization": f"Bearer {token}"}
    response = http_client.post("/recommend", json={"user_id": "someone", "k": 2}, headers=auth)
    assert response.status_code == 200, response.text
    assert len(response.json()["items"]) == 2
    assert http_client.post("/search", json={"query": "soap", "k": 1}, headers=auth).status_code == 200
    assert "/recommend" in http_client.get("/docs.json", headers=auth).json()["paths"]


def test_probes_stay_open_with_a_token(http_client: TestClient, token: str) -> None:
    assert http_client.get("/livez").status_code == 200
    assert http_client.get("/healthz").status_code == 200
    assert http_client.get("/readyz").status_code == 200
    # /metrics is open too; it is called over a real `bentoml serve` in test_serve.py (the ASGI
    # app alone has no Prometheus multiprocess directory).
