"""What the warehouse holds now: rows per table, quarantine by reason, where the docs are."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ml.core.settings import Settings, get_settings
from ml.core.warehouse import Warehouse

SCHEMAS = ("raw", "staging", "intermediate", "marts", "quarantine", "monitoring")


@dataclass
class WarehouseSummary:
    rows: dict[str, int] = field(default_factory=dict)
    quarantine: list[tuple[str, str, str, int]] = field(default_factory=list)  # source, table, reason, rows
    landed: dict[str, int] = field(default_factory=dict)
    accepted: dict[str, int] = field(default_factory=dict)
    dbt_docs: Path | None = None
    data_docs: Path | None = None


def warehouse_summary(settings: Settings | None = None) -> WarehouseSummary:
    """Count rows per table (materialized tables; views are counted too) and quarantine reasons."""
    settings = settings or get_settings()
    warehouse = Warehouse(settings)
    summary = WarehouseSummary()
    tables = warehouse.read(
        "select table_schema, table_name from information_schema.tables "
        f"where table_schema in ({', '.join(repr(s) for s in SCHEMAS)}) "
        "order by table_schema, table_name"
    )
    for schema, name in tables.itertuples(index=False):
        summary.rows[f"{schema}.{name}"] = int(warehouse.scalar(f"select count(*) from {schema}.{name}"))
    if "quarantine.rows" in summary.rows:
        reasons = warehouse.read(
            "select source, table_name, reason, count(*) as n from quarantine.rows "
            "group by 1, 2, 3 order by 1, 2, 4 desc"
        )
        summary.quarantine = [(s, t, r, int(n)) for s, t, r, n in reasons.itertuples(index=False)]
    if "raw.invoice_lines" in summary.rows:
        for table in ("interactions", "items", "invoice_lines"):
            counts = warehouse.read(f"select source, count(*) as n from raw.{table} group by 1 order by 1")
            for source, n in counts.itertuples(index=False):
                summary.landed[f"{source}.{table}"] = int(n)
    docs = settings.work_dir / "dbt" / "target" / "static_index.html"
    summary.dbt_docs = docs if docs.exists() else None
    found = sorted(settings.gx_dir.rglob("index.html")) if settings.gx_dir.exists() else []
    summary.data_docs = found[0] if found else None
    return summary


def render(summary: WarehouseSummary) -> str:
    """The summary as plain text tables (what ``make demo`` prints at the end)."""
    lines = ["Rows per table", "--------------"]
    width = max((len(k) for k in summary.rows), default=10)
    lines += [f"  {name:<{width}}  {n:>10,}" for name, n in summary.rows.items()]
    lines += ["", "Quarantined rows by reason", "--------------------------"]
    if not summary.quarantine:
        lines.append("  (none)")
    for source, table, reason, n in summary.quarantine:
        lines.append(f"  {source}.{table:<14} {n:>9,}  {reason}")
    total = sum(n for *_, n in summary.quarantine)
    lines.append(f"  {'total':<21} {total:>9,}")
    lines += ["", f"dbt docs:  {summary.dbt_docs or '(not generated)'}"]
    lines.append(f"Data Docs: {summary.data_docs or '(not built)'}")
    return "\n".join(lines)
