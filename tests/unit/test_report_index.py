"""The index page links every report under the work dir, with relative links that resolve."""

from __future__ import annotations

import re
from pathlib import Path

from ml.core.settings import Settings
from ml.flows.report_index import write_report_index
from ml.training.report import write_run_report


def _links(page: Path) -> list[Path]:
    return [page.parent / href for href in re.findall(r'href="([^"]+)"', page.read_text())]


def test_index_links_every_report_with_relative_paths(settings: Settings) -> None:
    dbt_docs = settings.work_dir / "dbt" / "target" / "static_index.html"
    data_docs = settings.gx_dir / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html"
    drift = settings.reports_dir / "monitoring" / "scheduled__2011-03-01" / "data_drift.html"
    for page in (dbt_docs, data_docs, drift):
        page.parent.mkdir(parents=True, exist_ok=True)
        page.write_text("<html></html>")
    write_run_report(
        settings.work_dir / "runs" / "manual__1" / "report",
        models={
            "shopflow": {"ndcg@10": 0.0464},
            "popularity": {"ndcg@10": 0.0075},
            "item_knn": {"ndcg@10": 0.039},
        },
        history=[
            {"epoch": 1, "loss": 2.0, "val_ndcg@10": 0.03},
            {"epoch": 2, "loss": 1.5, "val_ndcg@10": 0.04},
        ],
    )

    page, index = write_report_index(settings)

    assert page == settings.reports_dir / "index.html"
    links = _links(page)
    # dbt docs, Data Docs, one drift report, and the training run's comparison, loss plot and table
    assert index.count() == len(links) == 6
    assert all(link.resolve().is_file() for link in links)
    assert not any(Path(href).is_absolute() for href in re.findall(r'href="([^"]+)"', page.read_text()))
    text = page.read_text()
    assert "shopflow NDCG@10 0.0464 (best baseline item_knn 0.0390)" in text
    assert "scheduled__2011-03-01: data drift" in text
    assert not page.with_suffix(".html.tmp").exists()


def test_index_of_an_empty_work_dir_says_none_written(settings: Settings) -> None:
    page, index = write_report_index(settings)

    assert index.count() == 0
    assert page.read_text().count("none written yet") == len(index.sections) == 4
