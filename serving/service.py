"""The ShopFlow Bento: the champion recommender behind typed HTTP endpoints.

Run with ``BENTOML_HOME=<work_dir>/bentoml bentoml serve serving.service:Recommender`` (the
registry is the BentoML store under ``settings.bentoml_home``; BentoML's own default store is
``$BENTOML_HOME``, so the two must agree). The served version is, in order: the tag in
``SHOPFLOW_SERVING_MODEL``, the registry's champion, else the latest ``shopflow_recommender``
(inside a built Bento, the one packaged with it).

Endpoints (all POST, JSON): ``/recommend``, ``/similar``, ``/search``, ``/search_batch``
(adaptive batching: concurrent requests share one encoder pass); BentoML adds ``/livez``,
``/readyz``, ``/metrics`` and ``/docs.json`` (OpenAPI). Every answered request is logged as a
JSON line under ``<work_dir>/serving_logs/`` for the monitoring DAG.

With ``SHOPFLOW_SERVING_API_TOKEN`` set, every endpoint but the probes (``/livez``, ``/healthz``,
``/readyz``, ``/metrics``) needs ``Authorization: Bearer <token>`` and answers 401 otherwise.
"""

from __future__ import annotations

import gc
import hmac
import json
import logging
import os
from collections.abc import Callable
from typing import Annotated, Any

import bentoml
from bentoml.exceptions import BentoMLException
from pydantic import BaseModel, Field, SecretStr

from ml.core.settings import get_settings
from ml.registry import MODEL_NAME, champion

log = logging.getLogger(__name__)

MAX_K = 100
MAX_HISTORY = 200
MAX_QUERY_CHARS = 512
MAX_BATCH = 64
SERVING_THREADS = 1
"""torch and faiss intra-op threads per worker (see Recommender.__init__)."""

_settings = get_settings()
# BentoML's default store is lazy; pointing it at the registry before first use makes the class
# attribute below resolve there (an explicit BENTOML_HOME wins).
os.environ.setdefault("BENTOML_HOME", str(_settings.bentoml_home))


def served_tag() -> str:
    """The tag of the version to serve: override, champion, else the latest registered."""
    override = os.environ.get("SHOPFLOW_SERVING_MODEL")
    if override:
        return override if ":" in override else f"{MODEL_NAME}:{override}"
    current = champion(_settings)
    if current:
        return current
    log.warning("no champion in %s: serving the latest %s", _settings.bentoml_home, MODEL_NAME)
    return f"{MODEL_NAME}:latest"


# -- IO models -----------------------------------------------------------------------------------
class Item(BaseModel):
    item_id: str = Field(description="Catalog item id.", examples=["B004Z40048"])
    title: str = Field(description="Item title (first part of the item text).")
    score: float = Field(description="Retrieval score: model dot product (recommend) or cosine.")
    reason: str | None = Field(
        None, description="Why it is recommended: the history item most similar to it, or 'popular'."
    )


class RecommendResponse(BaseModel):
    model_version: str = Field(description="Registry tag of the model that answered.")
    strategy: str = Field(description="'personalized' or 'cold_start_popular' (unknown user / history).")
    history_source: str = Field(description="'user_history' (looked up by user_id) or 'recent_items'.")
    history_length: int = Field(description="Known catalog items in the history used.")
    unknown_items: list[str] = Field(description="Items of recent_items not in the catalog (ignored).")
    note: str | None = Field(None, description="Explains a cold-start answer.")
    items: list[Item]


class SimilarResponse(BaseModel):
    model_version: str
    item_id: str
    title: str
    space: str = Field(description="'model' (learned item space) or 'text' (cold item: encoder space).")
    items: list[Item]


class SearchResponse(BaseModel):
    model_version: str
    query: str
    items: list[Item]


class SearchQuery(BaseModel):
    query: Annotated[str, Field(min_length=1, max_length=MAX_QUERY_CHARS, examples=["red lipstick"])]
    k: Annotated[int, Field(ge=1, le=MAX_K)] = 10


K = Annotated[int, Field(ge=1, le=MAX_K, description=f"Number of items to return (1..{MAX_K}).")]


def _http_error(error: Exception) -> BentoMLException:
    """The BentoML exception (HTTP status + message) for a ServingError."""
    from serving.engine import ServingError

    if isinstance(error, ServingError):
        return BentoMLException(error.message, error_code=_status(error.status))
    return BentoMLException(str(error))


def _status(code: int) -> Any:
    from http import HTTPStatus

    return HTTPStatus(code)


# -- authentication ------------------------------------------------------------------------------
OPEN_PATHS = frozenset({"/livez", "/healthz", "/readyz", "/metrics"})
"""Probes and Prometheus scraping stay open: orchestrators call them without credentials."""


def _configured_token() -> SecretStr | None:
    # Read per request from the (cached) process settings, so the setting is the one source.
    return get_settings().serving_api_token


class BearerTokenMiddleware:
    """ASGI middleware: with a token configured, non-probe requests need ``Bearer <token>``.

    Plain ASGI (no request object is built) so the check costs microseconds on the fast path;
    the comparison is constant-time. Without a token every request passes (local use).
    """

    def __init__(self, app: Any, token: Callable[[], SecretStr | None] = _configured_token) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            return await self.app(scope, receive, send)
        token = self.token()
        if token is None:
            return await self.app(scope, receive, send)
        sent = next((v for k, v in scope["headers"] if k == b"authorization"), None)
        if sent is None:
            return await _unauthorized(
                send,
                "missing credentials: this service requires the header 'Authorization: Bearer <token>' "
                "(the token is the server's SHOPFLOW_SERVING_API_TOKEN)",
            )
        expected = b"Bearer " + token.get_secret_value().encode()
        if not hmac.compare_digest(sent, expected):
            return await _unauthorized(
                send, "invalid credentials: the bearer token does not match SHOPFLOW_SERVING_API_TOKEN"
            )
        return await self.app(scope, receive, send)


async def _unauthorized(send: Any, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 401,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"www-authenticate", b'Bearer realm="shopflow"'),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


# threads: the sync APIs (search) run in worker threads, where concurrent queries wait to share
# one encoder pass (serving.engine.QueryCombiner); recommend and similar run on the event loop.
# The access log is off: every answered request is already logged, with its latency, by the
# engine's request log, and BentoML's log line cost a few % of a cached recommendation's CPU.
@bentoml.service(
    name="shopflow",
    traffic={"timeout": 30},
    threads=MAX_BATCH,
    logging={"access": {"enabled": False}},
)
class Recommender:
    """Recommendations, similar items and text search from the champion model."""

    model_ref = bentoml.models.BentoModel(served_tag())

    def __init__(self) -> None:
        import faiss
        import torch

        from serving.engine import ServingModel

        # One request is one small sequence pass or one short query encoding: intra-op threads
        # only add hand-offs, and on a small machine they compete with the HTTP loop for cores.
        torch.set_num_threads(SERVING_THREADS)
        faiss.omp_set_num_threads(SERVING_THREADS)

        stored = self.model_ref
        self.engine = ServingModel(
            stored.path,
            tag=str(stored.tag),
            log_dir=_settings.serving_log_dir,
            work_dir=_settings.work_dir,
        )
        # Readiness then means every endpoint is fast: encoder loaded, known users precomputed.
        users = self.engine.warm_up()
        log.info(
            "serving %s (%d items, %d user vectors precomputed, histories from %s)",
            stored.tag,
            len(self.engine.item_ids) - 1,
            users,
            self.engine.histories_source,
        )
        # What is loaded now lives as long as the worker: keep it out of the collector's scans,
        # which otherwise walk every history and cached vector (p99 tails under load).
        gc.collect()
        gc.freeze()

    # recommend and similar run on the event loop: answering a known user is a cache lookup and a
    # faiss search (well under a millisecond), less than handing the call to a worker thread costs.
    @bentoml.api
    async def recommend(
        self,
        user_id: Annotated[
            str | None,
            Field(max_length=128, description="A known (hashed) user id; its training history is used."),
        ] = None,
        recent_items: Annotated[
            list[str] | None,
            Field(
                max_length=MAX_HISTORY,
                description="An explicit history of item ids, oldest first (anonymous sessions); "
                "wins over user_id.",
                examples=[["B004Z40048", "B0043OYFKU"]],
            ),
        ] = None,
        k: K = 10,
        exclude_seen: Annotated[bool, Field(description="Leave the history's items out.")] = True,
    ) -> RecommendResponse:
        """Top-k items for a user id or an explicit recent-items history."""
        from serving.engine import ServingError

        try:
            return RecommendResponse(**self.engine.recommend(user_id, recent_items, k, exclude_seen))
        except ServingError as error:
            raise _http_error(error) from error

    @bentoml.api
    async def similar(
        self,
        item_id: Annotated[str, Field(min_length=1, max_length=128, examples=["B004Z40048"])],
        k: K = 10,
    ) -> SimilarResponse:
        """Items most similar to an item (404 for an unknown item id)."""
        from serving.engine import ServingError

        try:
            return SimilarResponse(**self.engine.similar(item_id, k))
        except ServingError as error:
            raise _http_error(error) from error

    @bentoml.api
    def search(
        self,
        query: Annotated[
            str,
            Field(
                min_length=1,
                max_length=MAX_QUERY_CHARS,
                description="Free text, e.g. a product need.",
                examples=["red lipstick"],
            ),
        ],
        k: K = 10,
    ) -> SearchResponse:
        """Items whose text best matches a free-text query."""
        from serving.engine import ServingError

        if not query.strip():
            raise BentoMLException("query is blank: send some words to search for", error_code=_status(400))
        try:
            return SearchResponse(**self.engine.search(query, k))
        except ServingError as error:
            raise _http_error(error) from error

    @bentoml.api(batchable=True, max_batch_size=MAX_BATCH, max_latency_ms=200)
    def search_batch(self, queries: list[SearchQuery]) -> list[SearchResponse]:
        """Several searches; concurrent requests are merged into one encoder batch."""
        from serving.engine import ServingError

        try:
            # One encoder pass for the whole (merged) batch; k is per query.
            vectors = self.engine.encode_queries([q.query for q in queries])
        except ServingError as error:
            raise _http_error(error) from error
        out = []
        for q, vector in zip(queries, vectors, strict=True):
            out.append(SearchResponse(**self.engine.search_vector(q.query, vector, q.k)))
        return out


# The decorator returns a bentoml.Service (its type hints say the class).
Recommender.add_asgi_middleware(BearerTokenMiddleware)  # type: ignore[attr-defined]
