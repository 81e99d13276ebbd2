"""A /search query's e-mail addresses and phone numbers never reach the request log (issue 16)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from serving.engine import ServingModel


def test_a_search_query_is_logged_scrubbed(served: Any, tmp_path: Path) -> None:
    engine = ServingModel(served.version_dir, tag=served.tag, log_dir=tmp_path / "logs")
    query = "lipstick for jane.doe@example.com, call (212) 555-0123 or +44 20 7946 0958"
    try:
        answer = engine.search(query, k=3)
    finally:
        engine.log.close()
    assert answer["query"] == query  # the caller gets its own query back; only the log is scrubbed
    [log_file] = (tmp_path / "logs").glob("requests-*.jsonl")
    written = log_file.read_text()
    [line] = [json.loads(raw) for raw in written.splitlines()]
    assert line["endpoint"] == "search"
    assert line["request"]["query"] == "lipstick for [email], call [phone] or [phone]"
    for secret in ("jane.doe", "example.com", "555-0123", "7946"):
        assert secret not in written
