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

The OpenAPI document is a contract, checked by schemathesis (all checks) in the test gate: the
request models declare every limit the service enforces, and :class:`ContractMiddleware` keeps
what BentoML 1.4 cannot declare or gets wrong (required bodies, error statuses and their one body
``{"error": <message>}``, a 1 MiB body cap, JSON only).

With ``SHOPFLOW_SERVING_API_TOKEN`` set, every endpoint but the probes (``/livez``, ``/healthz``,
``/readyz``, ``/metrics``) needs ``Authorization: Bearer <token>`` and answers 401 otherwise.
"""

from __future__ import annotations

import gc
import hmac
import json
import logging
import os
import re
from collections.abc import Callable
from typing import Annotated, Any, Literal

import bentoml
from bentoml.exceptions import BentoMLException
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic.json_schema import JsonDict

from ml.core.settings import get_settings
from ml.registry import MODEL_NAME, champion

log = logging.getLogger(__name__)
# BentoML's server logging passes INFO only for its own "bentoml" logger (the root stays at
# WARNING), which hid what a worker serves (version, items, indexes) and what the follower swaps.
logging.getLogger("serving").setLevel(logging.INFO)

MAX_K = 100
MAX_HISTORY = 200
MAX_QUERY_CHARS = 512
MAX_BATCH = 64
MAX_ID_CHARS = 128
MAX_BODY_BYTES = 1 << 20
"""Request bodies above this are refused (413) before they are read: the largest valid request
(64 queries of 512 characters, or 200 item ids, JSON-escaped) is well under it."""
NOT_BLANK = r"[^ \t\n\r\f\v]"
r"""A query must contain a character other than ASCII white space. Spelled out rather than ``\S``
because pydantic (Rust regex) and JSON Schema validators (Python ``re``) disagree on what ``\s``
matches, and the document must accept exactly what the service accepts."""
NEEDS_HISTORY = "give a user_id or a non-empty recent_items list (item ids, oldest first)"
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


# -- following the champion ----------------------------------------------------------------------
VERSION_PATH = "/version"
_version_status: Callable[[], dict[str, Any]] | None = None
"""What GET /version answers: set by the service instance of this worker once it has loaded."""


def follow_champion(service: Any) -> Any:
    """Keep ``service.engine`` on the registry's champion (a started ChampionFollower), or None.

    Not followed: a worker pinned to a version by ``SHOPFLOW_SERVING_MODEL`` (the train DAG's
    smoke test, the benchmark) and ``SHOPFLOW_SERVING_FOLLOW_CHAMPION_S=0``; /version says why.
    A new version is loaded with its own request-log folder (``<work_dir>/serving_smoke``), so its
    smoke queries never reach the monitored log; once published it writes to the live log.
    """
    global _version_status
    pinned = os.environ.get("SHOPFLOW_SERVING_MODEL")
    interval = _settings.serving_follow_champion_s
    if pinned or interval <= 0:
        reason = (
            f"pinned to {pinned} by SHOPFLOW_SERVING_MODEL"
            if pinned
            else "following is off (SHOPFLOW_SERVING_FOLLOW_CHAMPION_S=0)"
        )
        _version_status = lambda: {  # noqa: E731
            "model_version": service.engine.tag,
            "following_champion": False,
            "reason": reason,
        }
        return None
    from ml import registry
    from serving.engine import ServingModel
    from serving.hot_swap import ChampionFollower

    def load(tag: str) -> ServingModel:
        version = registry.get(tag, _settings)
        engine = ServingModel(
            version.path,
            tag=version.tag,
            log_dir=_settings.work_dir / "serving_smoke",
            work_dir=_settings.work_dir,
            settings=_settings,
        )
        engine.warm_up()
        return engine

    def publish(engine: ServingModel) -> None:
        engine.log.close()
        engine.log = service.engine.log  # one live log file (and lock) across versions
        service.engine = engine  # the swap: the next request reads the new reference
        # The old version was frozen with the rest at start: unfreeze so it can be collected once
        # the requests still inside it return, then freeze the new one (see __init__).
        gc.unfreeze()
        gc.collect()
        gc.freeze()

    follower = ChampionFollower(
        service.engine, lambda: champion(_settings), load, publish, interval_s=interval
    ).start()
    _version_status = follower.status
    return follower


class VersionMiddleware:
    """``GET /version``: the version answering now and the champion follower's state.

    The follower's refusals (a promoted version that failed to load or failed the smoke queries)
    are here, with the reason, so an operator sees why the pointer and the answers disagree.
    Behind the bearer token like the API (it names versions and store paths).
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != VERSION_PATH or scope["method"] != "GET":
            return await self.app(scope, receive, send)
        if _version_status is None:
            return await _send_error(send, 503, "the service is still loading its model")
        body = json.dumps(_version_status()).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


# -- IO models -----------------------------------------------------------------------------------
# The OpenAPI document is generated from these models, and schemathesis checks the service against
# it (tests/serving/test_contract.py): every constraint the service enforces is declared here.
def _nullable(schema: dict[str, Any]) -> None:
    """Spell ``X | None`` as OpenAPI 3.0 does (``nullable: true``).

    BentoML writes a 3.0 document and flattens pydantic's ``anyOf: [X, null]`` to its first member,
    which would document ``null`` answers as never null.
    """
    members = schema.pop("anyOf", None)
    if members is None:
        return
    present = [m for m in members if m.get("type") != "null"]
    if len(present) == 1:
        schema.update(present[0])
    else:
        schema["anyOf"] = present
    schema["nullable"] = True


class Item(BaseModel):
    item_id: str = Field(description="Catalog item id.", examples=["B004Z40048"])
    title: str = Field(description="Item title (first part of the item text).")
    score: float = Field(description="Retrieval score: model dot product (recommend) or cosine.")
    reason: str | None = Field(
        None,
        description="Why it is recommended: the history item most similar to it, or 'popular'; "
        "null for similar items and search.",
        json_schema_extra=_nullable,
    )
    reason_copy: str | None = Field(
        None,
        description="How the reason was written: 'generated' (the generator's sentence passed the "
        "grounding check), 'fallback' (it failed: the template is served) or 'template' (none was "
        "generated yet: a miss is written in the background for the next request); null for "
        "popular items, similar items and search.",
        json_schema_extra=_nullable,
    )


class RecommendResponse(BaseModel):
    model_version: str = Field(description="Registry tag of the model that answered.")
    strategy: str = Field(description="'personalized' or 'cold_start_popular' (unknown user / history).")
    history_source: str = Field(description="'user_history' (looked up by user_id) or 'recent_items'.")
    history_length: int = Field(description="Known catalog items in the history used.")
    unknown_items: list[str] = Field(description="Items of recent_items not in the catalog (ignored).")
    note: str | None = Field(
        None, description="Explains a cold-start answer; null otherwise.", json_schema_extra=_nullable
    )
    items: list[Item]


class SimilarResponse(BaseModel):
    model_version: str
    item_id: str
    title: str
    space: str = Field(description="'model' (learned item space) or 'text' (cold item: encoder space).")
    items: list[Item]


SearchMode = Literal["dense", "bm25", "hybrid", "hybrid_intent", "hybrid_intent_personal"]
"""The search methods of ml.retrieval.hybrid.MODES (a test checks the two lists agree)."""


def _nullable_enum(schema: dict[str, Any]) -> None:
    """:func:`_nullable`, and ``null`` listed in the enum (OpenAPI 3.0 wants both for a nullable enum)."""
    _nullable(schema)
    if "enum" in schema and None not in schema["enum"]:
        schema["enum"] = [*schema["enum"], None]


class SearchItem(Item):
    score: float = Field(
        description="Retrieval score, by mode: cosine (dense), BM25 (bm25) or the reciprocal-rank "
        "fusion score (hybrid modes)."
    )
    brand: str | None = Field(
        None,
        description="The item's brand as the catalog spells it; null when unknown.",
        json_schema_extra=_nullable,
    )
    category: str | None = Field(
        None,
        description="The item's category path ('Beauty > Makeup > Eyes > Mascara'); null when unknown.",
        json_schema_extra=_nullable,
    )
    price_band: str | None = Field(
        None,
        description="The item's price band ('under 5', '5-10', '10-25', '25-50', '50-100', '100+'): "
        "the model keeps bands, not exact prices; null when the price is unknown.",
        json_schema_extra=_nullable,
    )
    price_min: float | None = Field(
        None,
        description="Lower bound of the price band (inclusive); null when unknown.",
        json_schema_extra=_nullable,
    )
    price_max: float | None = Field(
        None,
        description="Upper bound of the price band (exclusive); null when unknown or for the top band.",
        json_schema_extra=_nullable,
    )


class SearchIntent(BaseModel):
    brand: str | None = Field(
        None,
        description="Brand the query names (catalog spelling; typos tolerated).",
        json_schema_extra=_nullable,
    )
    category: str | None = Field(
        None,
        description="Category the query names (one level of a catalog category path, e.g. 'Mascara').",
        json_schema_extra=_nullable,
    )
    max_price: float | None = Field(
        None,
        description="Upper price limit asked for ('under $20', 'cheap'); null when none.",
        json_schema_extra=_nullable,
    )
    min_price: float | None = Field(
        None,
        description="Lower price limit asked for ('over $20', 'between 10 and 15').",
        json_schema_extra=_nullable,
    )
    terms: str = Field(description="The query's remaining free text (without price, brand and category).")


class SearchResponse(BaseModel):
    model_version: str
    query: str
    mode: SearchMode = Field(description="The search method that answered.")
    personalized: bool = Field(description="Whether the user's recommender vector was blended in.")
    intent: SearchIntent = Field(
        description="What the query asks for; brand and price act as filters and the category as a "
        "boost in the hybrid_intent modes only (other modes return it unapplied)."
    )
    note: str | None = Field(
        None,
        description="Why the answer is empty (no item fits the intent's filters) or not personalised; "
        "null otherwise.",
        json_schema_extra=_nullable,
    )
    items: list[SearchItem]


# Strict: JSON "10" is not the integer 10, nor 0 the boolean false, for the document or the service.
K = Annotated[int, Field(ge=1, le=MAX_K, strict=True, description=f"Number of items to return (1..{MAX_K}).")]


def _not_blank(query: str) -> str:
    # The same pattern the document states, checked with the same engine (Python re) that JSON
    # Schema validators use, and refused in words rather than as a regex.
    if not re.search(NOT_BLANK, query):
        raise ValueError("query is blank: send some words to search for")
    return query


Query = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_QUERY_CHARS,
        description="Free text, e.g. a product need (not blank).",
        examples=["red lipstick"],
        json_schema_extra={"pattern": NOT_BLANK},
    ),
    AfterValidator(_not_blank),
]
ItemId = Annotated[str, Field(min_length=1, max_length=MAX_ID_CHARS, examples=["B004Z40048"])]


MODE_DESCRIPTION = (
    "Search method: 'dense' (encoder cosine), 'bm25' (lexical), 'hybrid' (reciprocal-rank fusion of "
    "both), 'hybrid_intent' (hybrid with the query's brand and price as filters and category as a "
    "boost), 'hybrid_intent_personal' (hybrid_intent blended with the user's recommender ranking). "
    "Null or absent: 'hybrid_intent', or 'hybrid_intent_personal' when a user_id is given."
)


class SearchQuery(BaseModel):
    model_config = ConfigDict(strict=True)

    query: Query
    k: K = 10
    mode: SearchMode | None = Field(None, description=MODE_DESCRIPTION, json_schema_extra=_nullable_enum)


class SimilarQuery(BaseModel):
    """One /similar_batch element: the /similar body."""

    model_config = ConfigDict(strict=True)

    item_id: ItemId
    k: K = 10


class SimilarAnswer(BaseModel):
    """One /similar_batch answer: the /similar response, or the error /similar would have given."""

    item_id: str
    status: int = Field(description="The status /similar would answer: 200, or 404 for an unknown item.")
    error: str | None = Field(None, description="Why there is no result.", json_schema_extra=_nullable)
    result: SimilarResponse | None = Field(None, json_schema_extra=_nullable)


class SearchRequest(BaseModel):
    """The /search body: a query, optionally a method and a known user to personalise for."""

    model_config = ConfigDict(strict=True)

    query: Query
    k: K = 10
    mode: SearchMode | None = Field(None, description=MODE_DESCRIPTION, json_schema_extra=_nullable_enum)
    user_id: str | None = Field(
        None,
        max_length=MAX_ID_CHARS,
        description="A known (hashed) user id: personalises the default mode. Unknown ids get "
        "unpersonalised results (and a note).",
        json_schema_extra=_nullable,
    )


# One of the two histories, as JSON Schema says it: exactly one branch holds for any valid body.
_ONE_HISTORY: JsonDict = {
    "oneOf": [
        {"required": ["recent_items"], "properties": {"recent_items": {"type": "array", "minItems": 1}}},
        {
            "required": ["user_id"],
            "properties": {"user_id": {"type": "string"}, "recent_items": {"maxItems": 0}},
        },
    ]
}


class RecommendRequest(BaseModel):
    """The /recommend body: a known user id, or an explicit history (which wins when both are given)."""

    model_config = ConfigDict(strict=True, json_schema_extra=_ONE_HISTORY)

    user_id: str | None = Field(
        None,
        max_length=MAX_ID_CHARS,
        description="A known (hashed) user id; its training history is used. Unknown ids get the "
        "cold-start answer.",
        json_schema_extra=_nullable,
    )
    recent_items: list[Annotated[str, Field(max_length=MAX_ID_CHARS)]] | None = Field(
        None,
        max_length=MAX_HISTORY,
        description="An explicit history of item ids, oldest first (anonymous sessions); wins over "
        "user_id when not empty.",
        examples=[["B004Z40048", "B0043OYFKU"]],
        json_schema_extra=_nullable,
    )
    k: K = 10
    exclude_seen: bool = Field(True, description="Leave the history's items out.")

    @model_validator(mode="after")
    def _has_history(self) -> RecommendRequest:
        if self.user_id is None and not self.recent_items:
            raise ValueError(NEEDS_HISTORY)
        return self


# -- /ask: the shopping assistant (ml.retrieval.assistant) ---------------------------------------
MAX_TURNS = 10


class AskTurn(BaseModel):
    """One earlier message of the conversation."""

    model_config = ConfigDict(strict=True)

    role: Literal["user", "assistant"] = Field(description="Who wrote it.")
    content: str = Field(max_length=MAX_QUERY_CHARS, description="What was written.")


def _question_not_blank(question: str) -> str:
    if not re.search(NOT_BLANK, question):
        raise ValueError("question is blank: ask something about the catalog")
    return question


Question = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_QUERY_CHARS,
        description="A shopper's question about the catalog (not blank).",
        examples=["How much is the Maybelline Great Lash mascara?"],
        json_schema_extra={"pattern": NOT_BLANK},
    ),
    AfterValidator(_question_not_blank),
]


class AskRequest(BaseModel):
    """The /ask body: a question, optionally the conversation's earlier turns (oldest first)."""

    model_config = ConfigDict(strict=True)

    question: Question
    history: list[AskTurn] | None = Field(
        None,
        max_length=MAX_TURNS,
        description=f"Earlier turns, oldest first (at most {MAX_TURNS}; the last 4 reach the generator). "
        "A follow-up that matches nothing alone is searched with the previous user turn.",
        json_schema_extra=_nullable,
    )


class AskItem(BaseModel):
    item_id: str = Field(description="A cited catalog item id.")
    title: str
    brand: str | None = Field(None, description="Brand; null when unknown.", json_schema_extra=_nullable)
    category: str | None = Field(
        None, description="Category path; null when unknown.", json_schema_extra=_nullable
    )
    price: float | None = Field(
        None,
        description="Exact price when the catalog snapshot has one (a model version keeps bands: null).",
        json_schema_extra=_nullable,
    )
    price_band: str | None = Field(
        None, description="Price band; null when unknown.", json_schema_extra=_nullable
    )
    match: float = Field(description="How well the item matches the question (word coverage + cosine).")


class AskResponse(BaseModel):
    model_version: str
    question: str
    answer: str = Field(description="The answer: generated and grounding-checked, else the template.")
    strategy: Literal["generated", "template", "no_match"] = Field(
        description="'generated' (the generator's text passed the grounding check), 'template' (built "
        "from the catalog facts: no generator, busy, over its time budget or failed the check), "
        "'no_match' (nothing in the catalog matches)."
    )
    items: list[AskItem] = Field(description="The items the answer cites, best first.")
    intent: SearchIntent
    asked: Literal["price", "brand", "category"] | None = Field(
        None,
        description="The fact asked about; null for a general question.",
        json_schema_extra=_nullable_enum,
    )
    no_match: bool = Field(description="True when no catalog item matched (the answer says so).")
    generated: bool = Field(description="Whether the generator wrote a text for this question.")
    grounded: bool = Field(description="Whether that raw text passed the grounding check.")
    fallback: bool = Field(description="Whether the template answer was served instead.")
    generator: str | None = Field(
        None,
        description="The generator that wrote the served answer; null: template.",
        json_schema_extra=_nullable,
    )
    note: str | None = Field(
        None,
        description="Why the template or 'no match' was served; null for a generated answer.",
        json_schema_extra=_nullable,
    )
    reasons: list[str] = Field(description="The grounding check's reasons when the raw text failed.")


# -- bundles (issue 12) ----------------------------------------------------------------------------
MAX_TITLE_CHARS = 300
_ONE_SEED: JsonDict = {
    "anyOf": [
        {"required": ["item_id"], "properties": {"item_id": {"type": "string"}}},
        {"required": ["user_id"], "properties": {"user_id": {"type": "string"}}},
        {"required": ["title"], "properties": {"title": {"type": "string"}}},
    ]
}


class BundleRequest(BaseModel):
    """The /bundle body: a seed (a catalog item, a known user, or a brand-new item's text) and a size.

    When several are given, item_id wins over user_id, and user_id over title.
    """

    model_config = ConfigDict(strict=True, json_schema_extra=_ONE_SEED)

    item_id: str | None = Field(
        None,
        max_length=MAX_ID_CHARS,
        description="A catalog item to build the bundle around.",
        json_schema_extra=_nullable,
    )
    user_id: str | None = Field(
        None,
        max_length=MAX_ID_CHARS,
        description="A known user: the bundle of their latest item.",
        json_schema_extra=_nullable,
    )
    title: str | None = Field(
        None,
        min_length=1,
        max_length=MAX_TITLE_CHARS,
        description="A brand-new item's title (not in the catalog): its bundle comes from the text.",
        json_schema_extra=_nullable,
    )
    category: str | None = Field(
        None,
        max_length=MAX_TITLE_CHARS,
        description="The new item's category path ('A > B > C').",
        json_schema_extra=_nullable,
    )
    brand: str | None = Field(
        None, max_length=MAX_ID_CHARS, description="The new item's brand.", json_schema_extra=_nullable
    )
    price: float | None = Field(
        None, ge=0, le=1e6, description="The new item's price.", json_schema_extra=_nullable
    )
    size: int = Field(3, ge=2, le=4, strict=True, description="Items in the bundle (2..4), seed included.")

    @model_validator(mode="after")
    def _has_seed(self) -> BundleRequest:
        if self.item_id is None and self.user_id is None and self.title is None:
            raise ValueError("give an item_id, a user_id or a new item's title")
        return self


class BundleItem(BaseModel):
    item_id: str
    title: str
    brand: str | None = Field(None, json_schema_extra=_nullable)
    category: str | None = Field(
        None, description="Category path; null when unknown.", json_schema_extra=_nullable
    )
    price: float | None = Field(None, description="Catalog price.", json_schema_extra=_nullable)
    source: str = Field(
        description="'seed', 'copurchase' (bought together before) or 'embedding' (the model's neighbours)."
    )


class BundleResponse(BaseModel):
    model_version: str
    basis: str = Field(description="'item', 'user' (their latest item) or 'new_item' (text only).")
    seed_item_id: str | None = Field(
        None, description="The catalog seed; null for a new item.", json_schema_extra=_nullable
    )
    seed_title: str
    strategy: str = Field(
        description="'packaged' (built and written when the version was packaged) or 'embeddings' "
        "(built now from the model's vectors)."
    )
    copy_status: str = Field(
        description="'generated' (the generator's text passed the grounding check), 'fallback' (it "
        "failed: the template is served) or 'template' (none was generated: copy the package "
        "lacks is written by the generator champion within SHOPFLOW_SERVE_COPY_BUDGET_S, and past "
        "it in the background for the next request)."
    )
    name: str
    description: str
    total_price: float | None = Field(None, json_schema_extra=_nullable)
    items: list[BundleItem]


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


# -- the HTTP contract ----------------------------------------------------------------------------
API_PATHS = frozenset(
    {
        "/bundle",
        "/recommend",
        "/recommend_batch",
        "/similar",
        "/similar_batch",
        "/search",
        "/search_batch",
        "/ask",
    }
)
DOCS_PATH = "/docs.json"
ERROR_SCHEMA = "Error"
ERROR_STATUSES = {
    400: "Invalid request: the message names each field and what is wrong with it.",
    401: "Missing or wrong bearer token (only when the server has SHOPFLOW_SERVING_API_TOKEN).",
    413: f"Request body over {MAX_BODY_BYTES} bytes.",
    415: "Content-Type other than application/json.",
    500: "Unexpected server error (see the server log).",
}
PATH_ERROR_STATUSES = {
    "/bundle": {
        404: "Unknown item id or user, or no complementary priced items for the seed.",
        501: "The model has no text encoder (ID-only): a new item's title cannot be used.",
    },
    "/similar": {404: "Unknown item id (use /search to find items by text)."},
    "/search": {501: "The model has no text encoder (ID-only): search is unavailable."},
    "/search_batch": {501: "The model has no text encoder (ID-only): search is unavailable."},
    "/ask": {501: "The model has no text encoder (ID-only): the assistant is unavailable."},
}


def contract_document(spec: dict[str, Any]) -> dict[str, Any]:
    """BentoML's OpenAPI document, amended to say what the service does (served at /docs.json).

    BentoML 1.4 cannot declare these itself: a request body is required (it marks none required),
    and every error status an endpoint answers is listed with the one error body it has
    (``{"error": <message>}``, see :func:`documented_error`) instead of BentoML's fixed
    400/404/500 for every endpoint.
    """
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    schemas[ERROR_SCHEMA] = {
        "type": "object",
        "title": ERROR_SCHEMA,
        "required": ["error"],
        "properties": {
            "error": {"type": "string", "description": "What went wrong, in words a client can act on."},
            "detail": {"type": "string", "description": "More context, when there is some."},
        },
    }
    error_body = {"application/json": {"schema": {"$ref": f"#/components/schemas/{ERROR_SCHEMA}"}}}
    for path in sorted(API_PATHS & set(spec.get("paths", {}))):
        operation = spec["paths"][path]["post"]
        operation["requestBody"]["required"] = True
        errors = {**ERROR_STATUSES, **PATH_ERROR_STATUSES.get(path, {})}
        operation["responses"] = {
            "200": operation["responses"]["200"],
            **{
                str(code): {"description": text, "content": error_body}
                for code, text in sorted(errors.items())
            },
        }
    return spec


def documented_error(body: bytes) -> bytes:
    """A 4xx JSON body of BentoML's in the documented shape ``{"error": <message>}``.

    BentoML answers validation errors as ``{"error": "1 validation error for Input", "detail":
    [pydantic errors]}`` and raised 4xx errors as a one-element list (bentoml/BentoML#4232), while
    its own document says ``detail`` is a string. One shape for every error: the pydantic errors
    become one message naming each field.
    """
    try:
        data = json.loads(body)
    except ValueError:
        return body
    if isinstance(data, list) and len(data) == 1 and isinstance(data[0], dict):
        data = data[0]
    if isinstance(data, dict) and isinstance(data.get("detail"), list):
        problems = "; ".join(_problem(e) for e in data["detail"] if isinstance(e, dict))
        data = {"error": f"invalid request: {problems or data.get('error')}"}
    if not (isinstance(data, dict) and isinstance(data.get("error"), str)):
        data = {"error": str(data)}
    data = {k: v for k, v in data.items() if k == "error" or (k == "detail" and isinstance(v, str))}
    return json.dumps(data).encode()


def _problem(error: dict[str, Any]) -> str:
    where = ".".join(str(part) for part in error.get("loc", ()))
    message = str(error.get("msg", "")).removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


async def _send_error(send: Any, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class ContractMiddleware:
    """ASGI middleware that keeps the endpoints to their OpenAPI document.

    - Bodies over ``max_body_bytes`` are refused with 413 before anyone reads them: by
      Content-Length when sent (BentoML 1.4 has no setting for it and reads the whole body before
      it validates), else by counting a chunked body as it arrives.
    - A Content-Type other than JSON gets 415 (BentoML would try its multipart parser: a 500).
    - 4xx bodies are rewritten to the documented shape (:func:`documented_error`); 2xx responses
      pass through untouched.
    - ``/docs.json`` is BentoML's document amended by :func:`contract_document`, built once.
    """

    def __init__(self, app: Any, max_body_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self._docs: bytes | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        if path == DOCS_PATH and scope["method"] == "GET":
            return await self._serve_docs(scope, receive, send)
        if path not in API_PATHS or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        content_type = length = None
        for key, value in scope["headers"]:
            if key == b"content-type":
                content_type = value
            elif key == b"content-length":
                length = value
        if content_type is not None and content_type.split(b";")[0].strip().lower() != b"application/json":
            return await _send_error(
                send, 415, f"send the body as application/json, not {content_type.decode('latin-1')!r}"
            )
        too_large = f"request body over {self.max_body_bytes} bytes"
        if length is not None:
            if not length.isdigit() or int(length) > self.max_body_bytes:
                return await _send_error(send, 413, too_large)
        else:
            receive = await self._bounded(receive)
            if receive is None:
                return await _send_error(send, 413, too_large)
        return await self.app(scope, receive, _errors_as_documented(send))

    async def _bounded(self, receive: Any) -> Any:
        """A chunked body read up to the cap and replayed to the app; None when it is over."""
        messages, size = [], 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > self.max_body_bytes:
                return None
            if not message.get("more_body", False):
                break

        async def replay() -> Any:
            return messages.pop(0) if messages else await receive()

        return replay

    async def _serve_docs(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if self._docs is None:
            start: dict[str, Any] = {}
            chunks: list[bytes] = []

            async def capture(message: dict[str, Any]) -> None:
                if message["type"] == "http.response.start":
                    start.update(message)
                else:
                    chunks.append(message.get("body", b""))

            await self.app(scope, receive, capture)
            if start.get("status") != 200:
                return await _send_error(send, 500, "the OpenAPI document could not be built")
            self._docs = json.dumps(contract_document(json.loads(b"".join(chunks)))).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(self._docs)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": self._docs})


def _errors_as_documented(send: Any) -> Any:
    """``send`` with 4xx JSON bodies rewritten by :func:`documented_error` (others pass through)."""
    held: dict[str, Any] = {}
    chunks: list[bytes] = []

    async def wrapped(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status = message["status"]
            is_json = any(
                k == b"content-type" and v.startswith(b"application/json") for k, v in message["headers"]
            )
            if 400 <= status < 500 and is_json:
                held.update(message)
                return None
            return await send(message)
        if not held or message["type"] != "http.response.body":
            return await send(message)
        chunks.append(message.get("body", b""))
        if message.get("more_body", False):
            return None
        body = documented_error(b"".join(chunks))
        headers = [(k, v) for k, v in held["headers"] if k != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        await send({**held, "headers": headers})
        return await send({"type": "http.response.body", "body": body})

    return wrapped


# threads: the sync APIs (search) run in worker threads, where concurrent queries wait to share
# one encoder pass (serving.engine.QueryCombiner); recommend and similar run on the event loop.
# The access log is off: every answered request is already logged, with its latency, by the
# engine's request log, and BentoML's log line cost a few % of a cached recommendation's CPU.
def stop_with_server(poll_s: float = 0.5, grace_s: float = 20.0) -> None:
    """Stop this worker when the ``bentoml serve`` process that started it is gone.

    BentoML's workers run in a session of their own, so a SIGKILL of the server (``kill -9`` of its
    process group, an OOM kill, a supervisor's hard stop) left the worker alive on the inherited
    socket, answering for a server that no longer existed and writing to its request log beside the
    next start's worker (tests/serving/test_fault_bento_killed.py: still answering 2 minutes on).
    A thread watches the parent; when it changes the worker stops as on a graceful stop (SIGTERM:
    requests in flight finish, the request log is drained), and exits after ``grace_s`` regardless.
    """
    import signal
    import threading
    import time

    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        log.warning("the server process %d is gone: stopping this worker", parent)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(grace_s)
        os._exit(1)

    threading.Thread(target=watch, name="stop-with-server", daemon=True).start()


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
            log_flush_s=_settings.serving_log_flush_s,
            settings=_settings,
        )
        # Readiness then means every endpoint is fast: encoder loaded, known users precomputed.
        users = self.engine.warm_up()
        log.info(
            "serving %s (%d items, %d user vectors precomputed, histories from %s, indexes %s)",
            stored.tag,
            len(self.engine.item_ids) - 1,
            users,
            self.engine.histories_source,
            self.engine.index_kinds,
        )
        # What is loaded now lives as long as the worker: keep it out of the collector's scans,
        # which otherwise walk every history and cached vector (p99 tails under load).
        gc.collect()
        gc.freeze()
        # Promotions and rollbacks reach this process without a restart (serving/hot_swap.py).
        self.follower = follow_champion(self)
        stop_with_server()

    @bentoml.on_shutdown
    def stop_following(self) -> None:
        """Stop the champion follower's thread (a load in progress finishes first), then write the
        request log's queued lines (a graceful stop loses none)."""
        if getattr(self, "follower", None) is not None:
            self.follower.stop()
        self.engine.log.close()

    # recommend and similar run on the event loop: answering a known user is a cache lookup and a
    # faiss search (well under a millisecond), less than handing the call to a worker thread costs.
    @bentoml.api(input_spec=RecommendRequest)
    async def recommend(
        self,
        user_id: str | None = None,
        recent_items: list[str] | None = None,
        k: int = 10,
        exclude_seen: bool = True,
    ) -> RecommendResponse:
        """Top-k items for a user id or an explicit recent-items history (the body: RecommendRequest)."""
        from serving.engine import ServingError

        try:
            return RecommendResponse(**self.engine.recommend(user_id, recent_items, k, exclude_seen))
        except ServingError as error:
            raise _http_error(error) from error

    @bentoml.api
    async def similar(self, item_id: ItemId, k: K = 10) -> SimilarResponse:
        """Items most similar to an item (404 for an unknown item id)."""
        from serving.engine import ServingError

        try:
            return SimilarResponse(**self.engine.similar(item_id, k))
        except ServingError as error:
            raise _http_error(error) from error

    # Adaptive batching (issue 14): concurrent requests the dispatcher merges are scored in one
    # matrix product. One element per request is the usual body; clients may send several.
    @bentoml.api(batchable=True, max_batch_size=MAX_BATCH, max_latency_ms=1000)
    async def recommend_batch(self, requests: list[RecommendRequest]) -> list[RecommendResponse]:
        """Several /recommend bodies; concurrent requests are merged into one scoring pass."""
        queries = [r.model_dump() for r in requests]
        return [RecommendResponse(**answer) for answer in self.engine.recommend_many(queries)]

    @bentoml.api(batchable=True, max_batch_size=MAX_BATCH, max_latency_ms=1000)
    async def similar_batch(self, queries: list[SimilarQuery]) -> list[SimilarAnswer]:
        """Several /similar bodies, answered in one faiss call per item space; an unknown item gets
        status 404 and its error in its own answer (the others are answered)."""
        from serving.engine import ServingError

        out = []
        for q, answer in zip(
            queries, self.engine.similar_many([q.model_dump() for q in queries]), strict=True
        ):
            if isinstance(answer, ServingError):
                out.append(SimilarAnswer(item_id=q.item_id, status=answer.status, error=str(answer)))
            else:
                out.append(SimilarAnswer(item_id=q.item_id, status=200, result=SimilarResponse(**answer)))
        return out

    @bentoml.api(input_spec=SearchRequest)
    def search(
        self, query: str, k: int = 10, mode: str | None = None, user_id: str | None = None
    ) -> SearchResponse:
        """Items for a free-text query: hybrid BM25 + dense with the query's intent by default
        (the body: SearchRequest)."""
        from serving.engine import ServingError

        try:
            return SearchResponse(**self.engine.search(query, k, mode, user_id))
        except ServingError as error:
            raise _http_error(error) from error

    # BentoML's dispatcher answers 503 to requests it expects to miss max_latency_ms; hybrid search
    # with intent costs ~20 ms a query on a loaded 2-core machine, so 200 ms shed merged batches.
    @bentoml.api(batchable=True, max_batch_size=MAX_BATCH, max_latency_ms=2000)
    def search_batch(self, queries: list[SearchQuery]) -> list[SearchResponse]:
        """Several searches; concurrent requests are merged into one encoder batch."""
        from serving.engine import ServingError

        try:
            # One encoder pass for the whole (merged) batch; k is per query. One engine for both
            # steps: a champion swap between them would pair one version's vectors with another's.
            engine = self.engine
            vectors = engine.encode_queries([q.query for q in queries])
            out = []
            for q, vector in zip(queries, vectors, strict=True):
                out.append(SearchResponse(**engine.search_vector(q.query, vector, q.k, q.mode)))
        except ServingError as error:
            raise _http_error(error) from error
        return out

    # A thread of its own (sync): the generator may write for up to SHOPFLOW_ASK_TIME_BUDGET_S.
    @bentoml.api(input_spec=AskRequest)
    def ask(self, question: str, history: list[Any] | None = None) -> AskResponse:
        """The shopping assistant: an answer from the catalog that cites item ids, or 'no matching
        product' (the body: AskRequest)."""
        from serving.engine import ServingError

        turns = [t.model_dump() if isinstance(t, BaseModel) else dict(t) for t in history or []]
        try:
            return AskResponse(**self.engine.ask(question, turns, _settings))
        except ServingError as error:
            raise _http_error(error) from error

    @bentoml.api(input_spec=BundleRequest)
    def bundle(
        self,
        item_id: str | None = None,
        user_id: str | None = None,
        title: str | None = None,
        category: str | None = None,
        brand: str | None = None,
        price: float | None = None,
        size: int = 3,
    ) -> BundleResponse:
        """2-4 complementary items around a catalog item, a user's latest item or a new item's
        text, with a total price, a name and a one-sentence description (the body: BundleRequest)."""
        from serving.engine import ServingError

        try:
            return BundleResponse(**self.engine.bundle(item_id, user_id, title, category, brand, price, size))
        except ServingError as error:
            raise _http_error(error) from error


# The decorator returns a bentoml.Service (its type hints say the class).
# Outermost first: a request without credentials is refused before its body is looked at.
Recommender.add_asgi_middleware(BearerTokenMiddleware)  # type: ignore[attr-defined]
Recommender.add_asgi_middleware(ContractMiddleware)  # type: ignore[attr-defined]
Recommender.add_asgi_middleware(VersionMiddleware)  # type: ignore[attr-defined]
