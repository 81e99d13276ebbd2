"""Drift and online-quality monitoring with Evidently 0.7: what the ``monitor_drift`` DAG calls.

One monitoring run judges one data interval ``[start, end)`` for the champion:

* **data drift** - the interval's interactions (with their items' features) against the
  champion's *reference*: the same features over the last ``drift_reference_days`` of its
  training data, computed once when the model was registered (``monitoring_reference.parquet`` in
  the version folder, see :func:`write_reference`). Columns: item category, brand and price,
  title length, rating, the user's history length and tenure, the item's age, user activity.
* **prediction drift** - what the Bento recommended in this run's batch of the request log
  (``ml.request_logs``) against the first batch the same version served: top and mean score,
  the top item's category, the popularity of what is recommended, the answer strategy.
* **online quality** - of the users served in this batch who came back in the interval, the share
  whose recommendations contain an item they then interacted with (hit rate), against the
  champion's offline test recall@10.

Both drift reports run Evidently's ``DataDriftPreset`` (normed Wasserstein distance for numbers,
Jensen-Shannon for categories; per-column threshold ``drift_column_threshold``) on at most
``drift_sample_rows`` seeded-sampled rows a side, so an interval of a million rows takes seconds.
Each run writes HTML + JSON reports and a ``summary.json`` under
``<reports_dir>/monitoring/<run id>/``, adds both snapshots to the Evidently workspace (one project
per model version: ``evidently ui --workspace <evidently_dir>``), and records a row in
``monitoring.runs``. :func:`decide` turns the result into an action - retrain, alert only, or
nothing - honouring the in-flight limit and the cool-down.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import warnings
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ml.core.artifacts import REFERENCE_FILE, safe_run_id
from ml.core.settings import Settings, get_settings

log = logging.getLogger(__name__)


DATA_NUMERICAL = [
    "price",
    "title_length",
    "rating",
    "history_length",
    "user_tenure_days",
    "item_age_days",
    "user_events_30d",
]
DATA_CATEGORICAL = ["category", "brand"]
PREDICTION_NUMERICAL = ["top_score", "mean_score", "mean_item_popularity"]
PREDICTION_CATEGORICAL = ["top_category", "strategy"]


# -- features --------------------------------------------------------------------------------------
def read_interactions(
    settings: Settings, start: datetime | date | None, end: datetime | date, source: str | None = None
) -> pd.DataFrame:
    """The source's interactions in ``[start, end)`` with item features and first-seen times.

    ``item_first_ts`` / ``user_first_ts`` are the first interaction of the item / user in the whole
    warehouse (not only the window), so ages and tenures mean the same on both sides of a test.
    """
    from ml.core.warehouse import Warehouse

    source = source or settings.train_source
    lower = "and i.event_ts >= :start " if start is not None else ""
    params: dict[str, Any] = {"source": source, "end": pd.Timestamp(end).to_pydatetime()}
    if start is not None:
        params["start"] = pd.Timestamp(start).to_pydatetime()
    sql = f"""
        with item_first as (
            select item_id, min(event_ts) as item_first_ts
            from marts.fct_interactions where source = :source group by item_id
        ),
        user_first as (
            select user_id, min(event_ts) as user_first_ts
            from marts.fct_interactions where source = :source group by user_id
        )
        select
            i.user_id, i.item_id, i.event_ts, i.rating, i.quantity, i.sequence_number,
            coalesce(d.category_leaf, d.category_top) as category, d.brand, d.price, d.title,
            f.item_first_ts, u.user_first_ts
        from marts.fct_interactions i
        left join marts.dim_items d on d.source = i.source and d.item_id = i.item_id
        left join item_first f on f.item_id = i.item_id
        left join user_first u on u.user_id = i.user_id
        where i.source = :source {lower}and i.event_ts < :end
    """
    frame = Warehouse(settings).read(sql, params)
    frame["user_events_30d"] = _events_in_last_30_days(settings, source, frame, start, end)
    return frame


def _events_in_last_30_days(
    settings: Settings, source: str, frame: pd.DataFrame, start: Any, end: Any
) -> pd.Series:
    """For each row, the user's interactions in the 30 days up to it (user activity).

    Counted over a trailing window that reaches before ``start``, so the figure does not depend on
    how long the monitored window is.
    """
    from ml.core.warehouse import Warehouse

    if frame.empty:
        return pd.Series(dtype=float)
    lookback = pd.Timestamp(start if start is not None else frame["event_ts"].min()) - pd.Timedelta(days=30)
    history = Warehouse(settings).read(
        "select user_id, event_ts from marts.fct_interactions "
        "where source = :source and event_ts >= :start and event_ts < :end",
        {"source": source, "start": lookback.to_pydatetime(), "end": pd.Timestamp(end).to_pydatetime()},
    )
    # One sorted key per event: (user code, seconds) packed in an int64, so a single vectorised
    # searchsorted counts every row's trailing window (users occupy disjoint key ranges).
    codes = pd.Index(history["user_id"].astype(str).unique())
    span = np.int64(2**33)  # > any epoch second here; keeps users apart

    def keys(users: pd.Series, at: pd.Series) -> np.ndarray:
        code = codes.get_indexer(users.astype(str)).astype(np.int64)
        seconds = pd.to_datetime(at).to_numpy().astype("datetime64[s]").astype(np.int64)
        return np.where(code >= 0, code * span + seconds, -1)

    known = np.sort(keys(history["user_id"], history["event_ts"]))
    rows = keys(frame["user_id"], frame["event_ts"])
    month = np.int64(30 * 86_400)
    counts = np.searchsorted(known, rows, side="right") - np.searchsorted(known, rows - month, side="right")
    counts = np.where(rows >= 0, counts, 0).astype(float)
    return pd.Series(counts, index=frame.index)


def interaction_features(frame: pd.DataFrame) -> pd.DataFrame:
    """The monitored data features, one row per interaction (see the module docstring).

    Args:
        frame: rows of :func:`read_interactions`.
    """
    if frame.empty:
        return pd.DataFrame(columns=DATA_NUMERICAL + DATA_CATEGORICAL)
    event = pd.to_datetime(frame["event_ts"])
    day = pd.Timedelta(days=1)
    out = pd.DataFrame(
        {
            "price": pd.to_numeric(frame["price"], errors="coerce"),
            "title_length": frame["title"].fillna("").str.len().astype(float),
            "rating": pd.to_numeric(frame["rating"], errors="coerce"),
            "history_length": pd.to_numeric(frame["sequence_number"], errors="coerce").astype(float),
            "user_tenure_days": (event - pd.to_datetime(frame["user_first_ts"])) / day,
            "item_age_days": (event - pd.to_datetime(frame["item_first_ts"])) / day,
            "user_events_30d": pd.to_numeric(frame["user_events_30d"], errors="coerce").astype(float),
            "category": frame["category"].fillna("unknown").astype(str),
            "brand": frame["brand"].fillna("unknown").astype(str),
        }
    )
    return out.reset_index(drop=True)


def write_reference(package: Path, settings: Settings, until: datetime | None = None) -> Path | None:
    """Save the data-drift reference of a model being registered (its training world, once).

    The reference is :func:`interaction_features` over the last ``drift_reference_days`` of the
    training source up to ``until`` (default: the latest interaction), sampled to
    ``drift_sample_rows``. Returns the file, or None when the warehouse has no interactions.
    """
    from ml.core.warehouse import Warehouse

    if not Warehouse(settings).table_exists("marts.fct_interactions"):
        return None  # marts not built by dbt (a hand-made training slice): nothing to refer to
    if until is None:
        latest = Warehouse(settings).scalar(
            "select max(event_ts) from marts.fct_interactions where source = :source",
            {"source": settings.train_source},
        )
        if latest is None or pd.isna(latest):
            return None
        until = pd.Timestamp(latest).to_pydatetime() + timedelta(seconds=1)
    start = until - timedelta(days=settings.drift_reference_days)
    features = interaction_features(read_interactions(settings, start, until))
    if features.empty:
        return None
    out = Path(package) / REFERENCE_FILE
    _sample(features, settings.drift_sample_rows).to_parquet(out, index=False)
    return out


def prediction_features(requests: pd.DataFrame, items: pd.DataFrame, popularity: pd.Series) -> pd.DataFrame:
    """One row per served recommendation: score level and spread, what kind of items it showed.

    Args:
        requests: ``monitoring.requests`` rows of endpoint recommend (``items``/``scores`` lists).
        items: item_id → category (a frame with columns item_id, category).
        popularity: item_id → popularity percentile in [0, 1] (1 = the most interacted-with item).
    """
    if requests.empty:
        return pd.DataFrame(columns=PREDICTION_NUMERICAL + PREDICTION_CATEGORICAL)
    category = dict(zip(items["item_id"].astype(str), items["category"].fillna("unknown"), strict=False))
    pop = popularity.to_dict()
    rows = []
    for answer, scores, strategy in zip(
        requests["items"], requests["scores"], requests["strategy"], strict=True
    ):
        shown = [str(i) for i in answer]
        rows.append(
            {
                "top_score": float(scores[0]) if scores else math.nan,
                "mean_score": float(np.mean(scores)) if scores else math.nan,
                "mean_item_popularity": float(np.mean([pop.get(i, 0.0) for i in shown]))
                if shown
                else math.nan,
                "top_category": category.get(shown[0], "unknown") if shown else "none",
                "strategy": str(strategy or "unknown"),
            }
        )
    return pd.DataFrame(rows)


TOP_CATEGORIES = 30


def _top_values(current: pd.Series, reference: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Keep the reference's most frequent values and fold the rest into 'other' on both sides.

    A long tail (thousands of brands) gives Jensen-Shannon a sampling bias that reads as drift in
    every window; folded, a surge of new values still shows as a rising 'other'.
    """
    keep = set(reference.value_counts().index[:TOP_CATEGORIES])
    return current.where(current.isin(keep), "other"), reference.where(reference.isin(keep), "other")


def _sample(frame: pd.DataFrame, rows: int, seed: int = 0) -> pd.DataFrame:
    return frame if len(frame) <= rows else frame.sample(rows, random_state=seed).reset_index(drop=True)


# -- reports ---------------------------------------------------------------------------------------
@dataclass
class DriftCheck:
    """One Evidently drift report, reduced to what a decision needs."""

    kind: str
    share: float
    drifted: bool
    columns: dict[str, float] = field(default_factory=dict)
    """Column → drift distance."""
    drifted_columns: list[str] = field(default_factory=list)
    rows_current: int = 0
    rows_reference: int = 0
    html: str | None = None
    json: str | None = None


@dataclass
class OnlineQuality:
    hit_rate: float | None
    judged: int
    """Served recommendations whose user came back in the interval."""
    served: int
    expected: float | None
    """The champion's offline test recall@10."""
    low: bool
    note: str = ""


def drift_report(
    current: pd.DataFrame,
    reference: pd.DataFrame,
    numerical: list[str],
    categorical: list[str],
    settings: Settings,
    kind: str,
    timestamp: datetime | None = None,
) -> tuple[Any, DriftCheck]:
    """Evidently ``DataDriftPreset`` of ``current`` against ``reference`` on the usable columns.

    A column is used when both sides have values in it; both sides are sampled to
    ``settings.drift_sample_rows``. Returns the Evidently snapshot and its :class:`DriftCheck`.
    """
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    def usable(column: str) -> bool:
        return bool(current[column].notna().any() and reference[column].notna().any())

    numerical = [c for c in numerical if c in current and c in reference and usable(c)]
    categorical = [c for c in categorical if c in current and c in reference and usable(c)]
    columns = numerical + categorical
    if not columns:
        raise ValueError(f"{kind} drift: no column has values on both sides")
    current = _sample(current[columns], settings.drift_sample_rows).copy()
    reference = _sample(reference[columns], settings.drift_sample_rows, seed=1).copy()
    definition = DataDefinition(numerical_columns=numerical, categorical_columns=categorical)
    for column in categorical:
        current[column], reference[column] = _top_values(current[column], reference[column])
    report = Report(
        [
            DataDriftPreset(
                columns=columns,
                drift_share=settings.drift_share_threshold,
                # Distances whatever the sample size (Evidently would switch to p-value tests
                # below 1,000 rows), so one threshold means the same for every column and window.
                num_method="wasserstein",
                cat_method="jensenshannon",
                threshold=settings.drift_column_threshold,
            )
        ]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # constant columns: 0/0 in numpy, no drift
        snapshot = report.run(
            Dataset.from_pandas(current, data_definition=definition),
            Dataset.from_pandas(reference, data_definition=definition),
            timestamp=timestamp,  # the data interval: the workspace dashboard plots over it
            tags=[kind],
        )
    check = DriftCheck(kind, 0.0, False, rows_current=len(current), rows_reference=len(reference))
    for metric in snapshot.dict()["metrics"]:
        config, value = metric["config"], metric["value"]
        if config["type"].endswith(":DriftedColumnsCount"):
            check.share = float(value["share"])
        elif config["type"].endswith(":ValueDrift"):
            distance = float(value)
            check.columns[config["column"]] = round(distance, 6)
            if distance >= float(config.get("threshold") or settings.drift_column_threshold):
                check.drifted_columns.append(config["column"])
    check.drifted = check.share >= settings.drift_share_threshold
    return snapshot, check


def online_quality(
    requests: pd.DataFrame, outcomes: pd.DataFrame, expected: float | None, settings: Settings
) -> OnlineQuality:
    """Hit rate of served recommendations against what the served users did next.

    Args:
        requests: recommend rows with ``user_hash`` and ``items`` (lists).
        outcomes: the interval's interactions (``user_id``, ``item_id``); user ids are hashed the
            way the service logs them to match.
        expected: the champion's offline recall@10 (the alarm compares against a share of it).
    """
    from ml.core.pii import user_hash

    served = requests[requests["user_hash"].notna()] if not requests.empty else requests
    if served.empty or outcomes.empty:
        return OnlineQuality(None, 0, len(served), expected, False, "no served users or no outcomes yet")
    bought: dict[str, set[str]] = {}
    for user, item in zip(outcomes["user_id"].astype(str), outcomes["item_id"].astype(str), strict=True):
        bought.setdefault(user_hash(user) or "", set()).add(item)
    hits = judged = 0
    for user, answer in zip(served["user_hash"], served["items"], strict=True):
        later = bought.get(str(user))
        if not later:
            continue
        judged += 1
        hits += bool(later.intersection(str(i) for i in answer))
    if judged < settings.min_monitored_requests:
        rate = hits / judged if judged else None
        return OnlineQuality(rate, judged, len(served), expected, False, f"only {judged} judged: not enough")
    rate = hits / judged
    low = expected is not None and rate < settings.min_online_hit_ratio * expected
    return OnlineQuality(rate, judged, len(served), expected, low)


@dataclass
class MonitorResult:
    run_id: str
    interval_start: str
    interval_end: str
    model_version: str | None
    data: DriftCheck | None
    prediction: DriftCheck | None
    online: OnlineQuality | None
    report_dir: str
    notes: list[str] = field(default_factory=list)

    def alarms(self) -> list[str]:
        """Why this run thinks the model should be retrained (empty: all is well)."""
        out = []
        if self.data and self.data.drifted:
            out.append(
                f"data drift: {self.data.share:.0%} of columns drifted "
                f"({', '.join(self.data.drifted_columns)})"
            )
        if self.prediction and self.prediction.drifted:
            out.append(
                f"prediction drift: {self.prediction.share:.0%} of columns drifted "
                f"({', '.join(self.prediction.drifted_columns)})"
            )
        if self.online and self.online.low and self.online.hit_rate is not None:
            out.append(
                f"online quality: hit rate {self.online.hit_rate:.3f} over {self.online.judged} "
                f"recommendations, below {self.online.expected or 0:.3f} offline"
            )
        return out

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "alarms": self.alarms()}

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> MonitorResult:
        """Back from :meth:`as_dict` (an XCom between DAG tasks)."""
        online = value.get("online")
        return cls(
            run_id=value["run_id"],
            interval_start=value["interval_start"],
            interval_end=value["interval_end"],
            model_version=value["model_version"],
            data=DriftCheck(**value["data"]) if value.get("data") else None,
            prediction=DriftCheck(**value["prediction"]) if value.get("prediction") else None,
            online=OnlineQuality(**online) if online else None,
            report_dir=value["report_dir"],
            notes=list(value.get("notes") or []),
        )


def _champion(settings: Settings) -> Any:
    from ml import registry

    tag = registry.champion(settings)
    return registry.get(tag, settings) if tag else None


def _reference_features(version: Any, settings: Settings) -> pd.DataFrame | None:
    path = Path(version.path) / REFERENCE_FILE
    return pd.read_parquet(path) if path.exists() else None


def _item_popularity(version: Any) -> pd.Series:
    """Popularity percentile of each item among the champion's training histories."""
    path = Path(version.path) / "histories.parquet"
    if not path.exists():
        return pd.Series(dtype=float)
    counts = pd.read_parquet(path, columns=["item_id"])["item_id"].astype(str).value_counts()
    return counts.rank(pct=True)


def monitor_interval(start: date, end: date, run_id: str, settings: Settings | None = None) -> MonitorResult:
    """Compute data drift, prediction drift and online quality for one interval (no decision).

    Expects this run's request log batch to be loaded (``ml.request_logs.load_request_logs``
    with ``batch_id=run_id``) and the interval's interactions to be in the marts.
    """
    from ml import request_logs

    settings = settings or get_settings()
    folder = settings.reports_dir / "monitoring" / safe_run_id(run_id)
    folder.mkdir(parents=True, exist_ok=True)
    version = _champion(settings)
    result = MonitorResult(
        run_id, str(start), str(end), version.tag if version else None, None, None, None, str(folder)
    )
    if version is None:
        result.notes.append("no champion yet: nothing to monitor")
        _write_summary(result, folder)
        return result
    snapshots: dict[str, Any] = {}

    raw = read_interactions(settings, start, end)
    current = interaction_features(raw)
    reference = _reference_features(version, settings)
    if current.empty:
        result.notes.append(f"no interactions in [{start}, {end}): data drift not computed")
    elif reference is None:
        result.notes.append(f"{version.tag} has no {REFERENCE_FILE}: data drift not computed")
    else:
        snapshots["data"], result.data = drift_report(
            current, reference, DATA_NUMERICAL, DATA_CATEGORICAL, settings, "data", _at(start)
        )

    served = request_logs.read_batch(run_id, settings, endpoint="recommend")
    served = served[served["model_version"] == version.tag] if not served.empty else served
    items = _catalog_categories(settings)
    popularity = _item_popularity(version)
    ref_batch = request_logs.reference_batch(version.tag, settings)
    if served.empty:
        result.notes.append("no recommendations served in this batch: prediction drift not computed")
    elif ref_batch is None or ref_batch == run_id:
        result.notes.append(f"this batch is {version.tag}'s first: it becomes the prediction reference")
    else:
        ref_served = request_logs.read_batch(ref_batch, settings, endpoint="recommend")
        ref_served = ref_served[ref_served["model_version"] == version.tag]
        snapshots["prediction"], result.prediction = drift_report(
            prediction_features(served, items, popularity),
            prediction_features(ref_served, items, popularity),
            PREDICTION_NUMERICAL,
            PREDICTION_CATEGORICAL,
            settings,
            "prediction",
            _at(start),
        )

    expected = version.metric("test", "recall@10")
    result.online = online_quality(
        served, raw[["user_id", "item_id"]] if not raw.empty else raw, expected, settings
    )

    for kind, snapshot in snapshots.items():
        check = result.data if kind == "data" else result.prediction
        assert check is not None
        check.html, check.json = str(folder / f"{kind}_drift.html"), str(folder / f"{kind}_drift.json")
        snapshot.save_html(check.html)
        snapshot.save_json(check.json)
    _add_to_workspace(snapshots, version.tag, run_id, start, settings)
    _write_summary(result, folder)
    return result


def _at(day: date) -> datetime:
    return datetime(day.year, day.month, day.day)


def _catalog_categories(settings: Settings) -> pd.DataFrame:
    from ml.core.warehouse import Warehouse

    return Warehouse(settings).read(
        "select item_id, coalesce(category_leaf, category_top) as category from marts.dim_items "
        "where source = :source",
        {"source": settings.train_source},
    )


def _write_summary(result: MonitorResult, folder: Path) -> None:
    (folder / "summary.json").write_text(json.dumps(result.as_dict(), indent=2, default=str))


def _add_to_workspace(
    snapshots: dict[str, Any], model_tag: str, run_id: str, start: date, settings: Settings
) -> None:
    """Add the run's snapshots to the Evidently workspace project of the model version."""
    if not snapshots:
        return
    from evidently.ui.workspace import Workspace

    workspace = Workspace.create(str(settings.evidently_dir))
    found = workspace.search_project(model_tag)
    project = found[0] if found else _new_project(workspace, model_tag)
    for kind, snapshot in snapshots.items():
        workspace.add_run(project.id, snapshot, name=f"{kind} drift {start} ({run_id})")


def _new_project(workspace: Any, model_tag: str) -> Any:
    """A workspace project for a model version, with its dashboard: drift share per interval."""
    from evidently.sdk.models import PanelMetric
    from evidently.sdk.panels import line_plot_panel

    project = workspace.create_project(model_tag, description=f"ShopFlow monitoring of {model_tag}")
    for kind in ("data", "prediction"):
        project.dashboard.add_panel(
            line_plot_panel(
                title=f"{kind.capitalize()} drift: share of drifted columns",
                values=[
                    PanelMetric(
                        legend="share",
                        metric="evidently:metric_v2:DriftedColumnsCount",
                        metric_labels={"value_type": "share"},
                        tags=[kind],
                    )
                ],
                size="half",
            )
        )
    return project


# -- decision --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Decision:
    action: str
    """'retrain' (trigger train_recommender and alert), 'alert' (alarms, retraining suppressed) or 'none'."""
    reason: str
    alarms: list[str]


def decide(
    alarms: list[str], settings: Settings, in_flight: int, last_retrain_at: datetime | None, now: datetime
) -> Decision:
    """What to do about a monitoring result.

    Args:
        alarms: :meth:`MonitorResult.alarms`.
        in_flight: train_recommender runs queued or running now.
        last_retrain_at: when monitoring last triggered a retraining (None: never).
        now: the decision time (UTC).
    """
    if not alarms:
        return Decision("none", "no drift, online quality fine", [])
    why = "; ".join(alarms)
    if in_flight:
        return Decision(
            "alert", f"{why} - retraining not triggered: {in_flight} training run(s) in flight", alarms
        )
    cooldown = timedelta(minutes=settings.retrain_cooldown_minutes)
    if last_retrain_at is not None and now - last_retrain_at < cooldown:
        until = (last_retrain_at + cooldown).isoformat(timespec="minutes")
        return Decision("alert", f"{why} - retraining not triggered: cool-down until {until}", alarms)
    return Decision("retrain", why, alarms)


def last_retrain_at(settings: Settings) -> datetime | None:
    """When monitoring last decided to retrain (from ``monitoring.runs``)."""
    from ml.core.warehouse import Warehouse

    warehouse = Warehouse(settings)
    if not warehouse.table_exists("monitoring.runs"):
        return None
    value = warehouse.scalar("select max(decided_at) from monitoring.runs where action = 'retrain'")
    if value is None or pd.isna(value):
        return None
    return pd.Timestamp(value).tz_localize(UTC).to_pydatetime()


def record_run(result: MonitorResult, decision: Decision, settings: Settings, now: datetime) -> None:
    """Replace this run's row in ``monitoring.runs`` (a rerun overwrites it)."""
    from ml.core.warehouse import Warehouse

    warehouse = Warehouse(settings)
    row = {
        "run_id": result.run_id,
        "interval_start": pd.Timestamp(result.interval_start).date(),
        "interval_end": pd.Timestamp(result.interval_end).date(),
        "model_version": result.model_version,
        "data_drift_share": result.data.share if result.data else None,
        "data_drifted": int(result.data.drifted) if result.data else None,
        "prediction_drift_share": result.prediction.share if result.prediction else None,
        "prediction_drifted": int(result.prediction.drifted) if result.prediction else None,
        "online_hit_rate": result.online.hit_rate if result.online else None,
        "online_requests": result.online.judged if result.online else None,
        "expected_hit_rate": result.online.expected if result.online else None,
        "action": decision.action,
        "reason": decision.reason,
        "report_dir": result.report_dir,
        "decided_at": now.astimezone(UTC).replace(tzinfo=None),
    }
    with warehouse.connect() as con:
        warehouse.ensure_tables(con)
        warehouse.execute(con, "delete from monitoring.runs where run_id = :run", {"run": result.run_id})
        warehouse.insert(con, "monitoring.runs", pd.DataFrame([row]))


def monitoring_runs(settings: Settings | None = None) -> pd.DataFrame:
    """Every recorded monitoring run, in decision order."""
    from ml.core.warehouse import Warehouse

    warehouse = Warehouse(settings or get_settings())
    if not warehouse.table_exists("monitoring.runs"):
        return pd.DataFrame()
    return warehouse.read("select * from monitoring.runs order by decided_at")


# -- alerts ----------------------------------------------------------------------------------------
def notify(decision: Decision, result: MonitorResult, settings: Settings) -> dict[str, Any]:
    """Send the alert: always to the log; also as JSON to ``alert_webhook_url`` when set.

    A webhook that fails is logged and reported (``webhook_error``), never raised: the alert is
    already in the log and in ``monitoring.runs``, and retraining must not wait on a chat server.
    """
    payload = {
        "text": f"ShopFlow monitoring {result.run_id}: {decision.action} - {decision.reason}",
        "action": decision.action,
        "reason": decision.reason,
        "alarms": decision.alarms,
        "model_version": result.model_version,
        "interval": [result.interval_start, result.interval_end],
        "report_dir": result.report_dir,
        "fingerprint": hashlib.sha256(f"{result.run_id}:{decision.action}".encode()).hexdigest()[:16],
    }
    log.warning("ALERT %s", payload["text"])
    sent: dict[str, Any] = {"logged": True, "webhook": None}
    if settings.alert_webhook_url:
        import httpx

        try:
            response = httpx.post(settings.alert_webhook_url, json=payload, timeout=10.0)
            response.raise_for_status()
            sent["webhook"] = response.status_code
        except httpx.HTTPError as error:
            log.error("alert webhook %s failed: %s", settings.alert_webhook_url, error)
            sent["webhook_error"] = str(error)
    return sent
