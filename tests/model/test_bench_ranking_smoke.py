"""bench/ranking.py runs end to end on a small slice (make bench-ranking is long and no other test
runs it: a refactor of ml/modeling once broke it unnoticed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT_DIR = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_ranking_benchmark_runs_on_a_slice_and_writes_every_model(tmp_path: Path) -> None:
    out = tmp_path / "ranking.json"

    def bench(ties: str, *more: str) -> dict:
        done = subprocess.run(
            [
                sys.executable,
                str(PROJECT_DIR / "bench" / "ranking.py"),
                *("--users", "300", "--epochs", "1", "--ties", ties, "--no-ablation", "--jobs", "2"),
                *("--work-dir", str(tmp_path / "work"), "--out", str(out), "--no-check", *more),
            ],
            cwd=PROJECT_DIR,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
        return json.loads(out.read_text())

    result = bench("file", "--refit")
    rows = result["tables"]["ties_file"]
    assert set(rows) == {"Popularity", "Item-kNN", "SASRec (ID-only)", "ShopFlow (text+ID)"}
    for name, row in rows.items():
        assert 0.0 <= row["ndcg@10"] <= row["recall@10"] <= 1.0, name
    assert result["configs"]["shopflow"]["loss"] == result["configs"]["sasrec"]["loss"]
    assert result["users"] == 300
    for name in ("SASRec (ID-only)", "ShopFlow (text+ID)"):  # refit for the epochs validation chose
        assert rows[name]["refit_epochs"] == 1 and "ndcg@10" in rows[name]["test_before_refit"], name

    # The shuffled table, trained by a second run (with another epoch budget), joins the first
    # run's table in the same file; the kept table keeps the settings it was trained with.
    merged = bench("shuffled", "--refit", "--merge", "--epochs", "2")
    assert merged["tables"]["ties_file"] == rows and set(merged["tables"]["ties_shuffled"]) == set(rows)
    assert merged["carried"] == {"ties_file": result["date"]}
    assert merged["configs"]["sasrec"]["epochs"] == 2
    assert merged["carried_configs"] == {
        "ties_file": {k: result["configs"][k] for k in ("sasrec", "shopflow")}
    }
    assert merged["targets_issue_11"] == result["targets_issue_11"]  # judged on the file-order table
