"""The load client's bounds and statistics (its HTTP runs are in test_serve.py, on a real server)."""

from __future__ import annotations

import math

import pytest

from serving.loadtest import check_bounds, format_table, percentiles_ms, run_cell, search_payloads


def test_only_bounded_loopback_loads_are_allowed() -> None:
    check_bounds("http://127.0.0.1:3000", 32, 60)
    check_bounds("http://localhost:3000", 1, 0.5)
    with pytest.raises(ValueError, match="loopback"):
        check_bounds("http://example.com:3000", 1, 1)
    with pytest.raises(ValueError, match="loopback"):
        check_bounds("http://10.0.0.5:3000", 1, 1)
    with pytest.raises(ValueError, match="concurrency"):
        check_bounds("http://127.0.0.1:3000", 1000, 1)
    with pytest.raises(ValueError, match="seconds"):
        check_bounds("http://127.0.0.1:3000", 1, 3600)
    with pytest.raises(ValueError, match="client"):
        run_cell("http://127.0.0.1:1", "search", search_payloads(), 1, 1, client="curl")


def test_percentiles_are_in_milliseconds() -> None:
    got = percentiles_ms([i / 1000 for i in range(1, 101)])  # 1..100 ms
    assert got["p50_ms"] == pytest.approx(50.5)
    assert got["p99_ms"] == pytest.approx(99.01)
    assert got["max_ms"] == 100.0
    assert all(math.isnan(v) for v in percentiles_ms([]).values())


def test_a_refused_connection_counts_as_errors_not_a_crash() -> None:
    from ml.core.net import free_port

    cell = run_cell(f"http://127.0.0.1:{free_port()}", "search", search_payloads(), 2, 0.3, warmup_s=0)
    assert cell.requests > 0 and cell.errors == cell.requests
    assert "ConnectionRefused" in cell.error_examples[0]
    assert "search" in format_table([cell])


def test_similar_and_bundle_bodies_come_from_the_version_folder(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import pandas as pd
    import pytest

    from ml.core.artifacts import HISTORIES_FILE
    from ml.generation.bundles import BUNDLES_DIR, BUNDLES_FILE
    from serving.loadtest import payloads_for

    pd.DataFrame(
        {"user_id": ["u1", "u1", "u2"], "item_id": ["A", "B", "A"], "position": [0, 1, 0]}
    ).to_parquet(tmp_path / HISTORIES_FILE)
    (tmp_path / BUNDLES_DIR).mkdir()
    pd.DataFrame({"seed": ["A", "B"], "item_ids": [["A", "C"], ["B", "C", "D"]]}).to_parquet(
        tmp_path / BUNDLES_DIR / BUNDLES_FILE
    )
    assert sorted(p["item_id"] for p in payloads_for("similar", tmp_path, k=4)) == ["A", "B"]
    assert sorted((p["item_id"], p["size"]) for p in payloads_for("bundle", tmp_path)) == [("A", 2), ("B", 3)]
    with pytest.raises(ValueError, match="bundle needs the served version"):
        payloads_for("bundle", None)
