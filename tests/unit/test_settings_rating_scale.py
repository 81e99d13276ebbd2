"""SHOPFLOW_RATING_SCALE: read as JSON from the environment, [lowest, highest] with lowest < highest."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from expectations import marts, raw
from expectations._rules import RATING_MAX, RATING_MIN, rating_scale_parameters
from ml.core.settings import Settings


def test_default_is_0_to_5(monkeypatch):
    monkeypatch.delenv("SHOPFLOW_RATING_SCALE", raising=False)
    assert Settings().rating_scale == (0.0, 5.0)


def test_environment_sets_it(monkeypatch):
    monkeypatch.setenv("SHOPFLOW_RATING_SCALE", "[1, 10]")
    settings = Settings()
    assert settings.rating_scale == (1.0, 10.0)
    assert rating_scale_parameters(settings.rating_scale) == {RATING_MIN: 1.0, RATING_MAX: 10.0}


@pytest.mark.parametrize("value", ["[5, 1]", "[3, 3]", "[1, 2, 3]", "5"])
def test_a_scale_that_is_not_lowest_below_highest_is_refused(monkeypatch, value):
    monkeypatch.setenv("SHOPFLOW_RATING_SCALE", value)
    with pytest.raises(ValidationError, match="rating_scale"):
        Settings()


def test_no_suite_fixes_the_bounds_itself():
    """Every rating rule takes its bounds from the setting (suite parameters), none from literals."""
    suites = [raw.raw_interactions_suite(), *marts.marts_suites(["beauty"]).values()]
    rating_rules = [e for s in suites for e in s.expectations if getattr(e, "column", None) == "rating"]
    assert len(rating_rules) == 2  # the raw gate's and fct_interactions'
    for rule in rating_rules:
        assert rule.min_value == {"$PARAMETER": RATING_MIN}
        assert rule.max_value == {"$PARAMETER": RATING_MAX}


def test_it_reaches_airflow_processes(monkeypatch):
    """settings_env hands settings built in code to Airflow's processes: the scale must survive."""
    from ml.ops.local_airflow import settings_env

    env = settings_env(Settings(rating_scale=(1, 10)))
    assert env["SHOPFLOW_RATING_SCALE"] == "[1.0, 10.0]"
    monkeypatch.setenv("SHOPFLOW_RATING_SCALE", env["SHOPFLOW_RATING_SCALE"])
    assert Settings().rating_scale == (1.0, 10.0)
