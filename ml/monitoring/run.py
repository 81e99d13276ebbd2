"""Drift and online-quality monitoring with Evidently 0.7: what the ``monitor_drift`` DAG calls.

One monitoring run judges one data interval ``[start, end)`` for the champion:

* **data drift** - the interval's interactions (with their items' features) against the
  champion's *reference*: the same features over the last ``drift_reference_days`` of its
  training data, computed once when the model was registered (``monitoring_reference.parquet`` in
  the version folder, see ``ml.monitoring.features.write_reference``). Columns: item category,
  brand and price, title length, rating, the user's history length and activity, and the user's
  and item's lifecycle stage (new / recent / established: tenure and age in days drift with the
  calendar alone, so they are reported as context, not tested; see ``ml.monitoring.features``).
* **prediction drift** - what the Bento recommended in this run's batch of the request log
  (``ml.monitoring.request_logs``) against the first batch the same version served: top and mean score,
  the top item's category, the popularity of what is recommended, the answer strategy.
* **online quality** - of the users served in this batch who came back in the interval, the share
  whose recommendations contain an item they then interacted with (hit rate), against the
  champion's offline test recall@10.

* **served copy** - of the texts the batch served (recommend reasons, bundle names and
  descriptions, assistant answers), the shares generated, fallback (the generator's text failed the
  grounding check, the template was served) and template, and the failed rules
  (``request_logs.copy_quality``): ``copy`` in ``summary.json`` and a line in the notes.

Both drift reports run Evidently's ``DataDriftPreset`` (normed Wasserstein distance for numbers,
Jensen-Shannon for categories; per-column threshold ``drift_column_threshold``) on at most
``drift_sample_rows`` seeded-sampled rows a side, so an interval of a million rows takes seconds.
Each run writes HTML + JSON reports and a ``summary.json`` under
``<reports_dir>/monitoring/<run id>/``, adds both snapshots to the Evidently workspace (one project
per model version: ``evidently ui --workspace <evidently_dir>``), and records a row in
``monitoring.runs``. ``ml.monitoring.decision.decide`` turns the result into an action -
retrain, alert only, or nothing - honouring the in-flight limit and the cool-down.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from ml import registry
from ml.core.artifacts import REFERENCE_FILE, safe_run_id
from ml.core.settings import Settings, get_settings
from ml.monitoring import request_logs
from ml.monitoring.drift import DriftCheck, add_to_workspace, drift_report
from ml.monitoring.features import (
    DATA_CATEGORICAL,
    DATA_NUMERICAL,
    PREDICTION_CATEGORICAL,
    PREDICTION_NUMERICAL,
    catalog_categories,
    context_summary,
    interaction_features,
    prediction_features,
    read_interactions,
    read_pairs,
    with_lifecycles,
)
from ml.monitoring.online import OnlineQuality, online_quality

log = logging.getLogger(__name__)


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
    copy: dict[str, Any] | None = None
    """The batch's served texts: counts and fallback / check-failure rates, over all and per
    endpoint (``request_logs.copy_quality``); None when none was served."""

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
            copy=value.get("copy"),
        )


def _champion(settings: Settings) -> Any:

    tag = registry.champion(settings)
    return registry.get(tag, settings) if tag else None


def _reference_features(version: Any) -> pd.DataFrame | None:
    path = Path(version.path) / REFERENCE_FILE
    return with_lifecycles(pd.read_parquet(path)) if path.exists() else None


def _item_popularity(version: Any) -> pd.Series:
    """Popularity percentile of each item among the champion's training histories."""
    path = Path(version.path) / "histories.parquet"
    if not path.exists():
        return pd.Series(dtype=float)
    counts = pd.read_parquet(path, columns=["item_id"])["item_id"].astype(str).value_counts()
    return counts.rank(pct=True)


def monitor_interval(start: date, end: date, run_id: str, settings: Settings | None = None) -> MonitorResult:
    """Compute data drift, prediction drift and online quality for one interval (no decision).

    Expects this run's request log batch to be loaded (``ml.monitoring.request_logs.load_request_logs``
    with ``batch_id=run_id``) and the interval's interactions to be in the marts.
    """

    settings = settings or get_settings()
    folder = settings.reports_dir / "monitoring" / safe_run_id(run_id)
    folder.mkdir(parents=True, exist_ok=True)
    version = _champion(settings)
    result = MonitorResult(
        run_id, str(start), str(end), version.tag if version else None, None, None, None, str(folder)
    )
    # The served copy's rates are the batch's, whichever version served it (a swap mid-interval
    # included): they judge the generator and its check, not the recommender.
    result.copy = request_logs.copy_quality(run_id, settings)
    result.notes.append(request_logs.copy_note(result.copy))
    if version is None:
        result.notes.append("no champion yet: nothing to monitor")
        _write_summary(result, folder)
        return result
    snapshots: dict[str, Any] = {}

    # The features of a seeded sample drawn in the warehouse (the drift's cost follows the
    # sample, not the interval's size); the online hit rate below needs every pair, read apart.
    current = interaction_features(
        read_interactions(settings, start, end, sample_rows=settings.drift_sample_rows)
    )
    reference = _reference_features(version)
    if current.empty:
        result.notes.append(f"no interactions in [{start}, {end}): data drift not computed")
    elif reference is None:
        result.notes.append(f"{version.tag} has no {REFERENCE_FILE}: data drift not computed")
    else:
        snapshots["data"], result.data = drift_report(
            current, reference, DATA_NUMERICAL, DATA_CATEGORICAL, settings, "data", _at(start)
        )
        if note := result.data.left_out_note():
            result.notes.append(note)
        context = context_summary(current, reference)
        if context:
            result.notes.append(context)

    served = request_logs.read_batch(run_id, settings, endpoint="recommend")
    served = served[served["model_version"] == version.tag] if not served.empty else served
    items = catalog_categories(settings)
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
        if note := result.prediction.left_out_note():
            result.notes.append(note)

    expected = version.metric("test", "recall@10")
    result.online = online_quality(served, read_pairs(settings, start, end), expected, settings)

    for kind, snapshot in snapshots.items():
        check = result.data if kind == "data" else result.prediction
        assert check is not None
        check.html, check.json = str(folder / f"{kind}_drift.html"), str(folder / f"{kind}_drift.json")
        snapshot.save_html(check.html)
        snapshot.save_json(check.json)
    add_to_workspace(snapshots, version.tag, run_id, start, settings)
    _write_summary(result, folder)
    return result


def _at(day: date) -> datetime:
    return datetime(day.year, day.month, day.day)


def _write_summary(result: MonitorResult, folder: Path) -> None:
    (folder / "summary.json").write_text(json.dumps(result.as_dict(), indent=2, default=str))
