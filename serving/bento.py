"""Build the Bento for a registered version and smoke-query it as a real server.

The training DAG runs these between registration and promotion: the challenger is served by tag
(``SHOPFLOW_SERVING_MODEL``), so a model that cannot be built or served is never promoted.
Both run BentoML as subprocesses with ``BENTOML_HOME`` set to the registry's home, so the caller's
own (process-wide) BentoML store is never touched.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ml.core.net import free_port
from ml.core.settings import PROJECT_DIR, Settings, get_settings
from serving.client import auth_headers

BENTOFILE = PROJECT_DIR / "serving" / "bentofile.yaml"


def _env(settings: Settings, model_tag: str | None) -> dict[str, str]:
    env = {
        **os.environ,
        "BENTOML_HOME": str(settings.bentoml_home),
        "SHOPFLOW_WORK_DIR": str(settings.work_dir),
        "BENTOML_DO_NOT_TRACK": "True",
    }
    if model_tag:
        env["SHOPFLOW_SERVING_MODEL"] = model_tag
    if settings.serving_api_token is not None:
        env["SHOPFLOW_SERVING_API_TOKEN"] = settings.serving_api_token.get_secret_value()
    return env


def _bentoml() -> str:
    return str(Path(sys.executable).with_name("bentoml"))


def build_bento(model_tag: str | None = None, settings: Settings | None = None) -> str:
    """``bentoml build`` of serving/bentofile.yaml around a model version; returns the Bento tag.

    Args:
        model_tag: the registered version to package (default: the champion).
        settings: ShopFlow settings (the BentoML home the Bento is stored in).
    """
    settings = settings or get_settings()
    prepare_indexes(model_tag, settings)
    done = subprocess.run(
        [_bentoml(), "build", "-f", str(BENTOFILE), "-o", "tag", str(PROJECT_DIR)],
        env=_env(settings, model_tag),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"bentoml build failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    for line in done.stdout.splitlines():
        if line.startswith("__tag__:"):
            return line.removeprefix("__tag__:").strip()
    raise RuntimeError(f"bentoml build printed no tag:\n{done.stdout[-2000:]}")


def prepare_indexes(model_tag: str | None, settings: Settings) -> dict[str, Any]:
    """Build the version's approximate item indexes into its folder before it is packaged, when
    its catalog reaches ``settings.serving_ann_min_items`` (serving/index.py): the Bento then
    carries them and a worker only reads them at start. Returns the index manifest ({}: exact)."""
    from ml import registry
    from serving.index import prepare_version

    tag = model_tag or registry.champion(settings) or f"{registry.MODEL_NAME}:latest"
    return prepare_version(registry.get(tag, settings).path, settings.serving_ann_min_items)


@dataclass(frozen=True)
class RunningServer:
    """A ``bentoml serve`` subprocess that answered /readyz."""

    base_url: str
    ready_s: float
    log_path: Path
    process: subprocess.Popen[Any]


@contextmanager
def running_server(
    target: str = "serving.service:Recommender",
    model_tag: str | None = None,
    settings: Settings | None = None,
    timeout_s: float = 180.0,
    extra_env: dict[str, str] | None = None,
    log_dir: Path | None = None,
) -> Iterator[RunningServer]:
    """``bentoml serve <target>`` on a free loopback port, ready on entry, stopped on exit.

    Args:
        target: a Bento tag (from :func:`build_bento`) or the service import path.
        model_tag: the version to serve when ``target`` is the import path (default: champion).
        settings: ShopFlow settings (store, work dir, API token).
        timeout_s: how long the server may take to become ready.
        extra_env: more environment for the server (e.g. BentoML config options).
        log_dir: where the server's output goes (default ``<work_dir>/serving_logs``).

    Raises:
        RuntimeError: the server died or was not ready in time (with the end of its log).
    """
    import httpx

    settings = settings or get_settings()
    port = free_port()
    log_path = (log_dir or settings.work_dir / "serving_logs") / f"serve-{port}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with log_path.open("w") as log_file:
        server = subprocess.Popen(
            [_bentoml(), "serve", target, "--host", "127.0.0.1", "--port", str(port)],
            cwd=PROJECT_DIR,
            env={**_env(settings, model_tag), **(extra_env or {})},
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: the workers stop with it
        )
        try:
            base = f"http://127.0.0.1:{port}"
            with httpx.Client(base_url=base, timeout=10) as http:
                while True:
                    if server.poll() is not None:
                        raise RuntimeError(f"bentoml serve exited early:\n{log_path.read_text()[-4000:]}")
                    if time.monotonic() - started > timeout_s:
                        raise RuntimeError(f"bentoml serve not ready in {timeout_s:.0f} s (log: {log_path})")
                    try:
                        if http.get("/readyz").status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    time.sleep(0.5)
            yield RunningServer(base, round(time.monotonic() - started, 2), log_path, server)
        finally:
            _stop(server)


def smoke_query(
    target: str = "serving.service:Recommender",
    model_tag: str | None = None,
    settings: Settings | None = None,
    timeout_s: float = 180.0,
    searchable: bool = True,
) -> dict[str, Any]:
    """Start ``bentoml serve <target>``, wait for /readyz, call every endpoint, stop it.

    Args:
        target: a Bento tag (from :func:`build_bento`) or the service import path.
        model_tag: the version to serve when ``target`` is the import path (default: champion).
        settings: ShopFlow settings (the API token, when set, is sent).
        timeout_s: how long the server may take to become ready.
        searchable: the model has a text encoder; False (an ID-only model): ``/search`` must
            answer 501, and ``/similar`` is asked about the first recommended item instead.

    Returns:
        Timings and answers: ready_s, model_version, per-endpoint status and latency_ms.

    Raises:
        RuntimeError: the server died, was not ready in time, or an endpoint failed.
    """
    import httpx

    settings = settings or get_settings()
    with (
        running_server(target, model_tag, settings, timeout_s) as server,
        httpx.Client(base_url=server.base_url, timeout=60, headers=auth_headers(settings)) as http,
    ):
        return _query(http, server.ready_s, searchable)


SMOKE_CALLS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("/recommend", {"recent_items": [], "user_id": "smoke-test-user", "k": 5}),
    ("/search", {"query": "moisturizing face cream", "k": 5}),
)
"""The smoke queries, in order; then ``/similar`` for the first item the search found (for an
ID-only model, which answers /search with 501: the first item recommended). One list for
the train DAG's smoke test over HTTP (:func:`smoke_query`) and the running Bento's check of a new
champion before it swaps it in (``serving.hot_swap``)."""


def run_smoke(
    post: Callable[[str, dict[str, Any]], tuple[int, Any]], searchable: bool = True
) -> dict[str, Any]:
    """Send the smoke queries through ``post(path, payload) -> (status, JSON body)``.

    Every endpoint must answer 200 with the model version and at least one item with a finite
    score (a model whose weights are NaN answers 200 with nonsense: that is a failure too). An
    ID-only model (``searchable=False``) has no text to search: there ``/search`` must answer 501,
    and ``/similar`` is asked about the first item ``/recommend`` returned.

    Returns:
        ``{"model_version": ..., "endpoints": {name: {"status", "latency_ms"}}}``.

    Raises:
        RuntimeError: an endpoint failed, naming it and what it answered.
    """
    out: dict[str, Any] = {"endpoints": {}}
    calls = list(SMOKE_CALLS)
    # /similar is asked about the first item of a text model's search, or of an ID-only one's
    # recommendations.
    similar_from = "/search" if searchable else "/recommend"
    while calls:
        path, payload = calls.pop(0)
        t = time.perf_counter()
        status, body = post(path, payload)
        out["endpoints"][path.strip("/")] = {
            "status": status,
            "latency_ms": round((time.perf_counter() - t) * 1000, 1),
        }
        if path == "/search" and not searchable:
            if status != 501:
                raise RuntimeError(f"/search of an ID-only model answered {status}, not 501: {body}")
            continue
        if status != 200:
            raise RuntimeError(f"{path} answered {status}: {str(body)[:500]}")
        items = body.get("items") if isinstance(body, dict) else None
        if not items or not all(math.isfinite(float(i["score"])) for i in items):
            raise RuntimeError(f"{path} answered no items or a non-finite score: {str(body)[:500]}")
        out["model_version"] = body["model_version"]
        if path == similar_from:
            calls.append(("/similar", {"item_id": str(items[0]["item_id"]), "k": 5}))
    return out


def _query(http: Any, ready_s: float, searchable: bool) -> dict[str, Any]:
    def post(path: str, payload: dict[str, Any]) -> tuple[int, Any]:
        response = http.post(path, json=payload)
        try:
            return response.status_code, response.json()
        except ValueError:
            return response.status_code, response.text

    return {"ready_s": ready_s, **run_smoke(post, searchable)}


def _stop(server: subprocess.Popen[Any]) -> None:
    try:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=20)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=10)
