"""What the Bento serves, without BentoML: a loaded champion with its retrieval indexes and log.

:class:`ServingModel` wraps a registered model version (``<version>/model`` is what
``ml.modeling.model.save`` wrote) and answers recommend / similar / search in plain Python, so the logic is
tested in-process and the BentoML service (``serving/service.py``) is only IO and status codes.

Retrieval is exact maximum inner product through faiss (``IndexFlatIP``): over the model's item
table for recommendations (the score the model was trained to rank by), and over L2-normalised
vectors (cosine) for similar items and dense text search; ``/search`` fuses that with BM25 and the
query's intent (``ml.retrieval``, built here at load from the version's item texts). Flat indexes
are exact and, at catalog sizes of 10^4-10^5 items, answer in well under a millisecond; an IVF/HNSW
index is a drop-in swap past that.

User histories: a user id is looked up in ``histories.parquet`` (columns user_id, item_id,
position) beside ``model/`` in the version folder (see :func:`write_histories`), else in the
training run's dataset snapshot named by the version's lineage (``<work_dir>/runs/<run_id>/dataset``).
Without either, only explicit ``recent_items`` histories are personalised; unknown users get the
cold-start answer.
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from ml.core.artifacts import HISTORIES_FILE, METADATA_FILE, read_histories, run_dir
from ml.core.pii import scrub, user_hash
from ml.core.settings import Settings
from ml.modeling.model import load
from ml.retrieval.facts import CatalogFacts
from ml.retrieval.hybrid import DEFAULT_MODE, MODES, PERSONAL_MODE, HybridSearcher

LOG_DIR_NAME = "serving_logs"


class ServingError(Exception):
    """A request the service cannot answer, with the HTTP status it maps to."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def title_of(text: str) -> str:
    """The title part of an item text (``title | brand: ... | category: ...``)."""
    return text.split(" | ", 1)[0].strip()


def _find_histories(version_dir: Path, work_dir: Path | None) -> tuple[dict[str, list[str]], str]:
    """User histories for the version and where they came from ('none' when there are none)."""
    for candidate in (version_dir / HISTORIES_FILE, version_dir / "model" / HISTORIES_FILE):
        if candidate.exists():
            return read_histories(candidate), str(candidate)
    meta_file = version_dir / METADATA_FILE
    if work_dir is not None and meta_file.exists():
        run_id = json.loads(meta_file.read_text()).get("lineage", {}).get("run_id")
        if run_id:
            snapshot = run_dir(run_id, Settings(work_dir=work_dir)) / "dataset" / "examples.parquet"
            if snapshot.exists():
                return read_histories(snapshot), str(snapshot)
    return {}, "none"


class _LRU:
    """A small thread-safe LRU map (hot users' vectors); BentoML runs sync APIs in threads."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._data: OrderedDict[Any, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: Any) -> np.ndarray | None:
        with self._lock:
            value = self._data.get(key)
            if value is None:
                self.misses += 1
                return None
            self._data.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key: Any, value: np.ndarray) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.size:
                self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)


class RequestLog:
    """Requests and responses as JSON lines, one file per UTC day, for the monitoring ingest.

    The day's file stays open (reopened when the day changes) and each line is flushed as it is
    written: opening the file per request cost more than the rest of a cached recommendation.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._lock = threading.Lock()
        self._path: Path | None = None
        self._file: Any = None

    def path_for(self, when: datetime) -> Path:
        return self.folder / f"requests-{when:%Y-%m-%d}.jsonl"

    def write(self, record: dict[str, Any]) -> None:
        now = datetime.now(UTC)
        line = json.dumps({"timestamp": now.isoformat(timespec="milliseconds"), **record}, default=str)
        path = self.path_for(now)
        with self._lock:
            if path != self._path or self._file is None:
                self.close()
                self.folder.mkdir(parents=True, exist_ok=True)
                self._file = path.open("a")
                self._path = path
            self._file.write(line + "\n")
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class _Slot:
    __slots__ = ("done", "error", "text", "vector")

    def __init__(self, text: str) -> None:
        self.text = text
        self.vector: np.ndarray | None = None
        self.error: BaseException | None = None
        self.done = False


class QueryCombiner:
    """Concurrent single-query encodings merged into one encoder pass (no added wait).

    A caller queues its text and waits for the encoder; whoever holds it encodes every queued
    text (up to ``max_batch``) in one batch and hands each caller its vector. An idle server
    encodes a lone query at once; a busy one batches what arrived during the previous pass, which
    is 3-4x cheaper per query than one pass each on a CPU.
    """

    def __init__(self, encode: Any, max_batch: int = 64) -> None:
        self.encode = encode
        self.max_batch = max_batch
        self._queue: list[_Slot] = []
        self._queue_lock = threading.Lock()
        self._encoder = threading.Lock()
        self.passes = 0
        self.encoded = 0

    def __call__(self, text: str) -> np.ndarray:
        slot = _Slot(text)
        with self._queue_lock:
            self._queue.append(slot)
        while True:
            with self._encoder:
                if not slot.done:
                    with self._queue_lock:
                        batch = self._queue[: self.max_batch]
                        del self._queue[: self.max_batch]
                    if batch:
                        self._run(batch)
            if slot.done:
                break
        if slot.error is not None:
            raise slot.error
        assert slot.vector is not None
        return slot.vector

    def _run(self, batch: list[_Slot]) -> None:
        try:
            vectors = self.encode([s.text for s in batch])
        except BaseException as error:  # every waiter sees the failure, not just this caller
            for s in batch:
                s.error, s.done = error, True
            return
        self.passes += 1
        self.encoded += len(batch)
        for s, vector in zip(batch, vectors, strict=True):
            s.vector, s.done = vector, True


@dataclass(frozen=True)
class Hit:
    item_id: str
    title: str
    score: float
    reason: str | None = None


def _normalized(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return np.ascontiguousarray(matrix / np.maximum(norms, 1e-12), dtype=np.float32)


def _flat_index(matrix: np.ndarray) -> Any:
    import faiss

    index = faiss.IndexFlatIP(matrix.shape[1])
    index.add(np.ascontiguousarray(matrix, dtype=np.float32))
    return index


def resolve_mode(mode: str | None, user_id: str | None) -> str:
    """The search method: the one asked, else hybrid with intent (personal when a user is given)."""
    if mode is None:
        return PERSONAL_MODE if user_id is not None else DEFAULT_MODE
    if mode not in MODES:
        raise ServingError(400, f"unknown search mode {mode!r}: use one of {', '.join(MODES)}")
    return mode


class ServingModel:
    """A registered model version ready to answer requests.

    Args:
        version_dir: the registered version's folder (holds ``model/``).
        tag: the version's tag, written in every log line.
        log_dir: where the request log goes (``<work_dir>/serving_logs``).
        work_dir: ShopFlow work dir, to find the training snapshot's user histories.
        cache_size: hot users whose vectors are kept (LRU).
    """

    def __init__(
        self,
        version_dir: Path | str,
        tag: str,
        log_dir: Path | str,
        work_dir: Path | str | None = None,
        cache_size: int = 50_000,
    ) -> None:
        import torch

        self.version_dir = Path(version_dir)
        self.tag = tag
        self.model = load(self.version_dir / "model")
        self.log = RequestLog(Path(log_dir))
        self.user_cache = _LRU(cache_size)
        model = self.model
        self.item_ids = list(model.item_ids)
        self.titles = [title_of(t) for t in model.item_texts]
        # Precomputed once: the item table the user vectors are scored against, its cosine copy
        # (similar items, reasons), and the normalised text space (cold items, search).
        self.table = model.cached_table().cpu().numpy().astype(np.float32)
        self.table_index = _flat_index(self.table)
        self.unit_table = _normalized(self.table)
        self.unit_table_index = _flat_index(self.unit_table)
        self.warm = model.warm.cpu().numpy() > 0
        self.unit_text: np.ndarray | None = None
        self.text_index: Any = None
        self.retriever: HybridSearcher | None = None
        if model.config.use_text:
            self.unit_text = _normalized(model.text_embeddings.cpu().numpy())
            self.text_index = _flat_index(self.unit_text)
            # Hybrid search reads the same catalog snapshot: BM25 over the item texts, brand,
            # category and price band parsed back from them (the version keeps no other item table).
            searchable = np.ones(len(self.item_ids), dtype=bool)
            searchable[0] = False  # the padding row
            self.retriever = HybridSearcher(
                CatalogFacts.from_texts(self.item_ids, model.item_texts),
                model.item_texts,
                self.unit_text,
                searchable,
            )
        self.histories, self.histories_source = _find_histories(
            self.version_dir, Path(work_dir) if work_dir else None
        )
        self.popular = self._popularity()
        # Torch modules are not re-entrant across threads: one lock per module, so a user-vector
        # pass never waits for a text-encoder pass.
        self._sequence_lock = threading.Lock()
        self._text_lock = threading.Lock()
        self.query_combiner = QueryCombiner(self.encode_queries)
        torch.set_grad_enabled(False)

    def warm_up(self, batch_size: int = 512) -> int:
        """Load the text encoder and precompute the known users' vectors; returns how many.

        Known users (up to the cache size) are encoded in batches before the first request, so
        answering one is a lookup and a faiss search in every worker, never a model pass.
        """
        if self.text_index is not None:
            self.encode_queries(["warm up"])
        if self.retriever is not None:
            self.retriever.search("warm up", 1, "bm25")  # the tokenizer's and intent parser's first pass
        if len(self.item_ids) <= 1:
            return 0
        self._user_vector([1])
        import torch

        index = self.model._index
        keys = {
            tuple(h[-self.model.config.max_len :])
            for h in ([index[i] for i in items if i in index] for items in self.histories.values())
            if h
        }
        todo = sorted(keys)[: self.user_cache.size]
        table = self.model.cached_table()
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            with self._sequence_lock, torch.inference_mode():
                vectors = (
                    self.model.user_vectors(self.model.pad_histories(chunk), table).float().cpu().numpy()
                )
            for key, vector in zip(chunk, vectors, strict=True):
                self.user_cache.put(key, vector)
        return len(todo)

    # -- helpers -------------------------------------------------------------------------------
    def _popularity(self) -> list[int]:
        """Item indices by how many known users interacted with them (warm items first)."""
        counts = np.zeros(len(self.item_ids), dtype=np.int64)
        index = self.model._index
        for history in self.histories.values():
            for item in history:
                i = index.get(item)
                if i is not None:
                    counts[i] += 1
        counts = counts + self.warm.astype(np.int64)  # ties broken towards items the model learned
        counts[0] = -1
        order = np.argsort(-counts, kind="stable")
        return [int(i) for i in order if i != 0]

    def _hit(self, i: int, score: float, reason: str | None = None) -> Hit:
        return Hit(self.item_ids[i], self.titles[i], round(float(score), 6), reason)

    def _search(self, index: Any, query: np.ndarray, k: int, exclude: set[int]) -> list[tuple[int, float]]:
        """Top-k (index, score) from a faiss index, skipping padding and excluded items."""
        want = min(k + len(exclude) + 1, index.ntotal)
        scores, ids = index.search(np.ascontiguousarray(query.reshape(1, -1), dtype=np.float32), want)
        out = []
        for i, s in zip(ids[0], scores[0], strict=True):
            if i <= 0 or int(i) in exclude:
                continue
            out.append((int(i), float(s)))
            if len(out) == k:
                break
        return out

    def _user_vector(self, history: list[int]) -> np.ndarray:
        key = tuple(history[-self.model.config.max_len :])
        cached = self.user_cache.get(key)
        if cached is not None:
            return cached
        import torch

        with self._sequence_lock, torch.inference_mode():
            seqs = self.model.pad_histories([list(key)])
            vector = self.model.user_vectors(seqs, self.model.cached_table())[0].float().cpu().numpy()
        self.user_cache.put(key, vector)
        return vector

    def _reasons(self, items: list[int], history: list[int]) -> list[str]:
        """For each item, the history item most similar to it (cosine), in one matrix product."""
        if not history or not items:
            return []
        sims = self.unit_table[history] @ self.unit_table[items].T  # len(history) x len(items)
        best = [history[int(j)] for j in np.argmax(sims, axis=0)]
        return [f"similar to {self.item_ids[b]} ({self.titles[b]}) you interacted with" for b in best]

    # -- endpoints -----------------------------------------------------------------------------
    def recommend(
        self,
        user_id: str | None = None,
        recent_items: Sequence[str] | None = None,
        k: int = 10,
        exclude_seen: bool = True,
    ) -> dict[str, Any]:
        """Top-k items for a known user or an explicit history (oldest first).

        ``recent_items`` wins over ``user_id`` when both are given. A user or history the model
        knows nothing about gets the cold-start answer: the most popular items (and the response
        says so).
        """
        started = time.perf_counter()
        if user_id is None and not recent_items:
            raise ServingError(
                400, "give a user_id or a non-empty recent_items list (item ids, oldest first)"
            )
        if recent_items:
            raw, source = [str(i) for i in recent_items], "recent_items"
        else:
            raw, source = self.histories.get(str(user_id), []), "user_history"
        index = self.model._index
        history = [index[i] for i in raw if i in index]
        unknown = [i for i in raw if i not in index]
        seen = set(history) if exclude_seen else set()
        if history:
            strategy = "personalized"
            found = self._search(self.table_index, self._user_vector(history), k, seen)
            reasons = self._reasons([i for i, _ in found], history)
            hits = [self._hit(i, s, r) for (i, s), r in zip(found, reasons, strict=True)]
        else:
            strategy = "cold_start_popular"
            n = len(self.popular)
            hits = [
                self._hit(i, 1.0 - rank / n, "popular with other shoppers")
                for rank, i in enumerate(self.popular[:k])
            ]
        note = None
        if strategy.startswith("cold_start"):
            note = (
                f"user {user_id!r} is unknown to model {self.tag}: showing popular items"
                if source == "user_history"
                else "none of recent_items is in the catalog: showing popular items"
            )
        response = {
            "model_version": self.tag,
            "strategy": strategy,
            "history_source": source,
            "history_length": len(history),
            "unknown_items": unknown,
            "note": note,
            "items": [h.__dict__ for h in hits],
        }
        self._log("recommend", started, response, user_id=user_id, request={"k": k, "n_recent": len(raw)})
        return response

    def similar(self, item_id: str, k: int = 10) -> dict[str, Any]:
        """The k items closest (cosine) to an item: in the model's item space for warm items,
        in the encoder's text space for cold ones (as :meth:`Recommender.similar_items`)."""
        started = time.perf_counter()
        i = self.model._index.get(str(item_id))
        if i is None or i == 0:
            raise ServingError(
                404,
                f"unknown item_id {item_id!r}: not in the catalog of model {self.tag} "
                f"({len(self.item_ids) - 1} items); use /search to find items by text",
            )
        cold = self.text_index is not None and not self.warm[i]
        if cold:
            assert self.unit_text is not None
            found = self._search(self.text_index, self.unit_text[i], k, {i})
        else:
            found = self._search(self.unit_table_index, self.unit_table[i], k, {i})
        response = {
            "model_version": self.tag,
            "item_id": str(item_id),
            "title": self.titles[i],
            "space": "text" if cold else "model",
            "items": [self._hit(j, s).__dict__ for j, s in found],
        }
        self._log("similar", started, response, request={"item_id": str(item_id), "k": k})
        return response

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Normalised encoder vectors of free-text queries (one batch)."""
        if self.text_index is None:
            raise ServingError(501, f"model {self.tag} has no text encoder (ID-only): search is unavailable")
        with self._text_lock:
            vectors = self.model.text_encoder().encode(list(texts)).numpy()
        return _normalized(vectors)

    def search_vector(
        self,
        query: str,
        vector: np.ndarray | None,
        k: int = 10,
        mode: str | None = None,
        user_id: str | None = None,
    ) -> dict[str, Any]:
        """The answer for one query whose normalised vector is already encoded (logged).

        ``mode`` is one of :data:`ml.retrieval.hybrid.MODES`; None means ``hybrid_intent``, or
        ``hybrid_intent_personal`` when a ``user_id`` is given. ``vector`` may be None for ``bm25``.
        """
        started = time.perf_counter()
        if self.retriever is None:
            raise ServingError(501, f"model {self.tag} has no text encoder (ID-only): search is unavailable")
        mode = resolve_mode(mode, user_id)
        user_scores, note = None, None
        if mode == PERSONAL_MODE:
            index = self.model._index
            history = [index[i] for i in self.histories.get(str(user_id), []) if i in index]
            if history:
                user_scores = self.table @ self._user_vector(history)
            else:
                note = f"user {user_id!r} has no history with model {self.tag}: results are not personalised"
        result = self.retriever.search(query, k, mode, query_vector=vector, user_scores=user_scores)
        facts = self.retriever.facts
        items = []
        for j, score in zip(result.indices, result.scores, strict=True):
            high = facts.price_high[j]
            items.append(
                {
                    **self._hit(j, score).__dict__,
                    "brand": facts.brands[j],
                    "category": facts.categories[j],
                    "price_band": facts.price_bands[j],
                    "price_min": None if np.isnan(facts.price_low[j]) else float(facts.price_low[j]),
                    "price_max": None if not np.isfinite(high) else float(high),
                }
            )
        intent = result.intent.public()
        response = {
            "model_version": self.tag,
            "query": query,
            "mode": mode,
            "personalized": user_scores is not None,
            "intent": intent,
            "note": result.note or note,
            "items": items,
        }
        # The log keeps what was searched for, not who: e-mails and phone numbers are scrubbed.
        # The intent goes with it, so monitoring can follow the mix of brands, categories and
        # price limits asked for (query drift).
        logged_intent = {**intent, "terms": scrub(intent["terms"])}
        self._log(
            "search",
            started,
            response,
            user_id=user_id,
            request={"query": scrub(query), "k": k, "mode": mode, "intent": logged_intent},
        )
        return response

    def search_many(
        self, queries: Sequence[str], k: int = 10, mode: str | None = None
    ) -> list[dict[str, Any]]:
        """Text search for several queries at once (one encoder batch)."""
        vectors = self.encode_queries(queries)
        return [self.search_vector(q, v, k, mode) for q, v in zip(queries, vectors, strict=True)]

    def search(
        self, query: str, k: int = 10, mode: str | None = None, user_id: str | None = None
    ) -> dict[str, Any]:
        """Items for a free-text query, by ``mode`` (see :meth:`search_vector`; default hybrid
        BM25 + dense with the query's intent).

        Concurrent callers share encoder passes (:class:`QueryCombiner`); ``bm25`` needs none.
        """
        if self.text_index is None:
            raise ServingError(501, f"model {self.tag} has no text encoder (ID-only): search is unavailable")
        vector = None if mode == "bm25" else self.query_combiner(query)
        return self.search_vector(query, vector, k, mode, user_id)

    # -- logging -------------------------------------------------------------------------------
    def _log(
        self,
        endpoint: str,
        started: float,
        response: dict[str, Any],
        user_id: str | None = None,
        request: dict[str, Any] | None = None,
    ) -> None:
        items = response.get("items", [])
        self.log.write(
            {
                "endpoint": endpoint,
                "model_version": self.tag,
                "user_hash": user_hash(user_id),
                "request": request or {},
                "strategy": response.get("strategy"),
                "items": [h["item_id"] for h in items],
                "scores": [h["score"] for h in items],
                "latency_ms": round((time.perf_counter() - started) * 1000.0, 3),
            }
        )
