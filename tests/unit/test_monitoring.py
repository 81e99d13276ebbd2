"""Monitoring's pure parts: the decision, online quality, drift on controlled data, the notifier."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pytest

from ml.core.pii import user_hash
from ml.core.settings import Settings
from ml.monitoring.decision import Decision, decide, notify
from ml.monitoring.drift import drift_report
from ml.monitoring.features import DATA_CATEGORICAL, DATA_NUMERICAL, prediction_features
from ml.monitoring.online import online_quality
from ml.monitoring.run import MonitorResult

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def test_no_alarm_means_no_action(settings: Settings) -> None:
    assert decide([], settings, in_flight=0, last_retrain_at=None, now=NOW).action == "none"


def test_alarm_retrains_unless_in_flight_or_cooling_down(settings: Settings) -> None:
    alarms = ["data drift: 60% of columns drifted (price)"]
    assert decide(alarms, settings, 0, None, NOW) == Decision("retrain", alarms[0], alarms)

    busy = decide(alarms, settings, in_flight=1, last_retrain_at=None, now=NOW)
    assert busy.action == "alert" and "1 training run(s) in flight" in busy.reason

    cooldown = settings.retrain_cooldown_minutes
    recent = decide(alarms, settings, 0, NOW - timedelta(minutes=cooldown - 1), NOW)
    assert recent.action == "alert" and "cool-down until" in recent.reason
    assert decide(alarms, settings, 0, NOW - timedelta(minutes=cooldown + 1), NOW).action == "retrain"


def test_online_hit_rate_on_a_hand_computed_case(settings: Settings) -> None:
    settings = settings.model_copy(update={"min_monitored_requests": 2, "min_online_hit_ratio": 0.5})
    requests = pd.DataFrame(
        {
            "user_hash": [user_hash("u1"), user_hash("u2"), user_hash("u3"), None],
            "items": [["a", "b"], ["c"], ["d"], ["a"]],
        }
    )
    # u1 bought b (hit), u2 bought x (miss), u3 never came back (not judged), the anonymous one is not judged.
    outcomes = pd.DataFrame({"user_id": ["u1", "u2", "u2"], "item_id": ["b", "x", "y"]})
    quality = online_quality(requests, outcomes, expected=0.8, settings=settings)
    assert (quality.hit_rate, quality.judged, quality.served) == (0.5, 2, 3)
    assert not quality.low  # 0.5 >= 0.5 x 0.8
    assert online_quality(requests, outcomes, expected=1.2, settings=settings).low  # 0.5 < 0.6

    too_few = settings.model_copy(update={"min_monitored_requests": 3})
    judged_two = online_quality(requests, outcomes, expected=1.2, settings=too_few)
    assert judged_two.judged == 2 and not judged_two.low and "not enough" in judged_two.note


def _world(rng: np.random.Generator, n: int, price_scale: float = 1.0, cats: Any = None) -> pd.DataFrame:
    cats = cats if cats is not None else [0.5, 0.3, 0.2]
    return pd.DataFrame(
        {
            "price": rng.lognormal(2.5, 0.6, n) * price_scale,
            "title_length": rng.normal(60, 15, n),
            "history_length": rng.poisson(6, n).astype(float),
            "category": rng.choice(["Skin", "Hair", "Makeup"], n, p=cats),
        }
    )


def test_drift_report_finds_exactly_the_columns_that_changed(settings: Settings) -> None:
    rng = np.random.default_rng(7)
    reference = _world(rng, 20_000)

    _, same = drift_report(_world(rng, 5_000), reference, DATA_NUMERICAL, DATA_CATEGORICAL, settings, "data")
    assert same.share == 0.0 and not same.drifted and same.drifted_columns == []
    assert set(same.columns) == {"price", "title_length", "history_length", "category"}
    assert max(same.columns.values()) < 0.05

    shifted = _world(rng, 5_000, price_scale=2.0, cats=[0.1, 0.2, 0.7])
    snapshot, moved = drift_report(shifted, reference, DATA_NUMERICAL, DATA_CATEGORICAL, settings, "data")
    assert sorted(moved.drifted_columns) == ["category", "price"]
    assert moved.share == 0.5 and moved.drifted  # 2 of 4 columns, threshold 0.5
    assert moved.columns["price"] > 0.5 and moved.columns["title_length"] < 0.05
    assert snapshot.dict()["metrics"]  # a real Evidently snapshot, savable as HTML/JSON


def test_drift_sampling_bounds_the_rows_compared(settings: Settings) -> None:
    settings = settings.model_copy(update={"drift_sample_rows": 1_000})
    rng = np.random.default_rng(1)
    _, check = drift_report(_world(rng, 8_000), _world(rng, 9_000), ["price"], [], settings, "data")
    assert (check.rows_current, check.rows_reference) == (1_000, 1_000)


def test_prediction_features_describe_what_was_shown() -> None:
    requests = pd.DataFrame(
        {
            "items": [["a", "b"], ["c"], []],
            "scores": [[0.9, 0.5], [0.4], []],
            "strategy": ["personalized", "cold_start_popular", "personalized"],
        }
    )
    items = pd.DataFrame({"item_id": ["a", "b", "c"], "category": ["Skin", "Hair", None]})
    popularity = pd.Series({"a": 1.0, "b": 0.5})
    frame = prediction_features(requests, items, popularity)
    assert frame["top_score"].tolist()[:2] == [0.9, 0.4]
    assert frame["mean_score"].tolist()[:2] == [pytest.approx(0.7), 0.4]
    assert frame["mean_item_popularity"].tolist()[:2] == [0.75, 0.0]
    assert frame["top_category"].tolist() == ["Skin", "unknown", "none"]


def _result() -> MonitorResult:
    version = "shopflow_recommender:v1"
    return MonitorResult("run-1", "2014-01-01", "2014-02-01", version, None, None, None, "/r")


class _Hook(BaseHTTPRequestHandler):
    received: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Hook.received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_alert_is_posted_to_the_webhook_and_a_dead_webhook_does_not_raise(settings: Settings) -> None:
    server = HTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.handle_request, daemon=True)
    thread.start()
    decision = Decision("retrain", "data drift: 60% of columns drifted (price)", ["data drift"])
    url = f"http://127.0.0.1:{server.server_port}/hook"
    sent = notify(decision, _result(), settings.model_copy(update={"alert_webhook_url": url}))
    thread.join(10)
    server.server_close()
    assert sent == {"logged": True, "webhook": 204}
    payload = _Hook.received[-1]
    assert payload["action"] == "retrain" and payload["model_version"] == "shopflow_recommender:v1"
    assert payload["interval"] == ["2014-01-01", "2014-02-01"] and "price" in payload["reason"]

    dead = notify(decision, _result(), settings.model_copy(update={"alert_webhook_url": url}))
    assert dead["logged"] and dead["webhook"] is None and dead["webhook_error"]


def test_monitor_result_survives_its_xcom_round_trip() -> None:
    result = _result()
    assert MonitorResult.from_dict(json.loads(json.dumps(result.as_dict()))) == result


def test_new_marts_retrain_only_until_there_is_a_champion(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.sdk.api.datamodels._generated import DagRunType

    from ml import registry
    from ml.training.stages import publish_skip_reason

    assert publish_skip_reason(DagRunType.ASSET_TRIGGERED, settings) is None  # no champion yet
    monkeypatch.setattr(registry, "champion", lambda _settings: "shopflow_recommender:v1")
    # The Task SDK's enum prints as 'DagRunType.ASSET_TRIGGERED': its value must be what counts.
    reason = publish_skip_reason(DagRunType.ASSET_TRIGGERED, settings)
    assert reason is not None and "shopflow_recommender:v1 is champion" in reason
    assert publish_skip_reason("asset_triggered", settings) == reason
    assert publish_skip_reason(DagRunType.MANUAL, settings) is None  # monitor or a person asked
    always = settings.model_copy(update={"retrain_on_publish": "always"})
    assert publish_skip_reason(DagRunType.ASSET_TRIGGERED, always) is None
