"""Closed-loop load on the Bento: N concurrent clients for a fixed time, latency percentiles.

Each client (an asyncio task with its own keep-alive connection) sends its next request as soon
as the previous one is answered, for ``seconds`` after a short warm-up that is not counted; a
request is an error when it fails, times out or answers anything but 200. The same payloads drive
the in-process floor in ``bench/serving.py``. Bounded on purpose: loopback servers only, at most
``MAX_CONCURRENCY`` clients and ``MAX_SECONDS`` per cell.

The default client speaks plain HTTP/1.1 over asyncio streams with pre-encoded bodies (about
0.2 ms of CPU per request); ``--client httpx`` uses httpx.AsyncClient, which spends several ms of
CPU per request here, as much as the server: on a 2-core machine that CPU is taken from the
server being measured.

    python -m serving.loadtest --url http://127.0.0.1:3000 --endpoint recommend --concurrency 1 8 32
    python -m serving.loadtest --endpoint search --seconds 5          # quick try
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

from ml import registry
from ml.core.artifacts import HISTORIES_FILE
from ml.core.settings import get_settings
from serving.client import auth_headers

MAX_CONCURRENCY = 256
MAX_SECONDS = 600.0
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
ENDPOINTS = ("recommend", "search", "similar", "bundle")
CLIENTS = ("raw", "httpx")

# Short shopper queries (what a search box receives), none copied from the catalog.
SEARCH_QUERIES = [
    "red matte lipstick",
    "moisturizing face cream",
    "shampoo for dry hair",
    "nail polish",
    "waterproof mascara",
    "sunscreen spf 50",
    "anti aging serum",
    "eyeliner pencil black",
    "men's shaving cream",
    "vanilla perfume",
    "hair straightener",
    "makeup brushes set",
    "tea tree oil",
    "dandruff shampoo",
    "lip balm",
    "body lotion for sensitive skin",
    "eye shadow palette",
    "argan oil hair treatment",
    "foundation for oily skin",
    "nail art stickers",
    "beard oil",
    "facial cleansing brush",
    "dry shampoo",
    "hand cream",
    "concealer",
    "curling iron",
    "bb cream",
    "false eyelashes",
    "acne spot treatment",
    "hair dye brown",
    "bath bombs",
    "under eye cream",
]


class _Connection:
    """One keep-alive HTTP/1.1 connection: POST a JSON body, read status and body."""

    def __init__(self, host: str, port: int, headers: dict[str, str]) -> None:
        self.host, self.port = host, port
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.head = f"Host: {host}:{port}\r\nContent-Type: application/json\r\n{extra}".encode()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: bytes, body: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(
            b"POST " + path + b" HTTP/1.1\r\n" + self.head + b"Content-Length: %d\r\n\r\n" % len(body) + body
        )
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionError("server closed the connection")
        status = int(status_line.split(b" ", 2)[1])
        length, chunked, close = 0, False, False
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                close = b"close" in value.lower()
        if chunked:
            parts = []
            while size := int((await self.reader.readline()).split(b";")[0], 16):
                parts.append(await self.reader.readexactly(size))
                await self.reader.readline()
            await self.reader.readline()
            data = b"".join(parts)
        else:
            data = await self.reader.readexactly(length)
        if close:
            self.close()
        return status, data

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


@dataclass(frozen=True)
class CellResult:
    """One (endpoint, concurrency) cell of a load run."""

    endpoint: str
    concurrency: int
    seconds: float
    requests: int
    errors: int
    requests_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    error_examples: list[str]
    client: str = "raw"
    client_cpu_s: float | None = None
    """CPU time the load client spent in the cell (user + system; wrk: its process, measured by the
    kernel; the Python clients: this whole process, so only meaningful when nothing else runs in it)."""


def percentiles_ms(latencies_s: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99/max in milliseconds (NaN for an empty sample)."""
    if not latencies_s:
        return {
            "p50_ms": float("nan"),
            "p95_ms": float("nan"),
            "p99_ms": float("nan"),
            "max_ms": float("nan"),
        }
    arr = np.asarray(latencies_s) * 1000.0
    p50, p95, p99 = np.percentile(arr, [50, 95, 99])
    return {
        "p50_ms": round(float(p50), 2),
        "p95_ms": round(float(p95), 2),
        "p99_ms": round(float(p99), 2),
        "max_ms": round(float(arr.max()), 2),
    }


def check_bounds(url: str, concurrency: int, seconds: float) -> None:
    """Refuse anything but a bounded load on a loopback server."""
    host = urlparse(url).hostname
    if host not in LOOPBACK:
        raise ValueError(
            f"--url {url!r}: only loopback servers ({', '.join(sorted(LOOPBACK))}) are load-tested"
        )
    if not 1 <= concurrency <= MAX_CONCURRENCY:
        raise ValueError(f"concurrency {concurrency}: must be 1..{MAX_CONCURRENCY}")
    if not 0 < seconds <= MAX_SECONDS:
        raise ValueError(f"seconds {seconds}: must be in (0, {MAX_SECONDS:.0f}]")


async def _run_cell(
    url: str,
    endpoint: str,
    payloads: Sequence[dict[str, Any]],
    concurrency: int,
    seconds: float,
    warmup_s: float,
    headers: dict[str, str],
    timeout_s: float,
    client: str,
    stop_event: threading.Event | None = None,
) -> CellResult:
    path = f"/{endpoint}"
    bodies = [json.dumps(p).encode() for p in payloads]
    cycle = itertools.cycle(range(len(bodies)))
    latencies: list[float] = []
    errors = 0
    examples: list[str] = []
    start = time.perf_counter()
    cpu_start = time.process_time()  # warm-up included, as the server's CPU in bench/serving.py
    measure_from = start + warmup_s
    stop = measure_from + seconds

    def running() -> bool:
        return time.perf_counter() < stop and not (stop_event is not None and stop_event.is_set())

    def record(sent: float, problem: str | None) -> None:
        nonlocal errors
        if sent < measure_from:
            return  # warm-up: connections opened, caches and allocator settled
        latencies.append(time.perf_counter() - sent)
        if problem is not None:
            errors += 1
            if len(examples) < 3:
                examples.append(problem)

    async def raw_client() -> None:
        parsed = urlparse(url)
        connection = _Connection(parsed.hostname or "127.0.0.1", parsed.port or 80, headers)
        target = path.encode()
        try:
            while running():
                sent = time.perf_counter()
                problem = None
                try:
                    async with asyncio.timeout(timeout_s):
                        status, data = await connection.post(target, bodies[next(cycle)])
                    if status != 200:
                        problem = f"{status}: {data[:200].decode(errors='replace')}"
                except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as error:
                    connection.close()
                    problem = f"{type(error).__name__}: {error}"
                record(sent, problem)
        finally:
            connection.close()

    async def httpx_clients() -> None:
        import httpx

        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(
            base_url=url,
            headers={**headers, "Content-Type": "application/json"},
            timeout=timeout_s,
            limits=limits,
        ) as http:

            async def one() -> None:
                while running():
                    sent = time.perf_counter()
                    problem = None
                    try:
                        response = await http.post(path, content=bodies[next(cycle)])
                        if response.status_code != 200:
                            problem = f"{response.status_code}: {response.text[:200]}"
                    except httpx.HTTPError as error:
                        problem = f"{type(error).__name__}: {error}"
                    record(sent, problem)

            await asyncio.gather(*(one() for _ in range(concurrency)))

    if client == "httpx":
        await httpx_clients()
    else:
        await asyncio.gather(*(raw_client() for _ in range(concurrency)))
    measured = max(time.perf_counter() - measure_from, 1e-9)
    return CellResult(
        client=client,
        client_cpu_s=round(time.process_time() - cpu_start, 3),
        endpoint=endpoint,
        concurrency=concurrency,
        seconds=round(measured, 2),
        requests=len(latencies),
        errors=errors,
        requests_per_s=round(len(latencies) / measured, 1),
        error_examples=examples,
        **percentiles_ms(latencies),
    )


def run_cell(
    url: str,
    endpoint: str,
    payloads: Sequence[dict[str, Any]],
    concurrency: int,
    seconds: float,
    warmup_s: float = 2.0,
    headers: dict[str, str] | None = None,
    timeout_s: float = 30.0,
    client: str = "raw",
    stop_event: threading.Event | None = None,
) -> CellResult:
    """``concurrency`` closed-loop clients POSTing ``payloads`` (cycled) to ``/<endpoint>``.

    Args:
        url: the server's base URL (loopback only).
        endpoint: the API name, e.g. ``recommend``.
        payloads: JSON bodies, sent in order and cycled.
        concurrency: simultaneous clients (1..MAX_CONCURRENCY).
        seconds: measured time, after ``warmup_s`` of uncounted requests.
        warmup_s: uncounted lead-in.
        headers: sent with every request (the bearer token when the server has one).
        timeout_s: per-request timeout (a timeout counts as an error).
        client: ``raw`` (plain HTTP/1.1 on asyncio streams) or ``httpx``.
        stop_event: ends the cell early when set (a scenario that loads the server until
            something happened, e.g. a champion swap); ``seconds`` stays the upper bound.
    """
    check_bounds(url, concurrency, seconds)
    if client not in CLIENTS:
        raise ValueError(f"client {client!r}: one of {', '.join(CLIENTS)}")
    if not payloads:
        raise ValueError(f"no payloads for {endpoint}")
    return asyncio.run(
        _run_cell(
            url,
            endpoint,
            payloads,
            concurrency,
            seconds,
            warmup_s,
            headers or {},
            timeout_s,
            client,
            stop_event,
        )
    )


WRK_SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "wrk" / "post_json.lua"


def run_wrk_cell(
    url: str,
    endpoint: str,
    payloads: Sequence[dict[str, Any]],
    concurrency: int,
    seconds: float,
    warmup_s: float = 2.0,
    token: str | None = None,
    timeout_s: float = 30.0,
    wrk: str = "wrk",
) -> CellResult:
    """The same closed-loop cell driven by ``wrk`` (C, one thread, epoll) with bench/wrk/post_json.lua.

    wrk's connections each send their next request when the previous one is answered, like
    :func:`run_cell`'s clients, for a small fraction of their CPU (``client_cpu_s``: the wrk
    process's user + system time, from the kernel's accounting of this process's children). A
    separate uncounted wrk run of ``warmup_s`` comes first. Errors: connect/read/write failures,
    timeouts and statuses >= 400.

    Raises:
        FileNotFoundError: wrk is not installed (``apt-get install -y wrk``; ``make bench-serving``
            installs it).
        RuntimeError: wrk failed or printed no result (its output is in the message).
    """
    import resource
    import shutil
    import subprocess
    import tempfile

    check_bounds(url, concurrency, seconds)
    exe = shutil.which(wrk)
    if exe is None:
        raise FileNotFoundError(f"{wrk!r} not found: install it (apt-get install -y wrk) or use --client raw")
    if not payloads:
        raise ValueError(f"no payloads for {endpoint}")
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", prefix=f"wrk-{endpoint}-") as bodies:
        bodies.write("".join(json.dumps(p) + "\n" for p in payloads))
        bodies.flush()

        def command(duration_s: float) -> list[str]:
            return [
                exe,
                "-t1",
                f"-c{concurrency}",
                f"-d{max(1, round(duration_s))}s",
                "--timeout",
                f"{max(1, round(timeout_s))}s",
                "-s",
                str(WRK_SCRIPT),
                f"{url.rstrip('/')}/{endpoint}",
                "--",
                bodies.name,
                token or "",
            ]

        if warmup_s > 0:
            subprocess.run(command(warmup_s), capture_output=True, check=False, timeout=warmup_s + 60)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        done = subprocess.run(
            command(seconds), capture_output=True, text=True, check=False, timeout=seconds + timeout_s + 60
        )
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("WRK_JSON ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(
            f"wrk failed (exit {done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
        )
    result = json.loads(line.removeprefix("WRK_JSON "))
    measured = max(result["duration_us"] / 1e6, 1e-9)
    errors = int(sum(result["errors"].values()))
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return CellResult(
        endpoint=endpoint,
        concurrency=concurrency,
        seconds=round(measured, 2),
        requests=int(result["requests"]),
        errors=errors,
        requests_per_s=round(result["requests"] / measured, 1),
        p50_ms=round(result["p50_us"] / 1000, 2),
        p95_ms=round(result["p95_us"] / 1000, 2),
        p99_ms=round(result["p99_us"] / 1000, 2),
        max_ms=round(result["max_us"] / 1000, 2),
        error_examples=[f"wrk errors: {result['errors']}"] if errors else [],
        client="wrk",
        client_cpu_s=round(cpu, 3),
    )


def _history_ids(version_dir: Path, column: str, n: int, seed: int, endpoint: str) -> list[str]:
    """Up to ``n`` distinct values of ``column`` (user_id or item_id) of a registered version's
    user histories (its histories.parquet), shuffled with ``seed``."""
    import pandas as pd

    path = Path(version_dir) / HISTORIES_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path}: the version has no user histories to draw {endpoint} bodies from")
    ids = pd.read_parquet(path, columns=[column])[column].astype(str).drop_duplicates()
    return list(ids.sample(min(n, len(ids)), random_state=seed))


def recommend_payloads(version_dir: Path, n: int = 2000, k: int = 10, seed: int = 0) -> list[dict[str, Any]]:
    """``/recommend`` bodies for known users of a registered version, shuffled."""
    return [{"user_id": u, "k": k} for u in _history_ids(version_dir, "user_id", n, seed, "/recommend")]


def search_payloads(k: int = 10) -> list[dict[str, Any]]:
    """``/search`` bodies: short shopper queries."""
    return [{"query": q, "k": k} for q in SEARCH_QUERIES]


def similar_payloads(version_dir: Path, n: int = 2000, k: int = 10, seed: int = 0) -> list[dict[str, Any]]:
    """``/similar`` bodies: items of the version's user histories (what shoppers look at), shuffled."""
    return [{"item_id": i, "k": k} for i in _history_ids(version_dir, "item_id", n, seed, "/similar")]


def bundle_payloads(version_dir: Path, n: int = 2000, seed: int = 0) -> list[dict[str, Any]]:
    """``/bundle`` bodies: the seeds of the version's packaged bundles, each at its packaged size
    (served from the package: what a product page asks for), shuffled."""
    import pandas as pd

    from ml.generation.bundles import BUNDLES_DIR, BUNDLES_FILE

    path = Path(version_dir) / BUNDLES_DIR / BUNDLES_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path}: the version has no packaged bundles to ask /bundle for")
    frame = pd.read_parquet(path, columns=["seed", "item_ids"])
    frame = frame.sample(min(n, len(frame)), random_state=seed)
    return [
        {"item_id": str(s), "size": len(ids)} for s, ids in zip(frame["seed"], frame["item_ids"], strict=True)
    ]


def payloads_for(endpoint: str, version_dir: Path | None, k: int = 10) -> list[dict[str, Any]]:
    """Request bodies for ``endpoint``; all but ``search`` draw on the served version's folder."""
    if endpoint == "search":
        return search_payloads(k)
    if version_dir is None:
        raise ValueError(f"{endpoint} needs the served version's folder (its users, items or bundles)")
    if endpoint == "similar":
        return similar_payloads(version_dir, k=k)
    if endpoint == "bundle":
        return bundle_payloads(version_dir)
    return recommend_payloads(version_dir, k=k)


def format_table(rows: Sequence[CellResult]) -> str:
    head = f"{'endpoint':<10}{'clients':>8}{'req/s':>9}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'errors':>8}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r.endpoint:<10}{r.concurrency:>8}{r.requests_per_s:>9.1f}{r.p50_ms:>9.1f}"
            f"{r.p95_ms:>9.1f}{r.p99_ms:>9.1f}{r.errors:>8}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m serving.loadtest",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--url", default="http://127.0.0.1:3000", help="the server (loopback only)")
    parser.add_argument("--endpoint", choices=ENDPOINTS, nargs="+", default=list(ENDPOINTS))
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32], help="clients per cell")
    parser.add_argument("--seconds", type=float, default=60.0, help="measured seconds per cell")
    parser.add_argument("--warmup", type=float, default=2.0, help="uncounted seconds before each cell")
    parser.add_argument("--k", type=int, default=10, help="items per answer")
    parser.add_argument(
        "--client",
        choices=(*CLIENTS, "wrk"),
        default="raw",
        help="HTTP client (see above; wrk: the C load generator with bench/wrk/post_json.lua)",
    )
    parser.add_argument(
        "--model-dir",
        type=Path,
        default=None,
        help="the served version's folder, for /recommend's users, /similar's items and /bundle's "
        "seeds (default: the configured champion)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the cells here")
    args = parser.parse_args(argv)

    settings = get_settings()
    version_dir = args.model_dir
    if version_dir is None and set(args.endpoint) - {"search"}:
        tag = registry.champion(settings)
        if tag is None:
            parser.error(f"no champion in {settings.bentoml_home}: pass --model-dir")
        version_dir = registry.get(tag, settings).path
    rows = []
    for endpoint in args.endpoint:
        payloads = payloads_for(endpoint, version_dir, args.k)
        for n in args.concurrency:
            if args.client == "wrk":
                token = settings.serving_api_token
                rows.append(
                    run_wrk_cell(
                        args.url,
                        endpoint,
                        payloads,
                        n,
                        args.seconds,
                        args.warmup,
                        token=token.get_secret_value() if token else None,
                    )
                )
            else:
                rows.append(
                    run_cell(
                        args.url,
                        endpoint,
                        payloads,
                        n,
                        args.seconds,
                        args.warmup,
                        auth_headers(settings),
                        client=args.client,
                    )
                )
            print(format_table(rows[-1:]).splitlines()[-1], flush=True)
    print(format_table(rows))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=2) + "\n")
    return 1 if any(r.errors for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
