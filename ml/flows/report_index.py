"""One page that links every report a run of the platform wrote: ``<reports_dir>/index.html``.

The reports live where their tools put them (dbt's ``static_index.html``, GX's Data Docs site,
Evidently's HTML per monitoring run, our training run reports); a person opening the work dir
should not have to know those paths. The page links them with relative paths, so the folder can
be copied or opened from disk on an offline machine (every linked report renders offline: the
Data Docs' CDN assets are vendored, dbt's static page and Evidently's HTML embed theirs).

Written at the end of ``make demo`` and by ``shopflow reports``; rewriting it is cheap (a scan of
the work dir) and atomic (a temporary file renamed over the old page).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html import escape
from pathlib import Path

from ml.core.settings import Settings, get_settings

INDEX_NAME = "index.html"


@dataclass
class Report:
    """One linked report: what it is, where it is, and when it was written."""

    title: str
    path: Path
    detail: str = ""

    @property
    def written(self) -> datetime:
        return datetime.fromtimestamp(self.path.stat().st_mtime, tz=UTC)


@dataclass
class ReportIndex:
    """The reports found under a work dir, grouped by the tool that wrote them."""

    sections: dict[str, list[Report]] = field(default_factory=dict)

    def count(self) -> int:
        return sum(len(reports) for reports in self.sections.values())


def _training_detail(report_dir: Path) -> str:
    """Our model's and the best baseline's test NDCG@10 from a run report's metrics.json."""
    metrics = report_dir / "metrics.json"
    if not metrics.exists():
        return ""
    try:
        data = json.loads(metrics.read_text())
    except (OSError, json.JSONDecodeError):
        return "metrics.json unreadable"
    models = data.get("models") or {}
    scores = {name: float(m["ndcg@10"]) for name, m in models.items() if "ndcg@10" in m}
    if not scores:
        return ""
    ours, *baselines = scores  # write_run_report puts ours first
    best = max(baselines, key=lambda name: scores[name], default=None)
    vs_best = f" (best baseline {best} {scores[best]:.4f})" if best else ""
    return f"{ours} NDCG@10 {scores[ours]:.4f}{vs_best}"


def find_reports(settings: Settings) -> ReportIndex:
    """Scan the work dir for every report a run writes, newest first within each section."""
    index = ReportIndex()

    def newest_first(reports: list[Report]) -> list[Report]:
        return sorted(reports, key=lambda r: r.path.stat().st_mtime, reverse=True)

    dbt_docs = settings.work_dir / "dbt" / "target" / "static_index.html"
    index.sections["Data transformations (dbt docs)"] = (
        [Report("dbt docs: models, tests and lineage", dbt_docs)] if dbt_docs.exists() else []
    )
    gx_sites = (
        sorted(settings.gx_dir.rglob("data_docs/local_site/index.html")) if settings.gx_dir.exists() else []
    )
    index.sections["Data quality (Great Expectations Data Docs)"] = [
        Report("GX Data Docs: every validation run of the raw and marts suites", site) for site in gx_sites
    ]
    training = []
    runs_dir = settings.work_dir / "runs"
    for report_dir in sorted(runs_dir.glob("*/report")) if runs_dir.exists() else []:
        for name, title in (("comparison.png", "model comparison"), ("loss.png", "loss and validation")):
            if (report_dir / name).exists():
                training.append(Report(f"{report_dir.parent.name}: {title}", report_dir / name))
        if (report_dir / "metrics.md").exists():
            detail = _training_detail(report_dir)
            training.append(
                Report(f"{report_dir.parent.name}: metrics table", report_dir / "metrics.md", detail)
            )
    index.sections["Training runs (ours vs the baselines, test split)"] = newest_first(training)
    monitoring_dir = settings.reports_dir / "monitoring"
    monitoring = [
        Report(f"{html.parent.name}: {html.stem.replace('_', ' ')}", html)
        for html in (sorted(monitoring_dir.glob("*/*.html")) if monitoring_dir.exists() else [])
    ]
    index.sections["Monitoring (Evidently drift reports per interval)"] = newest_first(monitoring)
    return index


def render_index(index: ReportIndex, page_dir: Path, title: str = "ShopFlow reports") -> str:
    """The index as a self-contained HTML page (no external assets) linking with relative paths."""
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(title)}</title>",
        "<style>body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}"
        "table{border-collapse:collapse;width:100%}td,th{text-align:left;padding:.25rem .5rem;"
        "border-bottom:1px solid #ddd}th{background:#f4f4f4}.none{color:#888}</style>",
        "</head><body>",
        f"<h1>{escape(title)}</h1>",
        f"<p>{index.count()} reports, page written {generated}. Links are relative: the folder "
        "opens from disk, offline.</p>",
    ]
    for section, reports in index.sections.items():
        parts.append(f"<h2>{escape(section)}</h2>")
        if not reports:
            parts.append('<p class="none">none written yet</p>')
            continue
        parts.append("<table><tr><th>report</th><th>written</th><th>summary</th></tr>")
        for report in reports:
            href = Path(os.path.relpath(report.path, page_dir)).as_posix()
            parts.append(
                f'<tr><td><a href="{escape(href)}">{escape(report.title)}</a></td>'
                f"<td>{report.written:%Y-%m-%d %H:%M}</td><td>{escape(report.detail)}</td></tr>"
            )
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_report_index(settings: Settings | None = None) -> tuple[Path, ReportIndex]:
    """Write ``<reports_dir>/index.html`` linking every report under the work dir.

    Returns:
        The page's path and what it links.
    """
    settings = settings or get_settings()
    page = settings.reports_dir / INDEX_NAME
    page.parent.mkdir(parents=True, exist_ok=True)
    index = find_reports(settings)
    partial = page.with_suffix(".html.tmp")
    partial.write_text(render_index(index, page.parent))
    partial.replace(page)
    return page, index
