"""Benchmark: the Bento under load vs the in-process model call (the floor), side by side.

For ``recommend`` (known users by id) and ``search`` (short free-text queries), at 1, 8 and 32
concurrent clients for a fixed time each: p50/p95/p99 latency, requests/s and errors of
``bentoml serve serving.service:Recommender`` over loopback HTTP (``serving/loadtest.py``), and,
in the same run, the throughput of ``serving.engine.ServingModel`` called in-process by as many
threads (no HTTP; for search also one caller encoding batches of that size). The ratio
service/floor is what HTTP, validation and BentoML cost.

The model is the configured store's champion; without one (a clean clone) a small real model is
trained on a slice of the shipped Beauty data and promoted in a store of the benchmark's own
(``<work_dir>/bench/serving``) — the same helper the serving tests use. The server's request log
goes to that folder too, so benchmark traffic never reaches the monitoring logs. The floor runs
before the server starts, so the two never share the CPU.

Goals on 2 CPU cores: recommend p99 <= 50 ms at 32 clients, throughput >= 0.75x the floor, 0
errors. Prints a table, writes bench/results/serving.json (figures, goals, machine, load
average, date); exits 1 if a goal is missed (``--no-check`` to exit 0).

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
from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

PROJECT_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_DIR))
RESULTS = PROJECT_DIR / "bench" / "results" / "serving.json"
GOAL_P99_MS = 50.0
GOAL_RATIO = 0.75


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
    }
    out: dict[str, Any] = {"recommend": {}, "search": {}, "search_batched": {}}
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


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=60.0, help="measured seconds per HTTP cell")
    parser.add_argument("--floor-seconds", type=float, default=15.0, help="measured seconds per floor cell")
    parser.add_argument("--warmup", type=float, default=2.0, help="uncounted seconds before each cell")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32], help="clients per cell")
    parser.add_argument("--users", type=int, default=2000, help="users of the sample model (clean clone)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where to write the JSON")
    parser.add_argument("--no-check", action="store_true", help="exit 0 even if a goal is missed")
    args = parser.parse_args()

    from ml.core.settings import get_settings
    from serving.bento import running_server
    from serving.client import auth_headers
    from serving.loadtest import payloads_for, run_cell

    info = machine()
    started = time.perf_counter()
    settings, tag, version_dir, source = ensure_model(args.users)
    work = get_settings().work_dir / "bench" / "serving"
    payloads = {e: payloads_for(e, version_dir) for e in ("recommend", "search")}
    print(f"model {tag} ({source}); {len(payloads['recommend'])} users, {len(payloads['search'])} queries")

    print(f"in-process floor ({args.floor_seconds:.0f} s per cell)", flush=True)
    floor = run_floor(version_dir, tag, work, payloads, args.concurrency, args.floor_seconds, args.warmup)
    gc.collect()

    load_start = load_average()
    server_env = {
        "SHOPFLOW_WORK_DIR": str(work),  # the request log of benchmark traffic stays in the bench folder
        "BENTOML_HOME": str(settings.bentoml_home),
        "SHOPFLOW_SERVING_MODEL": tag,
    }
    cells = []
    with running_server(settings=settings, extra_env=server_env, log_dir=work / "serving_logs") as server:
        print(f"bentoml serve ready in {server.ready_s} s on {server.base_url}", flush=True)
        for endpoint in ("recommend", "search"):
            for n in args.concurrency:
                cpu = server_cpu_seconds(server.process.pid)
                cell = run_cell(
                    server.base_url,
                    endpoint,
                    payloads[endpoint],
                    n,
                    args.seconds,
                    args.warmup,
                    auth_headers(settings),
                )
                row = asdict(cell)
                spent = server_cpu_seconds(server.process.pid) - cpu  # warm-up included: an upper bound
                row["server_cpu_ms_per_request"] = round(spent * 1000 / max(cell.requests, 1), 2)
                row["floor_requests_per_s"] = floor[endpoint][str(n)]["requests_per_s"]
                row["ratio_to_floor"] = round(cell.requests_per_s / row["floor_requests_per_s"], 3)
                row["load_average_after"] = load_average()
                cells.append(row)
                print(
                    f"  {endpoint:<9} {n:>3} clients: {cell.requests_per_s:>8.1f}/s  "
                    f"p99 {cell.p99_ms:>7.1f} ms  errors {cell.errors}  "
                    f"x{row['ratio_to_floor']:.2f} of floor",
                    flush=True,
                )
    info["load_average_at_end"] = load_average()

    head = (
        f"\n{'endpoint':<10}{'clients':>8}{'req/s':>9}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}"
        f"{'errors':>8}{'floor/s':>10}{'ratio':>7}{'cpu ms':>8}"
    )
    print(head)
    print("-" * (len(head) - 1))
    for r in cells:
        print(
            f"{r['endpoint']:<10}{r['concurrency']:>8}{r['requests_per_s']:>9.1f}{r['p50_ms']:>9.1f}"
            f"{r['p95_ms']:>9.1f}{r['p99_ms']:>9.1f}{r['errors']:>8}{r['floor_requests_per_s']:>10.1f}"
            f"{r['ratio_to_floor']:>7.2f}{r['server_cpu_ms_per_request']:>8.2f}"
        )
    batched = ", ".join(f"batch {n}: {c['requests_per_s']:.0f}/s" for n, c in floor["search_batched"].items())
    print(f"in-process search, one caller encoding batches: {batched}")
    print("cpu ms = server CPU time per answered request (all its processes)")

    top = max(args.concurrency)
    rec = next(r for r in cells if r["endpoint"] == "recommend" and r["concurrency"] == top)
    goals = {
        f"recommend_p99_ms_at_{top}": rec["p99_ms"],
        "p99_goal_met": rec["p99_ms"] <= GOAL_P99_MS,
        f"recommend_ratio_to_floor_at_{top}": rec["ratio_to_floor"],
        "ratio_goal_met": rec["ratio_to_floor"] >= GOAL_RATIO,
        "errors": sum(r["errors"] for r in cells),
        "zero_errors": all(r["errors"] == 0 for r in cells),
    }
    met = goals["p99_goal_met"] and goals["ratio_goal_met"] and goals["zero_errors"]
    verdict = "met" if met else "NOT met"
    print(f"\ngoals (p99 <= {GOAL_P99_MS:.0f} ms, ratio >= {GOAL_RATIO}, 0 errors): {verdict}")
    print(f"load average: start {info['load_average_at_start']}, end {info['load_average_at_end']}")

    result = {
        "benchmark": "serving",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "model": {"tag": tag, "source": source, "items": floor["items"], "users": len(payloads["recommend"])},
        "protocol": "closed loop: each client sends its next request when the previous one is answered; "
        f"{args.warmup:.0f} s uncounted warm-up per cell; HTTP cells {args.seconds:.0f} s, floor cells "
        f"{args.floor_seconds:.0f} s; recommend = known users by id (k=10), whose "
        "vectors both sides precompute at start (ServingModel.warm_up); search = short queries (k=10); "
        "floor = ServingModel called in-process by as many threads (run before the server starts)",
        "machine": info,
        "server": {
            "command": "bentoml serve serving.service:Recommender",
            "ready_s": server.ready_s,
            "load_average_at_start": load_start,
            "config": service_config(tag),
            "client": "serving.loadtest raw HTTP/1.1 keep-alive, one connection per client",
        },
        "results": cells,
        "floor": floor,
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
