"""The running Bento follows the champion pointer (issue 14 item 7; issue 16's corrupt version).

The session's trained model (tests/serving/conftest.py: served) is registered again under new tags
in a store of each test's own, so promotions and rollbacks here never move the champion the other
serving tests read. A corrupt version is a registered copy whose weights file is overwritten.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from ml import registry
from ml.core.settings import PROJECT_DIR, Settings


def _copy_version(served: Any, settings: Settings) -> str:
    """The session's model registered again in ``settings``' store (a new tag, same files)."""
    source = registry.get(served.tag, served.settings)
    version = registry.register(
        source.path,
        metrics=source.metrics,
        config=source.metadata.get("config", {}),
        lineage={"run_id": "hot-swap-test"},
        settings=settings,
    )
    return version.tag


def _corrupt(tag: str, settings: Settings) -> None:
    """Overwrite the version's weights with bytes safetensors cannot read (a broken copy, a bad disk)."""
    weights = registry.get(tag, settings).path / "model" / "model.safetensors"
    assert weights.exists(), weights
    weights.write_bytes(b"\x00not a safetensors file" * 64)


@pytest.fixture
def own_store(tmp_path: Path, served: Any) -> tuple[Settings, str, str]:
    """A store of this test's own with two copies of the served model, the first the champion."""
    settings = Settings(work_dir=tmp_path / "work", data_dir=PROJECT_DIR / "data", pii_salt="test-salt")  # type: ignore[arg-type]
    first, second = _copy_version(served, settings), _copy_version(served, settings)
    registry.promote(first, settings, reason="test: first champion")
    return settings, first, second


def test_follower_swaps_refuses_a_corrupt_version_and_follows_rollbacks(
    own_store: tuple[Settings, str, str], served: Any
) -> None:
    """In-process, the real ServingModel: swap, refusal (kept serving, reason, no retry), rollback."""
    from serving.engine import ServingModel
    from serving.hot_swap import ChampionFollower

    settings, first, second = own_store
    loads: list[str] = []
    published: list[str] = []

    def load(tag: str) -> ServingModel:
        loads.append(tag)
        version = registry.get(tag, settings)
        engine = ServingModel(version.path, tag=version.tag, log_dir=settings.work_dir / "smoke")
        engine.warm_up()
        return engine

    current = load(first)
    follower = ChampionFollower(
        current,
        lambda: registry.champion(settings),
        load,
        lambda engine: published.append(engine.tag),
        interval_s=1.0,
    )
    user = str(served.examples["user_id"].iloc[0])
    assert follower.check() == "unchanged" and loads == [first]

    registry.promote(second, settings, reason="test: challenger")
    assert follower.check() == "swapped"
    assert follower.engine.tag == second and published == [second]
    assert follower.engine.recommend(recent_items=served.history(user), k=3)["model_version"] == second
    swap = follower.status()["swaps"][-1]
    assert (swap["from"], swap["to"]) == (first, second)
    assert set(swap["smoke"]) == {"recommend", "search", "similar"}

    broken = _copy_version(served, settings)
    _corrupt(broken, settings)
    registry.promote(broken, settings, reason="test: a corrupt version promoted")
    assert follower.check() == "refused"
    status = follower.status()
    assert status["model_version"] == second and status["champion"] == broken
    assert status["refused"]["tag"] == broken
    assert status["refused"]["reason"].startswith("failed to load")
    # Still answering with the version it had; a refused tag is not reloaded at every poll.
    assert follower.engine.recommend(recent_items=served.history(user), k=3)["model_version"] == second
    assert follower.check() == "refused" and loads.count(broken) == 1

    assert registry.rollback(settings, reason="test: away from the corrupt version") == second
    assert follower.check() == "unchanged" and follower.status()["refused"] is None
    assert registry.rollback(settings, reason="test: back to the first") == first
    assert follower.check() == "swapped" and follower.engine.tag == first
    assert published == [second, first]


def test_a_version_that_loads_but_answers_nonsense_fails_the_smoke_queries(
    own_store: tuple[Settings, str, str], served: Any
) -> None:
    """NaN weights load fine; the smoke queries (train DAG's list, in-process) catch them."""
    from safetensors.torch import load_file, save_file

    from serving.engine import ServingModel
    from serving.hot_swap import smoke_engine

    settings, first, second = own_store
    weights = registry.get(second, settings).path / "model" / "model.safetensors"
    tensors = load_file(str(weights))
    save_file(
        {
            name: t.float().fill_(float("nan")).to(t.dtype) if t.is_floating_point() else t
            for name, t in tensors.items()
        },
        str(weights),
    )
    good = ServingModel(registry.get(first, settings).path, tag=first, log_dir=settings.work_dir / "smoke")
    assert smoke_engine(good)["model_version"] == first
    nan = ServingModel(weights.parent.parent, tag=second, log_dir=settings.work_dir / "smoke")
    with pytest.raises(RuntimeError, match=r"non-finite|no items"):
        smoke_engine(nan)
    assert np.isnan(nan.table).any()


def test_the_served_bento_swaps_under_load_with_no_failed_request(
    own_store: tuple[Settings, str, str], served: Any, service_env: dict[str, str]
) -> None:
    """`bentoml serve` under 16 closed-loop clients: promote → swap, corrupt → refused, rollback → swap.

    Every request answers 200 through all of it, and the request log shows both versions answering.
    """
    from serving.bento import running_server
    from serving.loadtest import run_cell

    settings, first, second = own_store
    user = str(served.examples["user_id"].iloc[0])
    payloads = [{"recent_items": served.history(user), "k": 5}, {"user_id": user, "k": 5}]
    env = {"SHOPFLOW_SERVING_FOLLOW_CHAMPION_S": "0.5"}
    with (
        running_server(settings=settings, extra_env=env) as server,
        httpx.Client(base_url=server.base_url, timeout=30) as http,
    ):

        def version() -> dict[str, Any]:
            answer = http.get("/version")
            assert answer.status_code == 200, answer.text
            return dict(answer.json())

        def wait_for(condition: Any, what: str, timeout_s: float = 60.0) -> dict[str, Any]:
            deadline = time.monotonic() + timeout_s
            while not condition(state := version()):
                assert time.monotonic() < deadline, f"{what}: {state}"
                time.sleep(0.2)
            return state

        assert version()["model_version"] == first and version()["following_champion"] is True
        # The load runs until the last swap was seen (60 s is only the upper bound).
        cells: list[Any] = []
        done = threading.Event()
        load = threading.Thread(
            target=lambda: cells.append(
                run_cell(server.base_url, "recommend", payloads, 16, 60.0, warmup_s=0.0, stop_event=done)
            )
        )
        load.start()
        try:
            time.sleep(0.5)
            registry.promote(second, settings, reason="test: promoted while under load")
            wait_for(lambda s: s["model_version"] == second, "the promoted version never served")
            broken = _copy_version(served, settings)
            _corrupt(broken, settings)
            registry.promote(broken, settings, reason="test: a corrupt version promoted under load")
            state = wait_for(
                lambda s: (s["refused"] or {}).get("tag") == broken, "the corrupt version not refused"
            )
            assert state["model_version"] == second and "failed to load" in state["refused"]["reason"]
            registry.rollback(settings, reason="test: away from the corrupt version")
            registry.rollback(settings, reason="test: back to the first")
            wait_for(lambda s: s["model_version"] == first, "the rollback never reached the server")
            assert load.is_alive(), "the load ended before the last swap: raise its upper bound"
            time.sleep(0.5)  # requests answered by the version swapped in last
        finally:
            done.set()
            load.join(60)
        swaps = version()["swaps"]
    cell = cells[0]
    assert cell.errors == 0 and cell.requests > 100, cell
    assert [(s["from"], s["to"]) for s in swaps] == [(first, second), (second, first)]
    answered = {
        json.loads(line)["model_version"]
        for f in (settings.work_dir / "serving_logs").glob("requests-*.jsonl")
        for line in f.read_text().splitlines()
        if line.strip()
    }
    assert answered == {first, second}
    print(f"swap under load: {cell.requests} requests, 0 errors, p99 {cell.p99_ms} ms; swaps {swaps}")
