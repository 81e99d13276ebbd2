"""Load the Bento's request log into the warehouse (``monitoring.requests``).

The service appends one JSON line per answered request to ``requests-<UTC day>.jsonl`` under
``settings.serving_log_dir`` (see ``serving.engine.RequestLog``). Each monitoring run loads the lines
no earlier run has loaded and stamps them with its run id (``batch_id``): that batch is "what was
served since the last check", the window whose predictions and outcomes the run judges.

Loading is incremental and idempotent: ``(request_file, line_no)`` is the key, a file is read
from the line after the last one loaded, a rerun of the same monitoring run first removes its own
batch (so it reloads exactly what is new), and all of it happens in one transaction. A line that
is not yet complete (the server is writing it) is left for the next run; a complete line that is
not valid JSON stops the load with an error naming the file and line, and nothing is written.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from ml.core.settings import Settings, get_settings
from ml.core.warehouse import Warehouse

TABLE = "monitoring.requests"
FILE_GLOB = "requests-*.jsonl"
COPY_COLUMNS = ("texts_served", "texts_generated", "texts_fallback", "texts_template")
"""Counts of a line's ``copy`` record (``ml.generation.bundles.copy_counts``), nullable integers."""


class RequestLogError(ValueError):
    """A request log line that cannot be loaded (names the file and line)."""


@dataclass
class LoadSummary:
    batch_id: str
    files: dict[str, int] = field(default_factory=dict)
    """Lines loaded per file in this batch."""
    rows: int = 0
    """Lines in this batch."""
    first_logged_at: str | None = None
    last_logged_at: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "batch_id": self.batch_id,
            "files": self.files,
            "rows": self.rows,
            "first_logged_at": self.first_logged_at,
            "last_logged_at": self.last_logged_at,
        }


def parse_line(text: str, file: str, line_no: int) -> dict[str, Any]:
    """One log line as a ``monitoring.requests`` row (without batch columns)."""
    try:
        record = json.loads(text)
        items = list(record.get("items") or [])
        scores = [float(s) for s in record.get("scores") or []]
        request = record.get("request") or {}
        copy = record.get("copy")
        counts = (
            {
                f"texts_{key}": int(copy.get(key) or 0)
                for key in ("served", "generated", "fallback", "template")
            }
            if isinstance(copy, dict)
            else dict.fromkeys(COPY_COLUMNS)
        )
        failures = copy.get("failures") if isinstance(copy, dict) else None
        return {
            "request_file": file,
            "line_no": line_no,
            "logged_at": pd.Timestamp(record["timestamp"]).tz_convert("UTC").tz_localize(None),
            "endpoint": str(record["endpoint"]),
            "model_version": str(record["model_version"]),
            "user_hash": record.get("user_hash"),
            "strategy": record.get("strategy"),
            "k": request.get("k"),
            "items": json.dumps([str(i) for i in items]),
            "scores": json.dumps(scores),
            "latency_ms": float(record.get("latency_ms") or 0.0),
            **counts,
            "check_failures": None
            if failures is None
            else json.dumps({str(r): int(n) for r, n in dict(failures).items()}, sort_keys=True),
        }
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise RequestLogError(f"{file}, line {line_no}: not a request log record ({error})") from error


def _add_new_columns(warehouse: Warehouse, con: Any) -> None:
    """A warehouse whose table predates a column of ``schemas.SERVING_REQUESTS`` gets it (NULL in
    old rows): ``ensure_tables`` only creates missing tables. Both engines know ADD COLUMN IF NOT
    EXISTS."""
    from ml.core.schemas import SERVING_REQUESTS, SQL_TYPES

    types = SQL_TYPES[warehouse.engine]
    for column in SERVING_REQUESTS:
        if column.name in COPY_COLUMNS or column.name == "check_failures":
            warehouse.execute(
                con, f"alter table {TABLE} add column if not exists {column.name} {types[column.type]}"
            )


def _new_lines(path: Path, after: int) -> list[tuple[int, str]]:
    """Complete lines of ``path`` numbered past ``after`` (a partial last line is left)."""
    out: list[tuple[int, str]] = []
    with path.open("r", encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if line_no <= after:
                continue
            if not line.endswith("\n"):
                break  # still being written
            if line.strip():
                out.append((line_no, line))
    return out


def load_request_logs(
    batch_id: str, settings: Settings | None = None, log_dir: Path | None = None
) -> LoadSummary:
    """Load the request log lines not loaded yet into ``monitoring.requests`` as one batch.

    Args:
        batch_id: the monitoring run loading them (a rerun with the same id reloads its batch).
        settings: ShopFlow settings (warehouse, ``serving_log_dir``).
        log_dir: read another folder than ``settings.serving_log_dir``.

    Raises:
        RequestLogError: a complete line is not a valid record; nothing is written.
    """
    settings = settings or get_settings()
    folder = log_dir or settings.serving_log_dir
    warehouse = Warehouse(settings)
    summary = LoadSummary(batch_id)
    with warehouse.connect() as con:
        warehouse.ensure_tables(con)
        _add_new_columns(warehouse, con)
        warehouse.execute(con, f"delete from {TABLE} where batch_id = :batch", {"batch": batch_id})
        loaded = warehouse.read(
            f"select request_file, max(line_no) as last from {TABLE} group by request_file", con=con
        )
        last = {str(f): int(n) for f, n in loaded.itertuples(index=False)}
        rows: list[dict[str, Any]] = []
        for path in sorted(folder.glob(FILE_GLOB)) if folder.exists() else []:
            lines = _new_lines(path, last.get(path.name, 0))
            rows += [parse_line(text, path.name, n) for n, text in lines]
            if lines:
                summary.files[path.name] = len(lines)
        if rows:
            frame = pd.DataFrame(rows)
            # /ask and /bundle carry no k: a column with gaps would turn float and PostgreSQL's
            # COPY refuses "10.0" for a bigint; the nullable integer writes 10 and NULL.
            for column in ("k", *COPY_COLUMNS):
                frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("Int64")
            frame["batch_id"] = batch_id
            frame["loaded_at"] = datetime.now(UTC).replace(tzinfo=None)
            warehouse.insert(con, TABLE, frame)
            summary.rows = len(frame)
            summary.first_logged_at = str(frame["logged_at"].min())
            summary.last_logged_at = str(frame["logged_at"].max())
    return summary


def read_batch(batch_id: str, settings: Settings | None = None, endpoint: str | None = None) -> pd.DataFrame:
    """The rows of one batch (optionally one endpoint), with ``items``/``scores`` as lists."""
    warehouse = Warehouse(settings or get_settings())
    sql = f"select * from {TABLE} where batch_id = :batch"
    params: dict[str, Any] = {"batch": batch_id}
    if endpoint:
        sql += " and endpoint = :endpoint"
        params["endpoint"] = endpoint
    frame = warehouse.read(sql + " order by request_file, line_no", params)
    for column in ("items", "scores"):
        frame[column] = frame[column].map(json.loads)
    return frame


def reference_batch(model_version: str, settings: Settings | None = None) -> str | None:
    """The prediction reference of ``model_version``: the first batch in which it answered at
    least ``min_monitored_requests`` recommendations (a smoke test's few calls are no reference)."""
    settings = settings or get_settings()
    warehouse = Warehouse(settings)
    if not warehouse.table_exists(TABLE):
        return None
    found = warehouse.read(
        f"select batch_id, min(loaded_at) as first_loaded from {TABLE} "
        "where model_version = :version and endpoint = 'recommend' "
        "group by batch_id having count(*) >= :least order by first_loaded limit 1",
        {"version": model_version, "least": settings.min_monitored_requests},
    )
    return None if found.empty else str(found.iat[0, 0])


def copy_quality(batch_id: str, settings: Settings | None = None) -> dict[str, Any] | None:
    """What the texts served in one batch were, per endpoint and over all: counts and rates.

    ``fallback_rate``: of the texts served, the share where the generator's text failed the
    grounding check and the template was served instead; ``check_failure_rate``: of the texts the
    generator wrote, the share that failed the check (``fallback / (generated + fallback)``);
    ``template_rate``: served as templates without a generation; ``failures``: failed rules
    counted over the batch. None when no line of the batch carries copy counts.
    """
    warehouse = Warehouse(settings or get_settings())
    frame = warehouse.read(
        f"select endpoint, texts_served, texts_generated, texts_fallback, texts_template, check_failures "
        f"from {TABLE} where batch_id = :batch and texts_served is not null",
        {"batch": batch_id},
    )
    if frame.empty:
        return None

    def rates(part: pd.DataFrame) -> dict[str, Any]:
        served, generated, fallback, template = (int(part[c].sum()) for c in COPY_COLUMNS)
        failures: dict[str, int] = {}
        for text in part["check_failures"].dropna():
            for rule, n in json.loads(text).items():
                failures[rule] = failures.get(rule, 0) + int(n)
        written = generated + fallback

        def share(n: int, of: int) -> float | None:
            return round(n / of, 4) if of else None

        return {
            "requests": len(part),
            "served": served,
            "generated": generated,
            "fallback": fallback,
            "template": template,
            "generated_rate": share(generated, served),
            "fallback_rate": share(fallback, served),
            "template_rate": share(template, served),
            "check_failure_rate": share(fallback, written),
            "failures": dict(sorted(failures.items(), key=lambda kv: (-kv[1], kv[0]))),
        }

    return {
        "all": rates(frame),
        "endpoints": {str(e): rates(part) for e, part in frame.groupby("endpoint", sort=True)},
    }


def copy_note(quality: dict[str, Any] | None) -> str:
    """One line for a run's notes: the batch's served texts and their fallback/check-failure rates."""
    if not quality:
        return "no generated or template texts served in this batch: copy rates not computed"
    total = quality["all"]

    def pct(value: float | None) -> str:
        return "-" if value is None else f"{value:.1%}"

    parts = [
        f"{e} {q['served']} (fallback {pct(q['fallback_rate'])}, "
        f"check failures {pct(q['check_failure_rate'])})"
        for e, q in quality["endpoints"].items()
    ]
    rules = ", ".join(f"{r} {n}" for r, n in list(total["failures"].items())[:4])
    return (
        f"copy served: {total['served']} texts, generated {pct(total['generated_rate'])}, "
        f"fallback {pct(total['fallback_rate'])}, template {pct(total['template_rate'])}; "
        f"check failures {pct(total['check_failure_rate'])} of {total['generated'] + total['fallback']} "
        f"generated" + (f" ({rules})" if rules else "") + "; " + "; ".join(parts)
    )
