"""Evidently drift reports (current vs reference) and the workspace that keeps them for ``evidently ui``."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import pandas as pd

from ml.core.settings import Settings
from ml.monitoring.features import sample_rows

TOP_CATEGORIES = 30


def _top_values(current: pd.Series, reference: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Keep the reference's most frequent values and fold the rest into 'other' on both sides.

    A long tail (thousands of brands) gives Jensen-Shannon a sampling bias that reads as drift in
    every window; folded, a surge of new values still shows as a rising 'other'.
    """
    keep = set(reference.value_counts().index[:TOP_CATEGORIES])
    return current.where(current.isin(keep), "other"), reference.where(reference.isin(keep), "other")


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
    left_out: dict[str, str] = field(default_factory=dict)
    """Column → why it was not tested (a source without a catalogue has no category, brand or
    price): left out of the report and of the share, not reported as an empty column."""

    def left_out_note(self) -> str | None:
        """One line for the run's notes naming the columns left out and why (None: none)."""
        if not self.left_out:
            return None
        by_reason: dict[str, list[str]] = {}
        for column, reason in self.left_out.items():
            by_reason.setdefault(reason, []).append(column)
        parts = [f"{', '.join(columns)} ({reason})" for reason, columns in by_reason.items()]
        return f"{self.kind} drift: left out {'; '.join(parts)}"


MISSING_CATEGORY = "unknown"
"""What the feature frames put where an item has no category or brand (or a stage has no days):
a column holding nothing else has no values."""


EMPTY_NUMBER = {"title_length": 0.0}
"""What the feature frames put where an item has no title (its length counts an empty string)."""


def _has_values(column: str, values: pd.Series, categorical: bool) -> bool:
    present = values.notna()
    if categorical:
        present &= values.astype(str) != MISSING_CATEGORY
    elif column in EMPTY_NUMBER:
        present &= values != EMPTY_NUMBER[column]
    return bool(present.any())


def missing_columns(
    current: pd.DataFrame, reference: pd.DataFrame, numerical: list[str], categorical: list[str]
) -> dict[str, str]:
    """The wanted columns a side has no values in, with why: these cannot be drift-tested.

    A source without a catalogue gives every item the category and brand 'unknown', no price and
    an empty title; tested, such a column would read as a constant, 'no drift', and dilute the
    drifted share.
    """
    out: dict[str, str] = {}
    for column in [*numerical, *categorical]:
        is_cat = column in categorical
        now = column in current and _has_values(column, current[column], is_cat)
        before = column in reference and _has_values(column, reference[column], is_cat)
        if not now and not before:
            out[column] = "no values in the interval nor in the reference: the source lacks it"
        elif not now:
            out[column] = "no values in the interval"
        elif not before:
            out[column] = "no values in the reference"
    return out


def drift_report(
    current: pd.DataFrame,
    reference: pd.DataFrame,
    numerical: list[str],
    categorical: list[str],
    settings: Settings,
    kind: str,
    timestamp: datetime | None = None,
) -> tuple[Any, DriftCheck]:
    """Evidently drift of ``current`` against ``reference`` on the usable columns: the share of
    drifted columns (``DriftedColumnsCount``) and each column's distance (``ValueDrift``).

    A column is used when both sides have values in it; both sides are sampled to
    ``settings.drift_sample_rows``. Returns the Evidently snapshot and its :class:`DriftCheck`.
    """
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import DriftedColumnsCount, ValueDrift

    left_out = missing_columns(current, reference, numerical, categorical)
    numerical = [c for c in numerical if c not in left_out]
    categorical = [c for c in categorical if c not in left_out]
    columns = numerical + categorical
    if not columns:
        raise ValueError(f"{kind} drift: no column has values on both sides (left out: {left_out})")
    current = sample_rows(current[columns], settings.drift_sample_rows).copy()
    reference = sample_rows(reference[columns], settings.drift_sample_rows, seed=1).copy()
    definition = DataDefinition(numerical_columns=numerical, categorical_columns=categorical)
    for column in categorical:
        current[column], reference[column] = _top_values(current[column], reference[column])
    # Distances whatever the sample size (Evidently would switch to p-value tests below 1,000
    # rows), so one threshold means the same for every column and window.
    threshold = settings.drift_column_threshold
    methods = {**dict.fromkeys(numerical, "wasserstein"), **dict.fromkeys(categorical, "jensenshannon")}
    # The metrics DataDriftPreset is made of, without its legacy summary table, which computed every
    # column's drift twice more: the same distances and share in ~40% less time (bench/drift.py).
    report = Report(
        [
            DriftedColumnsCount(
                columns=columns,
                drift_share=settings.drift_share_threshold,
                num_method="wasserstein",
                cat_method="jensenshannon",
                threshold=threshold,
            ),
            *(ValueDrift(column=column, method=methods[column], threshold=threshold) for column in columns),
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
    check = DriftCheck(
        kind, 0.0, False, rows_current=len(current), rows_reference=len(reference), left_out=left_out
    )
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


def add_to_workspace(
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
