"""The data platform's stages for one interval, composed in-process.

The Airflow DAG ``ingest_transform_validate`` calls the same stages one task each; this module is
for the CLI (``shopflow run-interval``) and the benchmark, where no scheduler is wanted.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from ml.core.settings import Settings, get_settings
from ml.data.ingest import ingest_interval
from ml.data.quality.marts import validate_marts
from ml.data.quality.raw import check_quarantine_gate, validate_raw
from ml.data.transform import dbt_build


@dataclass
class IntervalResult:
    ingest: Any
    raw_validation: Any
    dbt: Any
    marts_validation: Any


def run_interval(start: date, end: date, run_id: str, settings: Settings | None = None) -> IntervalResult:
    """Ingest → validate raw (quarantine, gate) → dbt build → validate marts, for ``[start, end)``.

    Raises whatever stage fails first (ContractError, QualityGateError, DbtBuildError); the
    publish step is simply not reached then.
    """

    settings = settings or get_settings()
    ingest = ingest_interval(start, end, run_id, settings)
    raw_validation = validate_raw(start, end, run_id, settings)
    check_quarantine_gate(raw_validation, settings)
    dbt = dbt_build(run_id, settings)
    marts_validation = validate_marts(run_id, settings)
    return IntervalResult(ingest, raw_validation, dbt, marts_validation)
