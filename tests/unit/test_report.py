"""The run report: exact Markdown table, JSON round trip, real PNG plots."""

from __future__ import annotations

import json
from pathlib import Path

from ml.training.report import markdown_table, write_run_report

MODELS = {
    "shopflow": {"recall@10": 0.0812, "ndcg@10": 0.04321, "mrr": 0.035, "train_seconds": 120.4},
    "popularity": {"recall@10": 0.0101, "ndcg@10": 0.0052, "mrr": 0.004, "train_seconds": 0.2},
}


def test_markdown_table_has_one_row_per_model_and_dashes_for_missing() -> None:
    table = markdown_table(MODELS, metrics=("recall@10", "ndcg@10", "ndcg@20"))
    assert table.splitlines() == [
        "| model | recall@10 | ndcg@10 | ndcg@20 | train s |",
        "|---|---|---|---|---|",
        "| shopflow | 0.0812 | 0.0432 | – | 120 |",
        "| popularity | 0.0101 | 0.0052 | – | 0 |",
    ]


def test_report_writes_json_markdown_and_png_plots(tmp_path: Path) -> None:
    history = [
        {"epoch": 1.0, "loss": 5.0, "val_ndcg@10": 0.01},
        {"epoch": 2.0, "loss": 4.2, "val_ndcg@10": 0.02},
    ]
    paths = write_run_report(tmp_path / "report", models=MODELS, history=history, extra={"split": "loo"})
    saved = json.loads(paths["json"].read_text())
    assert saved["models"] == MODELS and saved["history"] == history and saved["split"] == "loo"
    assert "| shopflow |" in paths["markdown"].read_text()
    for kind in ("loss_plot", "comparison_plot"):
        data = paths[kind].read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5_000


def test_report_without_history_has_no_loss_plot(tmp_path: Path) -> None:
    paths = write_run_report(tmp_path, models=MODELS, history=[])
    assert "loss_plot" not in paths and not (tmp_path / "loss.png").exists()
