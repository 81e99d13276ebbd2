"""Live progress for long waits: the task states of awaited Airflow runs, and steps of a command.

A terminal gets a ``rich`` display that redraws in place (a table of the running runs' tasks, the
elapsed time, and a bar where the work has a known size); anything else (CI logs, pipes, files)
gets one plain line per change, so a log reads as a history. What to show is decided by pure
functions (:func:`state_changes`, :func:`task_rows`, :func:`format_elapsed`) that the tests call
without a clock or an Airflow; the classes here only poll-feed them and draw.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

ACTIVE_RUN_STATES = frozenset({"queued", "running"})

TaskKey = tuple[str, str]
"""(run id, task) — the task id, with ``[i]`` for a mapped task's i-th instance."""

STATE_STYLES = {
    "success": "green",
    "running": "cyan",
    "queued": "blue",
    "scheduled": "blue",
    "up_for_retry": "yellow",
    "failed": "bold red",
    "upstream_failed": "red",
    "skipped": "dim",
}


# -- pure: what to show ---------------------------------------------------------------------------
def format_elapsed(seconds: float) -> str:
    """``7`` → ``0:07``, ``725`` → ``12:05``, ``3723`` → ``1:02:03`` (negative counts as zero)."""
    whole = max(0, int(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def short_run_id(run_id: str) -> str:
    """A run id without the UTC offset and sub-second digits Airflow appends to its timestamp."""
    text = run_id.removesuffix("+00:00")
    head, dot, tail = text.rpartition(".")
    return head if dot and tail.isdigit() and "T" in head else text


def task_name(task_instance: Mapping[str, Any]) -> str:
    """The task id, with ``[i]`` for the i-th instance of a mapped task."""
    index = task_instance.get("map_index")
    suffix = f"[{index}]" if isinstance(index, int) and index >= 0 else ""
    return f"{task_instance['task_id']}{suffix}"


def task_states(tasks_by_run: Mapping[str, Sequence[Mapping[str, Any]]]) -> dict[TaskKey, str | None]:
    """``{(run id, task): state}`` from the task instances of each run (the REST API's JSON)."""
    return {
        (run_id, task_name(ti)): ti.get("state")
        for run_id, instances in tasks_by_run.items()
        for ti in instances
    }


def state_changes(
    previous: Mapping[TaskKey, str | None],
    current: Mapping[TaskKey, str | None],
    elapsed: float,
    dag_id: str = "",
) -> list[str]:
    """One line per task whose state changed between two polls, in the order of ``current``.

    A task seen for the first time without a state (created, not yet scheduled) is not a change;
    a task missing from ``current`` (its run was not read this time) is not one either.

    Args:
        previous: states at the last poll (empty at the first).
        current: states now.
        elapsed: seconds since the wait began, shown on every line.
        dag_id: shown before the run id when given.

    Returns:
        e.g. ``"[1:05] ingest_transform_validate backfill__2013-10-01T00:00:00 dbt_build: queued → running"``.
    """
    lines = []
    prefix = f"[{format_elapsed(elapsed)}] " + (f"{dag_id} " if dag_id else "")
    for (run_id, task), state in current.items():
        before = previous.get((run_id, task))
        if state == before:
            continue
        change = f"{before} → {state}" if before else str(state)
        lines.append(f"{prefix}{short_run_id(run_id)} {task}: {change}")
    return lines


def _parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        return None


def task_rows(
    tasks_by_run: Mapping[str, Sequence[Mapping[str, Any]]], now: datetime
) -> list[tuple[str, str, str, str]]:
    """Rows ``(run, task, state, time)`` for the live table, runs and tasks in the API's order.

    The time is the task's duration when it has finished, the time since it started while it runs,
    and empty before it starts.
    """
    rows = []
    for run_id, instances in tasks_by_run.items():
        for ti in instances:
            state = ti.get("state") or "none"
            started, ended = _parse_time(ti.get("start_date")), _parse_time(ti.get("end_date"))
            seconds: float | None = None
            if ti.get("duration") is not None and ended is not None:
                seconds = float(ti["duration"])
            elif started is not None:
                seconds = ((ended or now) - started).total_seconds()
            shown = "" if seconds is None else format_elapsed(seconds)
            rows.append((short_run_id(run_id), task_name(ti), state, shown))
    return rows


def finished_summary(title: str, runs: Sequence[Mapping[str, Any]], elapsed: float) -> str:
    """The line left behind when a wait ends: ``✓ title: 3 runs success in 2:13``."""
    states: dict[str, int] = {}
    for run in runs:
        states[str(run.get("state"))] = states.get(str(run.get("state")), 0) + 1
    ok = bool(runs) and set(states) == {"success"}
    counts = ", ".join(f"{n} {state}" for state, n in sorted(states.items())) or "no runs"
    noun = "run" if len(runs) == 1 else "runs"
    return f"{'✓' if ok else '✗'} {title}: {len(runs)} {noun} ({counts}) in {format_elapsed(elapsed)}"


# -- the display of a wait for runs ---------------------------------------------------------------
class RunsDisplay:
    """Shows the runs a wait watches: live in a terminal, line per change elsewhere.

    The runs watched are those active at some poll (plus ``run_ids`` named up front), so runs that
    finished before the wait began stay out of it. Feed it with :meth:`update` after each poll;
    :meth:`runs_to_read` says whose task instances to fetch (the active ones, and a finished one
    once more so that its last states show).

    Args:
        title: what is awaited, e.g. ``"ingest_transform_validate backfill"``.
        dag_id: the DAG, for the plain lines.
        run_ids: runs watched from the start, whatever their state.
        step: ``(label, done, total)`` of an enclosing loop (e.g. later months 2 of 4), drawn as a bar.
        console: where to draw (default: stdout); a console that is not a terminal gets plain lines.
    """

    def __init__(
        self,
        title: str,
        dag_id: str = "",
        run_ids: Sequence[str] | None = None,
        step: tuple[str, int, int] | None = None,
        console: Console | None = None,
    ) -> None:
        self.title = title
        self.dag_id = dag_id
        self.step = step
        self.console = console or Console()
        self.live_mode = self.console.is_terminal
        self.watched: dict[str, str] = dict.fromkeys(run_ids or (), "")
        self.states: dict[TaskKey, str | None] = {}
        self.tasks: dict[str, list[dict[str, Any]]] = {}
        self.done_read: set[str] = set()
        self.started = time.monotonic()
        self._done_printed = -1
        self.last_runs: list[Mapping[str, Any]] = []
        self._live: Live | None = None

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def __enter__(self) -> RunsDisplay:
        self.started = time.monotonic()
        if self.live_mode:
            self._live = Live(self, console=self.console, refresh_per_second=2, transient=True)
            self._live.start()
        else:
            where = f" ({self.step[0]} {self.step[1] + 1}/{self.step[2]})" if self.step else ""
            self.console.print(f"… waiting for {self.title}{where}", highlight=False, soft_wrap=True)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
        if exc_type is not KeyboardInterrupt:
            # The runs this wait watched; when none was active, the runs it found (all done already).
            runs = [{"state": state} for state in self.watched.values()] or self.last_runs
            summary = finished_summary(self.title, runs, self.elapsed)
            self.console.print(summary, highlight=False, soft_wrap=True)

    def runs_to_read(self, runs: Sequence[Mapping[str, Any]]) -> list[str]:
        """Run ids whose task instances the next :meth:`update` needs."""
        wanted = []
        for run in runs:
            run_id, state = str(run["dag_run_id"]), run.get("state")
            if state in ACTIVE_RUN_STATES or (run_id in self.watched and run_id not in self.done_read):
                wanted.append(run_id)
        return wanted

    def update(
        self, runs: Sequence[Mapping[str, Any]], tasks_by_run: Mapping[str, Sequence[Mapping[str, Any]]]
    ) -> None:
        """Record a poll: the runs (their states) and the task instances read for some of them.

        Off a terminal this prints the tasks' changes, then the runs' (a run ends after its tasks),
        then the count of runs done when it moved.
        """
        self.last_runs = list(runs)
        stamp = f"[{format_elapsed(self.elapsed)}]"
        current = task_states(tasks_by_run)
        lines = state_changes(self.states, current, self.elapsed, self.dag_id)
        self.states.update(current)
        for run_id, instances in tasks_by_run.items():
            self.tasks[run_id] = [dict(ti) for ti in instances]
        for run in runs:
            run_id, state = str(run["dag_run_id"]), str(run.get("state"))
            if state not in ACTIVE_RUN_STATES and run_id not in self.watched:
                continue  # ended before this wait began
            if self.watched.get(run_id) not in ("", None, state):
                lines.append(f"{stamp} {self.dag_id} {short_run_id(run_id)}: run {state}")
            self.watched[run_id] = state
            if state not in ACTIVE_RUN_STATES and run_id in tasks_by_run:
                self.done_read.add(run_id)
        done = sum(1 for s in self.watched.values() if s and s not in ACTIVE_RUN_STATES)
        if len(self.watched) > 1 and done != self._done_printed:
            self._done_printed = done
            lines.append(f"{stamp} {self.title}: {done}/{len(self.watched)} runs done")
        if not self.live_mode:
            for line in lines:
                self.console.print(line, highlight=False, soft_wrap=True)

    def __rich__(self) -> RenderableType:
        """The live view: title and elapsed time, bars of known sizes, the active runs' tasks."""
        parts: list[RenderableType] = [
            Text.assemble((f"⏳ {self.title}", "bold"), f"  {format_elapsed(self.elapsed)}")
        ]
        bars = Table.grid(padding=(0, 1))
        if self.step:
            label, done, total = self.step
            bars.add_row(ProgressBar(total=total, completed=done, width=30), f"{label} {done}/{total}")
        if len(self.watched) > 1:
            done = sum(1 for s in self.watched.values() if s and s not in ACTIVE_RUN_STATES)
            total = len(self.watched)
            bars.add_row(ProgressBar(total=total, completed=done, width=30), f"runs {done}/{total}")
        if bars.row_count:
            parts.append(bars)
        running = {r: t for r, t in self.tasks.items() if self.watched.get(r) == "running"}
        queued = [r for r, state in self.watched.items() if state == "queued"]
        if running or queued:
            table = Table(box=None, pad_edge=False, show_header=True, header_style="dim")
            for column in ("run", "task", "state", "time"):
                table.add_column(column, justify="right" if column == "time" else "left")
            for run, task, state, shown in task_rows(running, datetime.now(UTC)):
                table.add_row(run, task, Text(state, style=STATE_STYLES.get(state, "")), shown)
            # A queued run has no task started yet: one row each, and a count past a few.
            for run in queued[:3]:
                table.add_row(short_run_id(run), "", Text("queued", style=STATE_STYLES["queued"]), "")
            if len(queued) > 3:
                table.add_row(f"… {len(queued) - 3} more queued", "", "", "")
            parts.append(table)
        return Group(*parts)


# -- steps of a command ---------------------------------------------------------------------------
class StepStatus:
    """The step a command is on and its elapsed time: a spinner in a terminal, a line per step elsewhere.

    Each finished step leaves a line ``✓ <step> 0:42``; :meth:`note` shows a detail (e.g. the last
    log message) under the spinner. The spinner leaves stderr alone (tqdm bars write there: redirected
    through rich, each of their ``\r`` updates would become a line of its own).

    Args:
        title: the command, e.g. ``"train"``.
        console: where to draw (default: stdout).
        live: draw a spinner (default: when the console is a terminal); False prints a line as each
            step starts and ends, for commands whose own progress bars hold the terminal.
    """

    def __init__(self, title: str, console: Console | None = None, live: bool | None = None) -> None:
        self.title = title
        self.console = console or Console()
        self.live_mode = self.console.is_terminal if live is None else live and self.console.is_terminal
        self.current: str | None = None
        self.detail = ""
        self.started = self.step_started = time.monotonic()
        self._spinner = Spinner("dots")
        self._live: Live | None = None

    def __enter__(self) -> StepStatus:
        self.started = self.step_started = time.monotonic()
        if self.live_mode:
            self._live = Live(
                self, console=self.console, refresh_per_second=4, transient=True, redirect_stderr=False
            )
            self._live.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._finish_step(failed=exc_type is not None)
        if self._live is not None:
            self._live.stop()
            self._live = None
        if exc_type is None:
            self.console.print(f"{self.title}: done in {format_elapsed(self.elapsed)}", highlight=False)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def step(self, name: str) -> None:
        """End the current step (leaving its line) and start ``name``."""
        self._finish_step()
        self.current, self.detail, self.step_started = name, "", time.monotonic()
        if not self.live_mode:
            self.console.print(f"→ {self.title}: {name} …", highlight=False, soft_wrap=True)

    def note(self, detail: str) -> None:
        """A detail about the current step, shown under the spinner (not printed in plain mode)."""
        self.detail = detail.splitlines()[0][:200] if detail else ""

    def _finish_step(self, failed: bool = False) -> None:
        if self.current is None:
            return
        mark = "✗" if failed else "✓"
        seconds = format_elapsed(time.monotonic() - self.step_started)
        self.console.print(f"{mark} {self.title}: {self.current} {seconds}", highlight=False, soft_wrap=True)
        self.current = None

    def __rich__(self) -> RenderableType:
        step = self.current or "starting"
        text = Text.assemble(
            (f"{self.title}: {step}", "bold"),
            f"  {format_elapsed(time.monotonic() - self.step_started)}",
            (f"  (total {format_elapsed(self.elapsed)})", "dim"),
        )
        if self.detail:
            text.append(f"\n  {self.detail}", style="dim")
        self._spinner.update(text=text)
        return self._spinner

    @contextmanager
    def follow_logs(self, logger: str = "ml") -> Iterator[None]:
        """Show the INFO messages of ``logger`` (and its children) as notes while the block runs."""
        status = self

        class _ToNote(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                try:
                    status.note(record.getMessage())
                except Exception:  # a bad format string must not break the command
                    self.handleError(record)

        target = logging.getLogger(logger)
        handler, level = _ToNote(logging.INFO), target.level
        target.addHandler(handler)
        if target.getEffectiveLevel() > logging.INFO:
            target.setLevel(logging.INFO)
        try:
            yield
        finally:
            target.removeHandler(handler)
            target.setLevel(level)
