"""The request log off the request path (serving.engine.RequestLog with flush_s > 0; issue 14 item 4).

Concurrent writers lose no line and split none; a graceful stop (close, or the interpreter's exit)
drains the queue; a SIGKILL loses only the newest lines and never leaves a broken one.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ml.core.settings import PROJECT_DIR
from serving.engine import RequestLog


def _lines(folder: Path) -> list[dict[str, object]]:
    return [
        json.loads(line)  # every line parses: none is broken
        for path in sorted(folder.glob("requests-*.jsonl"))
        for line in path.read_text().splitlines()
    ]


def test_concurrent_writers_lose_no_line_and_close_drains_the_queue(tmp_path: Path) -> None:
    log = RequestLog(tmp_path, flush_s=0.05)
    writers, per_writer = 8, 300

    def write(w: int) -> None:
        for i in range(per_writer):
            log.write({"endpoint": "recommend", "writer": w, "i": i, "items": ["x" * (i % 50)]})

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log.close()
    lines = _lines(tmp_path)
    assert len(lines) == writers * per_writer == log.lines_written
    assert {(line["writer"], line["i"]) for line in lines} == {
        (w, i) for w in range(writers) for i in range(per_writer)
    }
    for w in range(writers):  # one writer's lines stay in its order
        assert [line["i"] for line in lines if line["writer"] == w] == list(range(per_writer))
    log.write({"endpoint": "late"})  # after close: written at once, not queued forever
    assert _lines(tmp_path)[-1]["endpoint"] == "late"


def test_without_an_interval_a_line_is_written_before_write_returns(tmp_path: Path) -> None:
    log = RequestLog(tmp_path)
    log.write({"endpoint": "search"})
    assert [line["endpoint"] for line in _lines(tmp_path)] == ["search"]
    log.close()


_WRITER = """
import sys, time
from pathlib import Path
from serving.engine import RequestLog
log = RequestLog(Path(sys.argv[1]), flush_s=float(sys.argv[2]))
n = int(sys.argv[3])
i = 0
while n < 0 or i < n:
    log.write({"endpoint": "recommend", "i": i, "items": ["B000000000"] * 10})
    i += 1
    if i == 2000:
        print("writing", flush=True)
    if n < 0:
        time.sleep(0.0001)
"""


@pytest.mark.slow  # a fresh interpreter importing torch; the gate's sibling: the close() test above
def test_a_graceful_exit_loses_no_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _WRITER, str(tmp_path), "0.5", "5000"],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert [line["i"] for line in _lines(tmp_path)] == list(range(5000))


@pytest.mark.slow  # a fresh interpreter importing torch; the gate's sibling: the close() test above
def test_a_sigkill_loses_only_the_newest_lines_and_breaks_none(tmp_path: Path) -> None:
    writer = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(tmp_path), "0.05", "-1"],
        cwd=PROJECT_DIR,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "writing"
        time.sleep(0.5)  # several flushes
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait(30)
    raw = b"".join(p.read_bytes() for p in sorted(tmp_path.glob("requests-*.jsonl")))
    assert raw.endswith(b"\n")  # the file ends on a whole line
    numbers = [line["i"] for line in _lines(tmp_path)]
    assert len(numbers) >= 1000
    assert numbers == list(range(len(numbers)))  # what was lost is only the newest tail
