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
"""

from __future__ import annotations

import logging
import os
from typing import Annotated, Any

import bentoml
from bentoml.exceptions import BentoMLException
from pydantic import BaseModel, Field

from ml.registry import MODEL_NAME, champion
from ml.settings import get_settings

log = logging.getLogger(__name__)

MAX_K = 100
MAX_HISTORY = 200
MAX_QUERY_CHARS = 512
MAX_BATCH = 64

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
    from serving.logic import ServingError

    if isinstance(error, ServingError):
        return BentoMLException(error.message, error_code=_status(error.status))
    return BentoMLException(str(error))


def _status(code: int) -> Any:
    from http import HTTPStatus

    return HTTPStatus(code)


@bentoml.service(name="shopflow", traffic={"timeout": 30})
class Recommender:
    """Recommendations, similar items and text search from the champion model."""

    model_ref = bentoml.models.BentoModel(served_tag())

    def __init__(self) -> None:
        from serving.logic import ServingModel

        stored = self.model_ref
        self.engine = ServingModel(
            stored.path,
            tag=str(stored.tag),
            log_dir=_settings.work_dir / "serving_logs",
            work_dir=_settings.work_dir,
        )
        # Readiness then means every endpoint is fast (the encoder loads in seconds on a CPU).
        self.engine.warm_up()
        log.info(
            "serving %s (%d items, user histories from %s)",
            stored.tag,
            len(self.engine.item_ids) - 1,
            self.engine.histories_source,
        )

    @bentoml.api
    def recommend(
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
        from serving.logic import ServingError

        try:
            return RecommendResponse(**self.engine.recommend(user_id, recent_items, k, exclude_seen))
        except ServingError as error:
            raise _http_error(error) from error

    @bentoml.api
    def similar(
        self,
        item_id: Annotated[str, Field(min_length=1, max_length=128, examples=["B004Z40048"])],
        k: K = 10,
    ) -> SimilarResponse:
        """Items most similar to an item (404 for an unknown item id)."""
        from serving.logic import ServingError

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
        from serving.logic import ServingError

        if not query.strip():
            raise BentoMLException("query is blank: send some words to search for", error_code=_status(400))
        try:
            return SearchResponse(**self.engine.search(query, k))
        except ServingError as error:
            raise _http_error(error) from error

    @bentoml.api(batchable=True, max_batch_size=MAX_BATCH, max_latency_ms=200)
    def search_batch(self, queries: list[SearchQuery]) -> list[SearchResponse]:
        """Several searches; concurrent requests are merged into one encoder batch."""
        from serving.logic import ServingError

        try:
            # One encoder pass for the whole (merged) batch; k is per query.
            vectors = self.engine.encode_queries([q.query for q in queries])
        except ServingError as error:
            raise _http_error(error) from error
        out = []
        for q, vector in zip(queries, vectors, strict=True):
            out.append(SearchResponse(**self.engine.search_vector(q.query, vector, q.k)))
        return out
