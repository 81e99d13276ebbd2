"""The OpenAPI contract: the document says what the service does, and schemathesis checks it.

The schemathesis run is the one a client author would do (`schemathesis run .../docs.json`, all
checks) against the session's real `bentoml serve`, with few examples and a fixed seed so the gate
stays fast and repeatable; the rest pins the contract's edges through the in-process app.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from starlette.testclient import TestClient

OURS = ("/recommend", "/similar", "/search", "/search_batch", "/recommend_batch", "/similar_batch")
MAX_EXAMPLES = 10
SEED = 14


def test_schemathesis_all_checks_pass_against_the_served_bento(live_server: Any, tmp_path: Path) -> None:
    started = time.monotonic()
    done = subprocess.run(
        [
            str(Path(sys.executable).with_name("schemathesis")),
            "run",
            f"{live_server.base_url}/docs.json",
            "--checks",
            "all",
            "--include-path-regex",
            "^/(recommend|similar|search|search_batch|recommend_batch|similar_batch)$",
            "--max-examples",
            str(MAX_EXAMPLES),
            "--seed",
            str(SEED),
            "--generation-database",
            "none",
            "--request-timeout",
            "30",
            "--no-color",
        ],
        cwd=tmp_path,  # its report folder, if any, stays out of the repository
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-6000:]
    assert "Tested: 6" in output, output[-3000:]
    print(f"schemathesis: {time.monotonic() - started:.1f} s")


def test_document_requires_bodies_and_declares_each_error(http_client: TestClient) -> None:
    spec = http_client.get("/docs.json").json()
    assert spec["components"]["schemas"]["Error"]["required"] == ["error"]
    for path in OURS:
        operation = spec["paths"][path]["post"]
        assert operation["requestBody"]["required"] is True, path
        assert {"200", "400", "413", "415", "500"} <= set(operation["responses"]), path
    assert "404" in spec["paths"]["/similar"]["post"]["responses"]
    assert "404" not in spec["paths"]["/recommend"]["post"]["responses"]
    # Optional answers are documented as nullable (BentoML alone would say "string").
    answer = spec["paths"]["/recommend"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert answer["properties"]["note"] == {
        "default": None,
        "description": "Explains a cold-start answer; null otherwise.",
        "nullable": True,
        "title": "Note",
        "type": "string",
    }
    body = spec["paths"]["/recommend"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert [branch["required"] for branch in body["oneOf"]] == [["recent_items"], ["user_id"]]
    assert body["properties"]["user_id"]["nullable"] is True
    query = spec["components"]["schemas"]["SearchQuery"]["properties"]["query"]
    assert (query["minLength"], query["maxLength"], query["pattern"]) == (1, 512, r"[^ \t\n\r\f\v]")


def test_every_error_is_one_json_object_with_a_message(http_client: TestClient) -> None:
    cases = [
        ("/similar", {"item_id": "NOT-AN-ITEM"}, 404, "unknown item_id 'NOT-AN-ITEM'"),
        ("/recommend", {}, 400, "give a user_id or a non-empty recent_items list"),
        (
            "/recommend",
            {"user_id": "u", "k": "5"},
            400,
            "invalid request: k: Input should be a valid integer",
        ),
        (
            "/recommend",
            {"user_id": "u", "exclude_seen": 0},
            400,
            "exclude_seen: Input should be a valid boolean",
        ),
        ("/search", {"query": " \t "}, 400, "query is blank"),
        ("/search_batch", {"queries": [{"query": "soap", "k": 0}]}, 400, "queries.0.k: Input should be"),
        ("/similar", None, 400, "invalid request: item_id: Field required"),  # no body reads as {}
    ]
    for path, payload, status, message in cases:
        response = http_client.post(path, json=payload) if payload is not None else http_client.post(path)
        assert response.status_code == status, (path, payload, response.text)
        body = response.json()
        assert isinstance(body, dict) and set(body) == {"error"}, body
        assert message in body["error"], body


def test_a_non_blank_unicode_query_is_searched(http_client: TestClient) -> None:
    # The document's pattern allows it, so the service must too (its blank is ASCII white space).
    assert http_client.post("/search", json={"query": "\u3000", "k": 1}).status_code == 200


def test_oversized_bodies_are_refused_before_they_are_read(
    http_client: TestClient, service_module: Any
) -> None:
    limit = service_module.MAX_BODY_BYTES
    big = b'{"query": "' + b"x" * limit + b'"}'
    response = http_client.post("/search", content=big, headers={"content-type": "application/json"})
    assert response.status_code == 413 and response.json() == {"error": f"request body over {limit} bytes"}

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        for _ in range(4):
            yield b" " * (limit // 2)

    chunked = http_client.post("/search", content=chunks(), headers={"content-type": "application/json"})
    assert chunked.status_code == 413
    fine = http_client.post(
        "/search",
        content=iter([b'{"query": "soap",', b' "k": 1}']),
        headers={"content-type": "application/json"},
    )
    assert fine.status_code == 200, fine.text


def test_other_content_types_are_415_not_a_server_error(http_client: TestClient) -> None:
    response = http_client.post(
        "/search", content=b'{"query": "soap"}', headers={"content-type": "multipart/form-data; boundary=x"}
    )
    assert response.status_code == 415
    assert "application/json" in response.json()["error"]
    # A JSON content type with parameters is JSON.
    ok = http_client.post(
        "/search",
        content=b'{"query": "soap", "k": 1}',
        headers={"content-type": "application/json; charset=utf-8"},
    )
    assert ok.status_code == 200, ok.text
