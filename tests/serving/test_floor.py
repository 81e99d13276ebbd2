"""The bare-ASGI floor of the serving benchmark (serving/asgi_floor.py) answers as the Bento does.

Same engine, same request and response models: the same answers for the same bodies, and the
same refusals (strict types, limits) — else the benchmark would compare different work.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient


@pytest.fixture(scope="module")
def floor(served: Any, service_module: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from serving.asgi_floor import create_app
    from serving.engine import ServingModel

    engine = ServingModel(served.version_dir, tag=served.tag, log_dir=tmp_path_factory.mktemp("floor_logs"))
    engine.warm_up()
    with TestClient(create_app(engine)) as client:
        yield client


def test_floor_answers_what_the_bento_answers(
    floor: TestClient, served: Any, http_client: TestClient
) -> None:
    from serving.loadtest import bundle_payloads

    user = str(served.examples["user_id"].iloc[0])
    item = served.history(user)[0]
    for path, body in [
        ("/recommend", {"user_id": user, "k": 5}),
        ("/recommend", {"recent_items": [item], "k": 3}),
        ("/similar", {"item_id": item, "k": 4}),
        ("/search", {"query": "mascara", "k": 3}),
        # The benchmark's /bundle bodies: packaged seeds at their packaged size.
        *[("/bundle", body) for body in bundle_payloads(served.version_dir, n=2)],
    ]:
        ours, bento = floor.post(path, json=body), http_client.post(path, json=body)
        assert ours.status_code == bento.status_code == 200, (path, ours.text, bento.text)
        assert ours.json() == bento.json(), path
    assert floor.get("/readyz").status_code == 200


def test_floor_refuses_what_the_bento_refuses(floor: TestClient, http_client: TestClient) -> None:
    for path, body in [
        ("/recommend", {"user_id": "u", "k": "10"}),  # strict: a string is not an int
        ("/recommend", {"k": 5}),  # neither a user nor a history
        ("/search", {"query": "   "}),  # blank
        ("/similar", {"item_id": "x", "k": 1000}),  # over MAX_K
    ]:
        ours, bento = floor.post(path, json=body), http_client.post(path, json=body)
        assert ours.status_code == bento.status_code == 400, (path, ours.text, bento.text)
        assert set(ours.json()) == {"error"}
    unknown = floor.post("/similar", json={"item_id": "NOPE", "k": 1})
    assert unknown.status_code == 404 and "unknown item_id" in unknown.json()["error"]


def test_floor_command_has_help_and_names_a_wrong_folder(tmp_path: Path) -> None:
    from serving.asgi_floor import main

    with pytest.raises(SystemExit) as exit_help:
        main(["--help"])
    assert exit_help.value.code == 0
    with pytest.raises(SystemExit) as wrong:
        main(["--model-dir", str(tmp_path), "--log-dir", str(tmp_path / "logs")])
    assert wrong.value.code == 2


@pytest.mark.skipif(
    shutil.which("wrk") is None,
    reason="wrk not installed: make test and make bench-serving install it from Debian's packages",
)
def test_wrk_drives_the_served_bento_and_reports_its_own_cpu(served: Any, live_server: Any) -> None:
    """The benchmark's load generator (wrk + bench/wrk/post_json.lua) against the session's Bento."""
    from serving.loadtest import run_wrk_cell

    user = str(served.examples["user_id"].iloc[0])
    payloads = [{"user_id": user, "k": 3}, {"recent_items": served.history(user)[:2], "k": 3}]
    cell = run_wrk_cell(live_server.base_url, "recommend", payloads, 2, 1.0, warmup_s=0)
    assert cell.client == "wrk" and cell.errors == 0 and cell.requests > 5, cell
    assert 0 < cell.p50_ms <= cell.p99_ms <= cell.max_ms
    assert cell.client_cpu_s is not None and 0 <= cell.client_cpu_s < cell.seconds  # ~ms per s here
    refused = run_wrk_cell(live_server.base_url, "recommend", [{"k": 3}], 1, 1.0, warmup_s=0)
    assert refused.requests > 0 and refused.errors == refused.requests  # 400s count as errors
