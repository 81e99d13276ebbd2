"""Property test: requests generated from the service's own OpenAPI never get a server error."""

from __future__ import annotations

from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from starlette.testclient import TestClient

OURS = {"/recommend", "/similar", "/search", "/search_batch"}


def test_generated_requests_never_get_a_server_error(http_client: TestClient) -> None:
    # Not from_asgi: its client runs the app's lifespan per call, whose shutdown drops the
    # service instance, and a new event loop breaks the batching dispatcher (see conftest).
    client = http_client
    schema = schemathesis.openapi.from_dict(client.get("/docs.json").json())
    # Our endpoints only: BentoML's own /metrics needs the multiprocess directory that
    # `bentoml serve` creates (tests/serving/test_serve.py calls it there).
    operations = [result.ok() for result in schema.get_all_operations()]
    operations = [op for op in operations if op.path in OURS]
    assert {op.path for op in operations} == OURS
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def call(case: Any) -> None:
            kwargs = case.as_transport_kwargs(base_url="http://testserver")
            if "data" in kwargs:  # requests' name for a raw body; httpx calls it content
                kwargs["content"] = kwargs.pop("data")
            response = client.request(**kwargs)
            case.validate_response(response, checks=[not_a_server_error])

        call()
