"""The Bento SIGKILLed during traffic (issue 16, item 3): its clients get connection errors, not
broken answers; every request-log line it wrote parses and every answered request has its line
(the log is flushed line by line before the answer leaves); monitoring loads the log; the next
start serves.

A ``bentoml serve`` of the session's champion (tests/serving/conftest.py: ``served``) with its own
work dir, so its request log is this test's alone; four client threads send /recommend and /search
until the whole process group is killed. It sits here, beside the other fault tests
(tests/faults/), because the champion is a session fixture of tests/serving/.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from ml.core.settings import PROJECT_DIR, Settings
from ml.monitoring.request_logs import load_request_logs
from serving.bento import running_server

CLIENTS = 4


class Traffic:
    """Client threads sending requests until the server stops answering."""

    def __init__(self, base_url: str, items: list[str]) -> None:
        self.base_url, self.items = base_url, items
        self.answered = 0
        self.broken: list[str] = []  # answers that were not 200: a half-dead server's replies
        self.errors: list[BaseException] = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(CLIENTS)]

    def _run(self, n: int) -> None:
        with httpx.Client(base_url=self.base_url, timeout=60) as http:
            i = 0
            while True:
                i += 1
                if i % 2:
                    body: dict[str, Any] = {
                        "recent_items": self.items[(n + i) % len(self.items) :][:3],
                        "k": 5,
                    }
                    path = "/recommend"
                else:
                    path, body = "/search", {"query": "moisturizing face cream", "k": 5}
                try:
                    response = http.post(path, json=body)
                except httpx.TransportError as error:
                    with self.lock:
                        self.errors.append(error)
                    return
                with self.lock:
                    if response.status_code == 200:
                        self.answered += 1
                    else:
                        self.broken.append(f"{response.status_code} {response.text[:200]}")

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def join(self) -> None:
        for thread in self.threads:
            thread.join(timeout=120)
            assert not thread.is_alive(), "a client still gets answers after the kill"


def _log_lines(settings: Settings) -> list[dict[str, Any]]:
    text = "".join(p.read_text() for p in sorted(settings.serving_log_dir.glob("requests-*.jsonl")))
    assert text.endswith("\n"), "the last line was cut off"
    return [json.loads(line) for line in text.splitlines()]  # every line parses


def _settings(served: Any, tmp_path: Path) -> Settings:
    """The session champion's store, this test's own work dir (request log, warehouse)."""
    return Settings(
        work_dir=tmp_path / "work",
        data_dir=PROJECT_DIR / "data",
        bentoml_home=served.settings.bentoml_home,
        pii_salt="test-salt",  # type: ignore[arg-type]
    )


def _serve_then_kill(settings: Settings, items: list[str], least_answers: int) -> Traffic:
    with running_server(settings=settings) as server:
        traffic = Traffic(server.base_url, items)
        traffic.start()
        while True:
            with traffic.lock:
                if traffic.answered >= least_answers or traffic.errors:
                    break
            threading.Event().wait(0.05)
        os.killpg(server.process.pid, signal.SIGKILL)
        server.process.wait(timeout=30)
        assert server.process.returncode == -signal.SIGKILL
        traffic.join()
    return traffic


def _check(traffic: Traffic, settings: Settings, least_answers: int, batch: str) -> int:
    assert traffic.answered >= least_answers
    assert traffic.broken == []
    assert len(traffic.errors) == CLIENTS  # each client's last call: a connection error
    lines = _log_lines(settings)
    # Every answered request is in the log; at most the calls in flight at the kill are too.
    assert traffic.answered <= len(lines) <= traffic.answered + CLIENTS
    assert {line["endpoint"] for line in lines} == {"recommend", "search"}
    loaded = load_request_logs(batch, settings)
    assert loaded.rows == len(lines)
    return len(lines)


def _items(served: Any) -> list[str]:
    return [str(i) for i in served.examples["item_id"].drop_duplicates().head(40)]


def test_bento_killed_during_traffic_loses_no_answered_line(served: Any, tmp_path: Path) -> None:
    settings = _settings(served, tmp_path)
    traffic = _serve_then_kill(settings, _items(served), least_answers=20)
    _check(traffic, settings, 20, "after-kill")


@pytest.mark.slow
def test_bento_killed_twice_then_the_next_start_serves(served: Any, tmp_path: Path) -> None:
    settings = _settings(served, tmp_path)
    first = _serve_then_kill(settings, _items(served), least_answers=200)
    before = _check(first, settings, 200, "after-first-kill")
    # The next start appends to the same day's file after the killed server's last line.
    second = _serve_then_kill(settings, _items(served), least_answers=200)
    assert second.answered >= 200 and second.broken == []
    lines = _log_lines(settings)
    assert first.answered + second.answered <= len(lines) <= first.answered + second.answered + 2 * CLIENTS
    assert load_request_logs("after-second-kill", settings).rows == len(lines) - before
    with running_server(settings=settings) as server:
        answer = httpx.post(f"{server.base_url}/search", json={"query": "shampoo", "k": 3}, timeout=60)
        assert answer.status_code == 200 and answer.json()["items"]
