"""Benchmark: the Bento under load vs two floors, side by side in one run.

For ``recommend`` (known users by id), ``search`` (short free-text queries), ``similar`` (items of
the users' histories) and ``bundle`` (the seeds of the packaged bundles), and for the Bento's
adaptive-batching twins ``recommend_batch`` and ``similar_batch`` (the same bodies, one per
request, merged by BentoML's dispatcher), at 1, 8 and 32 concurrent clients for a fixed time
each: p50/p95/p99 latency, requests/s and errors of ``bentoml serve serving.service:Recommender``
over loopback HTTP, and, in the same run,

- the in-process floor: ``serving.engine.ServingModel`` called by as many threads (no HTTP; for
  search also one caller encoding batches of that size) -> ``ratio_to_floor`` in each cell;
- the bare-ASGI floor: the same ServingModel behind a plain Starlette app on uvicorn, one worker,
  the same request/response models (``serving/asgi_floor.py``) -> ``ratio_to_asgi`` and
  ``p99_ratio_to_asgi``: what BentoML costs over what a user would write by hand.

The load generator is wrk (C, one thread; ``bench/wrk/post_json.lua`` cycles the JSON bodies),
so the client takes little of the 2 cores the server needs; its CPU per request is recorded
beside the server's (``--client raw`` uses the Python client of ``serving/loadtest.py``).
Then py-spy samples the Bento under 32-client recommend load and the samples are split by where
they are (HTTP parsing, BentoML's middleware and framework, pydantic, the model call, the request
log write): ``profile``. Then ``/ask``, which is bound by generation, gets cells of its own (1 and
4 clients, shopper questions): p50/p99 per answer, the mix of generated and template answers, and
the generator's tokens per second of answer time (``ask``). Startup time and peak RSS of both
servers are reported (``servers``).

The model is the configured store's champion; without one (a clean clone) a small real model is
trained on a slice of the shipped Beauty data and promoted in a store of the benchmark's own
(``<work_dir>/bench/serving``) — the same helper the serving tests use. The server's request log
goes to that folder too, so benchmark traffic never reaches the monitoring logs. The floor runs
before the server starts, so the two never share the CPU.

Goals on 2 CPU cores (issue 14): recommend p99 <= 50 ms at 32 clients, throughput >= 0.5x the
in-process floor and >= 0.8x the bare-ASGI floor, 0 errors; bundle p99 <= 50 ms at 32 clients.
Prints a table, writes
bench/results/serving.json (figures, goals, machine, load average, date); exits 1 if a goal is
missed (``--no-check`` to exit 0).

    make bench-serving
    python bench/serving.py --seconds 5 --floor-seconds 3     # a quick try
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import platform
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

PROJECT_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_DIR))
RESULTS = PROJECT_DIR / "bench" / "results" / "serving.json"
ENDPOINTS = ("recommend", "search", "similar", "bundle")
BATCHED = {"recommend_batch": ("recommend", "requests"), "similar_batch": ("similar", "queries")}
"""The Bento's adaptive-batching endpoints: each client sends one single-endpoint body wrapped in a
one-element list (the dispatcher merges concurrent ones), compared with the single endpoint's floors."""
ASK_CONCURRENCY = (1, 4)
ASK_QUESTIONS = (
    "do you have a red matte lipstick?",
    "how much is a moisturizing face cream?",
    "which shampoo is good for dry hair?",
    "who makes a nail polish remover?",
    "do you sell a sunscreen for the face?",
    "i need an eye cream for dark circles",
)
"""Shopper questions for /ask (general, price and maker questions over the shop's categories)."""
GOAL_P99_MS = 50.0
GOAL_RATIO_FLOOR = 0.5
GOAL_RATIO_ASGI = 0.8
PROFILE_RATE_HZ = 100


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def machine() -> dict[str, Any]:
    import bentoml
    import faiss
    import torch

    return {
        "cpus": os.cpu_count(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "bentoml": bentoml.__version__,
        "faiss": faiss.__version__,
        "load_average_at_start": load_average(),
    }


def ensure_model(users: int) -> tuple[Any, str, Path, str]:
    """(settings of the store, tag, version folder, where it came from) of the model to serve."""
    from ml import registry
    from ml.core.settings import Settings, get_settings
    from ml.flows.sample_champion import register_sample_champion

    settings = get_settings()
    tag = registry.champion(settings)
    if tag is not None:
        return settings, tag, registry.get(tag, settings).path, f"champion of {settings.bentoml_home}"
    # A new Settings (not model_copy): the store's path is derived from work_dir at validation.
    own = Settings(work_dir=settings.work_dir / "bench" / "serving", data_dir=settings.data_dir)
    tag = registry.champion(own)
    if tag is not None:
        return own, tag, registry.get(tag, own).path, f"sample champion of {own.bentoml_home} (reused)"
    print(f"no champion in {settings.bentoml_home}: training a sample model on {users} users", flush=True)
    mark = time.perf_counter()
    sample = register_sample_champion(own, own.work_dir / "sample", users=users, run_id="bench-serving")
    print(f"  trained and registered {sample.tag} in {time.perf_counter() - mark:.0f} s", flush=True)
    return own, sample.tag, sample.version_dir, f"sample champion of {own.bentoml_home} ({users} users)"


def floor_cell(
    call: Callable[[dict[str, Any]], Any],
    payloads: Sequence[dict[str, Any]],
    callers: int,
    seconds: float,
    warmup_s: float,
    per_call: int = 1,
) -> dict[str, Any]:
    """``callers`` threads calling ``call`` back to back for ``seconds``: throughput and latency."""
    from serving.loadtest import percentiles_ms

    counter = itertools.count()
    latencies: list[list[float]] = [[] for _ in range(callers)]
    errors = [0] * callers
    start = time.perf_counter()
    measure_from = start + warmup_s
    stop = measure_from + seconds

    def worker(slot: int) -> None:
        while (sent := time.perf_counter()) < stop:
            payload = payloads[next(counter) % len(payloads)]
            try:
                call(payload)
            except Exception:
                errors[slot] += 1
            if sent >= measure_from:
                latencies[slot].append(time.perf_counter() - sent)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(callers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    measured = time.perf_counter() - measure_from
    flat = [x for per in latencies for x in per]
    return {
        "callers": callers,
        "per_call": per_call,
        "seconds": round(measured, 2),
        "calls": len(flat),
        "errors": sum(errors),
        "requests_per_s": round(len(flat) * per_call / measured, 1),
        **percentiles_ms(flat),
    }


def run_floor(
    version_dir: Path,
    tag: str,
    work: Path,
    payloads: dict[str, list[dict[str, Any]]],
    concurrency: Sequence[int],
    seconds: float,
    warmup_s: float,
) -> dict[str, Any]:
    from serving.engine import ServingModel

    engine = ServingModel(version_dir, tag=tag, log_dir=work / "floor_logs", work_dir=work)
    engine.warm_up()  # as the service does: known users' vectors precomputed
    calls: dict[str, Callable[[dict[str, Any]], Any]] = {
        "recommend": lambda p: engine.recommend(user_id=p["user_id"], k=p["k"]),
        "search": lambda p: engine.search(p["query"], p["k"]),
        "similar": lambda p: engine.similar(p["item_id"], p["k"]),
        "bundle": lambda p: engine.bundle(item_id=p["item_id"], size=p["size"]),
    }
    out: dict[str, Any] = {name: {} for name in calls} | {"search_batched": {}}
    for endpoint, call in calls.items():
        for n in concurrency:
            cell = floor_cell(call, payloads[endpoint], n, seconds, warmup_s)
            out[endpoint][str(n)] = cell
            print(f"  floor {endpoint:<9} {n:>3} callers: {cell['requests_per_s']:>8.1f}/s", flush=True)
    queries = [p["query"] for p in payloads["search"]]
    for n in concurrency:
        batches = [
            {"queries": [queries[(i + j) % len(queries)] for j in range(n)]} for i in range(len(queries))
        ]
        cell = floor_cell(
            lambda p: engine.search_many(p["queries"], 10), batches, 1, seconds, warmup_s, per_call=n
        )
        out["search_batched"][str(n)] = cell
        print(f"  floor search batch {n:>3}: {cell['requests_per_s']:>8.1f} queries/s", flush=True)
    out["items"] = len(engine.item_ids) - 1
    out["search_encoder"] = {"passes": engine.query_combiner.passes, "queries": engine.query_combiner.encoded}
    out["user_cache"] = {"hits": engine.user_cache.hits, "misses": engine.user_cache.misses}
    return out  # the engine is dropped here, before the server loads its own copy


def service_config(tag: str) -> dict[str, Any]:
    """The served configuration: BentoML's service config and the engine's thread settings."""
    import importlib

    os.environ.setdefault("SHOPFLOW_SERVING_MODEL", tag)  # the module resolves its model at import
    service = importlib.import_module("serving.service")
    return {**service.Recommender.config, "engine_threads": service.SERVING_THREADS}


def server_cpu_seconds(pid: int) -> float:
    """CPU time of the server's process tree: its cost per request, whatever else runs."""
    import psutil

    total = 0.0
    root = psutil.Process(pid)
    for proc in [root, *root.children(recursive=True)]:
        try:
            times = proc.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def peak_rss_mb(pid: int) -> dict[str, float]:
    """Peak resident memory (VmHWM) of each process of a server's tree, and their sum, in MiB."""
    import psutil

    out: dict[str, float] = {}
    root = psutil.Process(pid)
    for proc in [root, *root.children(recursive=True)]:
        try:
            status = Path(f"/proc/{proc.pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                out[str(proc.pid)] = round(int(line.split()[1]) / 1024, 1)
    out["total"] = round(sum(out.values()), 1)
    return out


@contextmanager
def running_asgi_floor(version_dir: Path, tag: str, work: Path, timeout_s: float = 300.0) -> Iterator[Any]:
    """``python -m serving.asgi_floor`` on a free loopback port, ready on entry, stopped on exit."""
    import signal
    import subprocess
    from types import SimpleNamespace

    import httpx

    from ml.core.net import free_port

    port = free_port()
    log_path = work / "serving_logs" / f"asgi-floor-{port}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with log_path.open("w") as log_file:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "serving.asgi_floor",
                "--model-dir",
                str(version_dir),
                "--tag",
                tag,
                "--port",
                str(port),
                "--log-dir",
                str(work / "asgi_floor_logs"),
                "--work-dir",
                str(work),
            ],
            cwd=PROJECT_DIR,
            env={**os.environ, "SHOPFLOW_WORK_DIR": str(work), "SHOPFLOW_SERVING_MODEL": tag},
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            while True:
                if server.poll() is not None:
                    raise RuntimeError(f"the ASGI floor exited early:\n{log_path.read_text()[-3000:]}")
                if time.monotonic() - started > timeout_s:
                    raise RuntimeError(f"the ASGI floor was not ready in {timeout_s:.0f} s (log: {log_path})")
                try:
                    if httpx.get(f"{base}/readyz", timeout=5).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.5)
            yield SimpleNamespace(base_url=base, ready_s=round(time.monotonic() - started, 2), process=server)
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait(timeout=10)


def http_cells(
    name: str,
    server: Any,
    payloads: dict[str, list[dict[str, Any]]],
    args: argparse.Namespace,
    token: str | None,
    endpoints: Sequence[str] = ENDPOINTS,
) -> list[dict[str, Any]]:
    """Every (endpoint, clients) cell against one running server, with server and client CPU."""
    from serving.loadtest import run_cell, run_wrk_cell

    rows = []
    for endpoint in endpoints:
        for n in args.concurrency:
            cpu = server_cpu_seconds(server.process.pid)
            if args.client == "wrk":
                cell = run_wrk_cell(
                    server.base_url, endpoint, payloads[endpoint], n, args.seconds, args.warmup, token=token
                )
            else:
                headers = {"Authorization": f"Bearer {token}"} if token else {}
                cell = run_cell(
                    server.base_url, endpoint, payloads[endpoint], n, args.seconds, args.warmup, headers
                )
            row = asdict(cell)
            spent = server_cpu_seconds(server.process.pid) - cpu  # warm-up included: an upper bound
            answered = max(cell.requests, 1)
            row["server_cpu_ms_per_request"] = round(spent * 1000 / answered, 3)
            row["client_cpu_ms_per_request"] = (
                None if cell.client_cpu_s is None else round(cell.client_cpu_s * 1000 / answered, 3)
            )
            row["load_average_after"] = load_average()
            rows.append(row)
            print(
                f"  {name:<5} {endpoint:<9} {n:>3} clients: {cell.requests_per_s:>8.1f}/s  "
                f"p99 {cell.p99_ms:>7.1f} ms  errors {cell.errors}  cpu/req server "
                f"{row['server_cpu_ms_per_request']:.2f} ms, client {row['client_cpu_ms_per_request']} ms",
                flush=True,
            )
    return rows


def _ask_closed_loop(
    base_url: str, headers: dict[str, str], clients: int, seconds: float
) -> list[tuple[float, int, dict[str, Any]]]:
    """``clients`` threads asking ASK_QUESTIONS back to back for ``seconds``: (latency, status, body)."""
    import httpx

    answers: list[tuple[float, int, dict[str, Any]]] = []
    lock = threading.Lock()
    counter = itertools.count()
    stop = time.perf_counter() + seconds

    def client() -> None:
        with httpx.Client(base_url=base_url, headers=headers, timeout=120) as http:
            while time.perf_counter() < stop:
                question = ASK_QUESTIONS[next(counter) % len(ASK_QUESTIONS)]
                sent = time.perf_counter()
                response = http.post("/ask", json={"question": question})
                took = time.perf_counter() - sent
                body = response.json() if response.status_code == 200 else {}
                with lock:
                    answers.append((took, response.status_code, body))

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return answers


def ask_cells(server: Any, token: str | None, seconds: float, settings: Any) -> dict[str, Any]:
    """``/ask`` under 1 and 4 closed-loop clients (Python threads: an answer takes seconds, so the
    client's cost does not matter): p50/p99 per answer, the strategies served, and the generator's
    tokens per second of answer time (generated answers counted with its tokenizer).

    There is no answer cache: every question is answered afresh (retrieval, then the generator
    within ``SHOPFLOW_ASK_TIME_BUDGET_S``; while it writes one answer, concurrent questions get the
    template), so the cache-hit rate is 0 by construction.
    """
    from serving.loadtest import percentiles_ms

    tokenizer, why_no_tokens = None, None
    try:
        from transformers import AutoTokenizer

        from ml.generation.load import cache_entry, packaged_gguf

        folder = cache_entry(settings.generator_cache_dir, packaged_gguf())
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except Exception as error:  # the counts are a side figure: say why they are missing
        why_no_tokens = f"no generator tokenizer to count with: {error}"
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    cells: dict[str, Any] = {}
    for clients in ASK_CONCURRENCY:
        answers = _ask_closed_loop(server.base_url, headers, clients, seconds)
        ok = [(took, body) for took, status, body in answers if status == 200]
        generated = [(took, body) for took, body in ok if body.get("strategy") == "generated"]
        strategies = {
            name: sum(1 for _, b in ok if b.get("strategy") == name)
            for name in ("generated", "template", "no_match")
        }
        cell: dict[str, Any] = {
            "clients": clients,
            "answers": len(answers),
            "errors": len(answers) - len(ok),
            "strategies": strategies,
            "per_answer": percentiles_ms([took for took, _ in ok]),
            "generated_per_answer": percentiles_ms([took for took, _ in generated]),
            "cache_hit_rate": 0.0,
        }
        if tokenizer is not None and generated:
            tokens = sum(len(tokenizer(b["answer"])["input_ids"]) for _, b in generated)
            cell["generated_tokens"] = tokens
            cell["tokens_per_s_of_answer_time"] = round(tokens / sum(t for t, _ in generated), 1)
        cells[str(clients)] = cell
        print(
            f"  ask {clients:>2} clients: {len(ok)} answers {strategies}, p50 "
            f"{cell['per_answer'].get('p50_ms')} ms, p99 {cell['per_answer'].get('p99_ms')} ms, "
            f"tokens/s {cell.get('tokens_per_s_of_answer_time')}",
            flush=True,
        )
    return {
        "cells": cells,
        "questions": list(ASK_QUESTIONS),
        "cache": "none: every /ask is answered afresh (cache_hit_rate 0 by construction)",
        "tokens_note": why_no_tokens
        or "answer tokens (the generator's tokenizer) over the generated answers' latency: retrieval "
        "and the grounding check are inside that time, so this is a floor on decoding speed",
    }


# Where a sampled stack is: the first rule that matches wins (see classify_stack).
PROFILE_BUCKETS = (
    "request_log_write",
    "model_call",
    "pydantic_validation_serialisation",
    "shopflow_middleware",
    "bentoml_middleware",
    "bentoml_framework",
    "starlette_routing",
    "http_parsing_uvicorn",
    "event_loop",
    "other",
)
_INNERMOST_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "pydantic_validation_serialisation",
        ("pydantic/", "pydantic_core/", "_bentoml_sdk/io_models", "_bentoml_sdk/validators"),
    ),
    ("shopflow_middleware", ("serving/service.py",)),
    (
        "bentoml_middleware",
        (
            "opentelemetry/",
            "prometheus_client/",
            "bentoml/_internal/server/http/",
            "bentoml/_internal/context",
            "bentoml/_internal/server/metrics",
        ),
    ),
    ("bentoml_framework", ("_bentoml_impl/", "_bentoml_sdk/", "bentoml/")),
    ("starlette_routing", ("starlette/", "anyio/")),
    ("http_parsing_uvicorn", ("uvicorn/", "h11/", "httptools/")),
    ("event_loop", ("asyncio/", "selectors.py", "uvloop/")),
)


def classify_stack(frames: Sequence[str]) -> str:
    """The bucket of one sampled stack (frames root first, as py-spy's raw format writes them).

    The request log and the model call are found anywhere on the stack (their own calls into
    json, numpy, torch or faiss count for them); otherwise the innermost frame that belongs to a
    known layer decides, so pydantic called by BentoML counts as pydantic, and BentoML's code
    under uvicorn counts as BentoML.
    """
    # py-spy names frames "Class.method (path/file.py:line)".
    if any("serving/engine.py" in f and ("RequestLog." in f or "._log " in f) for f in frames):
        return "request_log_write"
    if any("serving/engine.py" in f or "/ml/" in f or f.split("(")[-1].startswith("ml/") for f in frames):
        return "model_call"
    for frame in reversed(frames):
        where = frame.rsplit("(", 1)[-1]
        for bucket, patterns in _INNERMOST_RULES:
            if any(pattern in where for pattern in patterns):
                return bucket
    return "other"


def profile_server(
    server: Any, payloads: list[dict[str, Any]], clients: int, seconds: float, token: str | None, work: Path
) -> dict[str, Any]:
    """py-spy samples the server's processes while wrk drives ``/recommend``; the split by bucket."""
    import shutil
    import subprocess

    from serving.loadtest import run_wrk_cell

    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if spy is None:
        return {"skipped": "py-spy not installed (dev extras)"}
    raw = work / "profile_recommend.txt"
    sampler = subprocess.Popen(
        [
            spy,
            "record",
            "--pid",
            str(server.process.pid),
            "--subprocesses",
            "--nonblocking",
            "--rate",
            str(PROFILE_RATE_HZ),
            "--duration",
            str(round(seconds)),
            "--format",
            "raw",
            "-o",
            str(raw),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    cell = run_wrk_cell(server.base_url, "recommend", payloads, clients, seconds, warmup_s=0, token=token)
    output, _ = sampler.communicate(timeout=seconds + 120)
    if sampler.returncode != 0 or not raw.exists():
        return {"skipped": f"py-spy failed (exit {sampler.returncode}): {output[-500:]}"}
    counts = dict.fromkeys(PROFILE_BUCKETS, 0)
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        counts[classify_stack(stack.split(";"))] += int(n)
    total = sum(counts.values())
    return {
        "endpoint": "recommend",
        "clients": clients,
        "seconds": seconds,
        "sampler": f"py-spy record --subprocesses --nonblocking --rate {PROFILE_RATE_HZ} (samples of "
        "non-idle threads, all the server's processes; on an overloaded machine a thread runnable but "
        "waiting for a core counts as non-idle, which skews the split towards long native calls)",
        "requests_during_profile": cell.requests,
        "requests_per_s_during_profile": cell.requests_per_s,
        "samples": total,
        "share": {k: round(v / total, 3) if total else None for k, v in counts.items()},
        "samples_by_bucket": counts,
        "raw_stacks": str(raw),
        "buckets": "request_log_write: RequestLog.write/_log in serving/engine.py; model_call: the rest of "
        "ServingModel and ml/ (torch, faiss, numpy under them); pydantic_validation_serialisation: "
        "pydantic(-core) and BentoML's IO descriptors; shopflow_middleware: auth + contract "
        "(serving/service.py); "
        "bentoml_middleware: OpenTelemetry, Prometheus metrics, traffic/timeout; bentoml_framework: "
        "the rest of BentoML (API dispatch, body reading); http_parsing_uvicorn: uvicorn/h11/httptools; "
        "event_loop: asyncio itself",
    }


SWAP_LINEAGE = "bench-serving-swap"


def swap_target(settings: Any, tag: str) -> str:
    """A second version of the served model in the benchmark's own store (registered once, reused)."""
    from ml import registry

    for version in registry.list_versions(settings):
        if version.tag != tag and version.metadata.get("lineage", {}).get("run_id") == SWAP_LINEAGE:
            return version.tag
    source = registry.get(tag, settings)
    copy = registry.register(
        source.path,
        metrics=source.metrics,
        config=source.metadata.get("config", {}),
        lineage={"run_id": SWAP_LINEAGE},
        settings=settings,
    )
    return copy.tag


def swap_under_load(
    server: Any,
    settings: Any,
    tag: str,
    payloads: list[dict[str, Any]],
    clients: int,
    seconds: float,
    token: str | None,
) -> dict[str, Any]:
    """Promote another version, then roll back, while wrk drives ``/recommend``: errors and latency.

    Only on the benchmark's own store (never a real champion pointer). The Bento follows the
    pointer (serving/hot_swap.py); ``swaps`` is what its ``GET /version`` reported.
    """
    import httpx

    from ml import registry
    from serving.loadtest import run_wrk_cell

    other = swap_target(settings, tag)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    cells: list[Any] = []
    load = threading.Thread(
        target=lambda: cells.append(
            run_wrk_cell(server.base_url, "recommend", payloads, clients, seconds, warmup_s=0, token=token)
        )
    )

    def wait_for(version: str, deadline: float) -> dict[str, Any]:
        while True:
            state = dict(httpx.get(f"{server.base_url}/version", headers=headers, timeout=30).json())
            if state["model_version"] == version or time.monotonic() > deadline:
                return state
            time.sleep(0.2)

    load.start()
    deadline = time.monotonic() + seconds - 1
    time.sleep(min(3.0, seconds / 10))
    registry.promote(other, settings, reason="bench: swap under load")
    promoted = wait_for(other, deadline)
    registry.rollback(settings, reason="bench: back after the swap under load")
    back = wait_for(tag, deadline)
    load.join()
    cell = cells[0]
    return {
        "endpoint": "recommend",
        "clients": clients,
        "seconds": cell.seconds,
        "requests": cell.requests,
        "errors": cell.errors,
        "requests_per_s": cell.requests_per_s,
        "p50_ms": cell.p50_ms,
        "p99_ms": cell.p99_ms,
        "max_ms": cell.max_ms,
        "promoted_reached": promoted["model_version"] == other,
        "rollback_reached": back["model_version"] == tag,
        "swaps": back.get("swaps", [])[-2:],
        "load_average_after": load_average(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=60.0, help="measured seconds per HTTP cell")
    parser.add_argument("--floor-seconds", type=float, default=15.0, help="measured seconds per floor cell")
    parser.add_argument("--warmup", type=float, default=2.0, help="uncounted seconds before each cell")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32], help="clients per cell")
    parser.add_argument("--client", choices=("wrk", "raw"), default="wrk", help="load generator (see above)")
    parser.add_argument("--profile-seconds", type=float, default=20.0, help="py-spy under load (0: skip)")
    parser.add_argument(
        "--swap-seconds",
        type=float,
        default=40.0,
        help="promote + rollback under load (own store only; 0: skip)",
    )
    parser.add_argument("--users", type=int, default=2000, help="users of the sample model (clean clone)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where to write the JSON")
    parser.add_argument("--ask-seconds", type=float, default=60.0, help="seconds per /ask cell (0: skip)")
    parser.add_argument("--no-check", action="store_true", help="exit 0 even if a goal is missed")
    args = parser.parse_args()

    from ml.core.settings import get_settings
    from serving.bento import running_server
    from serving.loadtest import payloads_for

    info = machine()
    started = time.perf_counter()
    settings, tag, version_dir, source = ensure_model(args.users)
    work = get_settings().work_dir / "bench" / "serving"
    payloads = {e: payloads_for(e, version_dir) for e in ENDPOINTS}
    for batched, (single, key) in BATCHED.items():
        payloads[batched] = [{key: [p]} for p in payloads[single]]
    token = settings.serving_api_token.get_secret_value() if settings.serving_api_token else None
    print(f"model {tag} ({source}); {len(payloads['recommend'])} users, {len(payloads['search'])} queries")

    print(f"in-process floor ({args.floor_seconds:.0f} s per cell)", flush=True)
    floor = run_floor(version_dir, tag, work, payloads, args.concurrency, args.floor_seconds, args.warmup)
    gc.collect()

    servers: dict[str, Any] = {}
    print(
        f"bare-ASGI floor (serving/asgi_floor.py, {args.client} client, {args.seconds:.0f} s per cell)",
        flush=True,
    )
    with running_asgi_floor(version_dir, tag, work) as asgi:
        print(f"  ready in {asgi.ready_s} s on {asgi.base_url}", flush=True)
        asgi_cells = http_cells("asgi", asgi, payloads, args, None)
        servers["asgi_floor"] = {
            "command": "python -m serving.asgi_floor (Starlette on uvicorn, 1 worker)",
            "ready_s": asgi.ready_s,
            "peak_rss_mb": peak_rss_mb(asgi.process.pid),
        }

    load_start = load_average()
    server_env = {
        "SHOPFLOW_WORK_DIR": str(work),  # the request log of benchmark traffic stays in the bench folder
        "BENTOML_HOME": str(settings.bentoml_home),
        "SHOPFLOW_SERVING_FOLLOW_CHAMPION_S": "1",
        # /ask's generator: the converted checkpoint of the store's work dir, not of the bench folder
        # (else every /ask is the template and the /ask cells measure no generation).
        "SHOPFLOW_GENERATOR_CACHE_DIR": str(settings.generator_cache_dir),
    }
    # On the benchmark's own store the Bento follows the champion (the swap scenario promotes and
    # rolls back there); on a real store it is pinned, and that store's pointer is never touched.
    own_store = settings.bentoml_home == work / "bentoml"
    if not own_store:
        server_env["SHOPFLOW_SERVING_MODEL"] = tag
    print(f"bentoml serve ({args.client} client, {args.seconds:.0f} s per cell)", flush=True)
    with running_server(settings=settings, extra_env=server_env, log_dir=work / "serving_logs") as server:
        print(f"  ready in {server.ready_s} s on {server.base_url}", flush=True)
        cells = http_cells("bento", server, payloads, args, token, [*ENDPOINTS, *BATCHED])
        profile: dict[str, Any] = {"skipped": "--profile-seconds 0"}
        if args.profile_seconds > 0:
            print(f"profiling the Bento under {max(args.concurrency)}-client recommend load", flush=True)
            profile = profile_server(
                server, payloads["recommend"], max(args.concurrency), args.profile_seconds, token, work
            )
            print(f"  profile: {profile.get('share', profile)}", flush=True)
        ask: dict[str, Any] = {"skipped": "--ask-seconds 0"}
        if args.ask_seconds > 0:
            print(f"/ask, {args.ask_seconds:.0f} s per cell", flush=True)
            ask = ask_cells(server, token, args.ask_seconds, settings)
        swap: dict[str, Any] = {
            "skipped": "--swap-seconds 0" if own_store else "a real store: never promoted here"
        }
        if own_store and args.swap_seconds > 0:
            print(f"swap under {max(args.concurrency)}-client recommend load", flush=True)
            swap = swap_under_load(
                server, settings, tag, payloads["recommend"], max(args.concurrency), args.swap_seconds, token
            )
            print(f"  swap: {swap}", flush=True)
        servers["bento"] = {
            "command": "bentoml serve serving.service:Recommender",
            "ready_s": server.ready_s,
            "peak_rss_mb": peak_rss_mb(server.process.pid),
            "load_average_at_start": load_start,
            "config": service_config(tag),
        }
    info["load_average_at_end"] = load_average()

    asgi_by = {(r["endpoint"], r["concurrency"]): r for r in asgi_cells}
    for row in cells:
        single = BATCHED.get(row["endpoint"], (row["endpoint"],))[0]  # a batched cell's floors: its single's
        cell = (single, row["concurrency"])
        in_process = floor[single][str(row["concurrency"])]
        bare = asgi_by[cell]
        row["floor_requests_per_s"] = in_process["requests_per_s"]
        row["ratio_to_floor"] = round(row["requests_per_s"] / in_process["requests_per_s"], 3)
        row["asgi_requests_per_s"] = bare["requests_per_s"]
        row["asgi_p99_ms"] = bare["p99_ms"]
        row["ratio_to_asgi"] = round(row["requests_per_s"] / max(bare["requests_per_s"], 1e-9), 3)
        row["p99_ratio_to_asgi"] = round(row["p99_ms"] / max(bare["p99_ms"], 1e-9), 3)
        row["p99_ratio_to_floor"] = round(row["p99_ms"] / max(in_process["p99_ms"], 1e-9), 3)

    head = (
        f"\n{'endpoint':<10}{'clients':>8}{'req/s':>9}{'p99 ms':>9}{'errors':>8}{'floor/s':>10}{'x floor':>9}"
        f"{'asgi/s':>9}{'asgi p99':>10}{'x asgi':>8}{'srv cpu':>9}{'cli cpu':>9}"
    )
    print(head)
    print("-" * (len(head) - 1))
    for r in cells:
        print(
            f"{r['endpoint']:<10}{r['concurrency']:>8}{r['requests_per_s']:>9.1f}{r['p99_ms']:>9.1f}"
            f"{r['errors']:>8}{r['floor_requests_per_s']:>10.1f}{r['ratio_to_floor']:>9.2f}"
            f"{r['asgi_requests_per_s']:>9.1f}{r['asgi_p99_ms']:>10.1f}{r['ratio_to_asgi']:>8.2f}"
            f"{r['server_cpu_ms_per_request']:>9.2f}{r['client_cpu_ms_per_request'] or float('nan'):>9.3f}"
        )
    batched = ", ".join(f"batch {n}: {c['requests_per_s']:.0f}/s" for n, c in floor["search_batched"].items())
    print(f"in-process search, one caller encoding batches: {batched}")
    print("srv/cli cpu = server / load-client CPU ms per answered request (server: all its processes)")

    top = max(args.concurrency)
    rec = next(r for r in cells if r["endpoint"] == "recommend" and r["concurrency"] == top)
    bundle = next(r for r in cells if r["endpoint"] == "bundle" and r["concurrency"] == top)
    goals = {
        f"recommend_p99_ms_at_{top}": rec["p99_ms"],
        "p99_goal_met": rec["p99_ms"] <= GOAL_P99_MS,
        f"recommend_ratio_to_floor_at_{top}": rec["ratio_to_floor"],
        "ratio_to_floor_goal_met": rec["ratio_to_floor"] >= GOAL_RATIO_FLOOR,
        f"recommend_ratio_to_asgi_at_{top}": rec["ratio_to_asgi"],
        "ratio_to_asgi_goal_met": rec["ratio_to_asgi"] >= GOAL_RATIO_ASGI,
        f"bundle_p99_ms_at_{top}": bundle["p99_ms"],
        "bundle_p99_goal_met": bundle["p99_ms"] <= GOAL_P99_MS,
        "errors": sum(r["errors"] for r in cells),
        "zero_errors": all(r["errors"] == 0 for r in cells),
        "swap_under_load_errors": swap.get("errors"),
        "swap_zero_errors": swap.get("errors") == 0 if "errors" in swap else None,
    }
    met = (
        all(
            goals[k]
            for k in (
                "p99_goal_met",
                "ratio_to_floor_goal_met",
                "ratio_to_asgi_goal_met",
                "bundle_p99_goal_met",
                "zero_errors",
            )
        )
        and goals["swap_zero_errors"] is not False
    )
    verdict = "met" if met else "NOT met"
    print(
        f"\ngoals (p99 <= {GOAL_P99_MS:.0f} ms, >= {GOAL_RATIO_FLOOR}x in-process, >= {GOAL_RATIO_ASGI}x "
        f"bare ASGI, bundle p99 <= {GOAL_P99_MS:.0f} ms, 0 errors): {verdict}"
    )
    print(
        f"load average: start {info['load_average_at_start']}, end {info['load_average_at_end']} "
        f"({info['cpus']} CPUs; the machine is shared: figures are under that load)"
    )

    client = (
        "wrk -t1 (bench/wrk/post_json.lua), keep-alive, one connection per client"
        if args.client == "wrk"
        else "serving.loadtest raw HTTP/1.1 keep-alive, one connection per client"
    )
    result = {
        "benchmark": "serving",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "model": {"tag": tag, "source": source, "items": floor["items"], "users": len(payloads["recommend"])},
        "protocol": "closed loop: each client sends its next request when the previous one is answered; "
        f"{args.warmup:.0f} s uncounted warm-up per cell; HTTP cells {args.seconds:.0f} s, floor cells "
        f"{args.floor_seconds:.0f} s; recommend = known users by id (k=10), whose "
        "vectors both sides precompute at start (ServingModel.warm_up); search = short queries (k=10); "
        "similar = items of the users' histories (k=10); recommend_batch / similar_batch = the same bodies, "
        "one per request in a one-element list, merged by BentoML's adaptive batching (compared with the "
        "single endpoint's floors); bundle = seeds of the version's packaged "
        "bundles at their packaged size (served from the package); ask = shopper questions, 1 and 4 "
        f"Python clients, {args.ask_seconds:.0f} s each; "
        "floor = ServingModel called in-process by as many threads (run before the servers start); "
        "asgi = the same ServingModel and pydantic models on Starlette/uvicorn, 1 worker (run before the "
        "Bento, never at the same time); one client process on the same 2 cores as the server",
        "machine": info,
        "client": client,
        "server": servers["bento"],
        "servers": servers,
        "results": cells,
        "asgi_floor": asgi_cells,
        "floor": floor,
        "profile": profile,
        "hot_swap": swap,
        "ask": ask,
        "goals": goals,
        "goals_met": met,
        "total_seconds": round(time.perf_counter() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0 if met or args.no_check else 1


if __name__ == "__main__":
    sys.exit(main())
