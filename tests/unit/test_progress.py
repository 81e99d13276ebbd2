"""ml.ops.progress without a clock or an Airflow: what the waits and the commands show."""

from __future__ import annotations

import io
import logging
import re
from datetime import UTC, datetime
from typing import Any

import pytest
from rich.console import Console

from ml.ops.progress import (
    RunsDisplay,
    StepStatus,
    finished_summary,
    format_elapsed,
    short_run_id,
    state_changes,
    task_rows,
    task_states,
)

RUN = "backfill__2013-10-01T00:00:00+00:00"
ELAPSED = re.compile(r"^\[\d+:\d\d\]|\d+:\d\d$")
"""An elapsed time where the lines show one: first in brackets, or last."""


def _console(terminal: bool = False) -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=terminal, width=120, color_system=None), out


# -- pure functions -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(-3, "0:00"), (0, "0:00"), (7.9, "0:07"), (60, "1:00"), (725, "12:05"), (3599, "59:59"),
     (3600, "1:00:00"), (3723, "1:02:03"), (36_000, "10:00:00")],
)  # fmt: skip
def test_format_elapsed(seconds: float, shown: str) -> None:
    assert format_elapsed(seconds) == shown


@pytest.mark.parametrize(
    ("run_id", "short"),
    [
        ("manual__2026-12-02T10:12:33.123456+00:00", "manual__2026-12-02T10:12:33"),
        (RUN, "backfill__2013-10-01T00:00:00"),
        ("monitor__manual__2026-12-02T10:12:33+00:00", "monitor__manual__2026-12-02T10:12:33"),
        ("cli__train__ab12.5", "cli__train__ab12.5"),  # no timestamp: kept as it is
    ],
)
def test_short_run_id(run_id: str, short: str) -> None:
    assert short_run_id(run_id) == short


def test_task_states_key_mapped_instances_by_index() -> None:
    tasks = {
        "r": [
            {"task_id": "ingest", "state": "success", "map_index": -1},
            {"task_id": "score", "state": "running", "map_index": 0},
            {"task_id": "score", "state": None, "map_index": 1},
        ]
    }
    assert task_states(tasks) == {
        ("r", "ingest"): "success",
        ("r", "score[0]"): "running",
        ("r", "score[1]"): None,
    }


def test_state_changes_name_each_change_once_in_task_order() -> None:
    previous = {(RUN, "ingest"): "running", (RUN, "validate_raw"): None, (RUN, "dbt_build"): None}
    current = {
        (RUN, "ingest"): "success",  # changed
        (RUN, "validate_raw"): "queued",  # first state
        (RUN, "dbt_build"): None,  # still none: not a change
        (RUN, "validate_marts"): None,  # new, no state yet: not a change
        ("other", "ingest"): "running",  # a run seen for the first time
    }
    assert state_changes(previous, current, 65, "d") == [
        "[1:05] d backfill__2013-10-01T00:00:00 ingest: running → success",
        "[1:05] d backfill__2013-10-01T00:00:00 validate_raw: queued",
        "[1:05] d other ingest: running",
    ]


def test_state_changes_without_changes_or_missing_runs_say_nothing() -> None:
    states = {(RUN, "ingest"): "running"}
    assert state_changes(states, states, 10) == []
    assert state_changes(states, {}, 10) == []  # the run was not read this poll
    assert state_changes({}, {}, 0) == []


def test_task_rows_show_durations_running_times_and_blanks() -> None:
    now = datetime(2026, 12, 2, 10, 0, 0, tzinfo=UTC)
    tasks = {
        RUN: [
            {"task_id": "ingest", "state": "success", "start_date": "2026-12-02T09:50:00Z",
             "end_date": "2026-12-02T09:51:05Z", "duration": 65.2},
            {"task_id": "validate_raw", "state": "running", "start_date": "2026-12-02T09:58:30+00:00",
             "end_date": None, "duration": None},
            {"task_id": "dbt_build", "state": None, "start_date": None, "end_date": None},
        ]
    }  # fmt: skip
    assert task_rows(tasks, now) == [
        ("backfill__2013-10-01T00:00:00", "ingest", "success", "1:05"),
        ("backfill__2013-10-01T00:00:00", "validate_raw", "running", "1:30"),
        ("backfill__2013-10-01T00:00:00", "dbt_build", "none", ""),
    ]


def test_finished_summary() -> None:
    assert finished_summary("t", [{"state": "success"}], 3) == "✓ t: 1 run (1 success) in 0:03"
    runs = [{"state": "success"}, {"state": "failed"}, {"state": "success"}]
    assert finished_summary("t", runs, 125) == "✗ t: 3 runs (1 failed, 2 success) in 2:05"
    assert finished_summary("t", [], 0) == "✗ t: 0 runs (no runs) in 0:00"


# -- the display of a wait ------------------------------------------------------------------------
def _polls() -> list[tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]]]:
    """Three polls of a backfill of two runs, with an older run that finished before the wait."""
    old = {"dag_run_id": "manual__old", "state": "success"}
    a, b = "backfill__2013-10-01T00:00:00+00:00", "backfill__2013-11-01T00:00:00+00:00"

    def ti(task: str, state: str | None) -> dict[str, Any]:
        return {"task_id": task, "state": state}

    return [
        (
            [old, {"dag_run_id": a, "state": "running"}, {"dag_run_id": b, "state": "queued"}],
            {a: [ti("ingest", "running"), ti("dbt", None)], b: [ti("ingest", None), ti("dbt", None)]},
        ),
        (
            [old, {"dag_run_id": a, "state": "success"}, {"dag_run_id": b, "state": "running"}],
            {
                a: [ti("ingest", "success"), ti("dbt", "success")],
                b: [ti("ingest", "running"), ti("dbt", None)],
            },
        ),
        (
            [old, {"dag_run_id": a, "state": "success"}, {"dag_run_id": b, "state": "success"}],
            {b: [ti("ingest", "success"), ti("dbt", "success")]},
        ),
    ]


def test_a_wait_reads_the_active_runs_and_each_finished_one_once_more() -> None:
    console, _ = _console()
    display = RunsDisplay("d backfill", "d", console=console)
    first, second, third = _polls()
    # The run that finished before the wait is never read; the active ones are.
    assert display.runs_to_read(first[0]) == [first[0][1]["dag_run_id"], first[0][2]["dag_run_id"]]
    display.update(*first)
    # a has just finished: read once more for its last states, then no more.
    assert display.runs_to_read(second[0]) == [second[0][1]["dag_run_id"], second[0][2]["dag_run_id"]]
    display.update(*second)
    assert display.runs_to_read(third[0]) == [third[0][2]["dag_run_id"]]


def test_a_wait_off_a_terminal_prints_one_line_per_change() -> None:
    console, out = _console(terminal=False)
    with RunsDisplay("d backfill", "d", console=console) as display:
        for runs, tasks in _polls():
            display.update(runs, tasks)
    lines = [ELAPSED.sub("T", line) for line in out.getvalue().splitlines()]
    assert lines == [
        "… waiting for d backfill",
        "T d backfill__2013-10-01T00:00:00 ingest: running",
        "T d backfill: 0/2 runs done",
        "T d backfill__2013-10-01T00:00:00 ingest: running → success",
        "T d backfill__2013-10-01T00:00:00 dbt: success",
        "T d backfill__2013-11-01T00:00:00 ingest: running",
        "T d backfill__2013-10-01T00:00:00: run success",
        "T d backfill__2013-11-01T00:00:00: run running",
        "T d backfill: 1/2 runs done",
        "T d backfill__2013-11-01T00:00:00 ingest: running → success",
        "T d backfill__2013-11-01T00:00:00 dbt: success",
        "T d backfill__2013-11-01T00:00:00: run success",
        "T d backfill: 2/2 runs done",
        "✓ d backfill: 2 runs (2 success) in T",
    ]


def test_a_wait_in_a_terminal_draws_bars_and_the_active_runs_tasks() -> None:
    console, out = _console(terminal=True)
    display = RunsDisplay("d [2014-01-01, 2014-02-01)", "d", console=console, step=("later intervals", 1, 4))
    first, second, _ = _polls()
    display.update(*first)
    display.update(*second)
    console.print(display)  # one frame of the live view
    frame = out.getvalue()
    assert "⏳ d [2014-01-01, 2014-02-01)" in frame
    assert "later intervals 1/4" in frame
    assert "runs 1/2" in frame
    # Only the running run's tasks are listed; the finished run has left the table.
    assert "backfill__2013-11-01T00:00:00" in frame
    assert "backfill__2013-10-01T00:00:00" not in frame
    assert re.search(r"ingest\s+running", frame)


def test_the_live_view_lists_queued_runs_in_one_row_each_and_counts_past_three() -> None:
    console, out = _console(terminal=True)
    display = RunsDisplay("d backfill", "d", console=console)
    runs = [
        {"dag_run_id": f"backfill__2013-{m:02d}-01T00:00:00+00:00", "state": "queued"} for m in range(1, 7)
    ]
    display.update(runs, {r["dag_run_id"]: [{"task_id": "ingest", "state": None}] for r in runs})
    console.print(display)
    frame = out.getvalue()
    assert "runs 0/6" in frame
    assert len(re.findall(r"backfill__2013-0\d-01T00:00:00\s+queued", frame)) == 3
    assert "… 3 more queued" in frame
    assert "ingest" not in frame


# -- steps of a command ---------------------------------------------------------------------------
def test_steps_off_a_terminal_print_a_line_as_each_starts_and_ends() -> None:
    console, out = _console(terminal=False)
    with StepStatus("train", console=console) as status:
        status.step("training")
        status.note("not printed off a terminal")
        status.step("evaluation")
    lines = [ELAPSED.sub("T", line) for line in out.getvalue().splitlines()]
    assert lines == [
        "→ train: training …",
        "✓ train: training T",
        "→ train: evaluation …",
        "✓ train: evaluation T",
        "train: done in T",
    ]


def test_a_failing_step_is_marked_and_the_error_goes_on() -> None:
    console, out = _console(terminal=False)
    with pytest.raises(ValueError, match="boom"), StepStatus("run-interval", console=console) as status:
        status.step("dbt build")
        raise ValueError("boom")
    assert [ELAPSED.sub("T", line) for line in out.getvalue().splitlines()] == [
        "→ run-interval: dbt build …",
        "✗ run-interval: dbt build T",
    ]


def test_the_spinner_shows_the_step_and_the_last_log_message() -> None:
    console, out = _console(terminal=True)
    status = StepStatus("run-interval", console=console)
    logger = logging.getLogger("ml.data.quality.raw")
    level = logging.getLogger("ml").level
    with status.follow_logs():
        status.current = "ingest → validate raw"
        logger.info("validate_raw %s: %d rows", "r1", 12)
        console.print(status)  # one frame
    assert logging.getLogger("ml").level == level  # the logger is left as it was
    frame = out.getvalue()
    assert "run-interval: ingest → validate raw" in frame
    assert "validate_raw r1: 12 rows" in frame
