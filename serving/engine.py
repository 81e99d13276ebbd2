"""What the Bento serves, without BentoML: a loaded champion with its retrieval indexes and log.

:class:`ServingModel` wraps a registered model version (``<version>/model`` is what
``ml.modeling.model.save`` wrote) and answers recommend / similar / search in plain Python, so the logic is
tested in-process and the BentoML service (``serving/service.py``) is only IO and status codes.

Retrieval is exact maximum inner product through faiss (``IndexFlatIP``): over the model's item
table for recommendations (the score the model was trained to rank by), and over L2-normalised
vectors (cosine) for similar items and dense text search; ``/search`` fuses that with BM25 and the
query's intent (``ml.retrieval``, built here at load from the version's item texts). Flat indexes
are exact and, at the real catalog's 10^4 items, answer in well under a millisecond; from
``settings.serving_ann_min_items`` items on, the three item indexes are HNSW graphs built at Bento
build time (``serving/index.py``; bench/ann.py measures both up to 10^6 items).

User histories: a user id is looked up in ``histories.parquet`` (columns user_id, item_id,
position) beside ``model/`` in the version folder (see :func:`write_histories`), else in the
training run's dataset snapshot named by the version's lineage (``<work_dir>/runs/<run_id>/dataset``).
Without either, only explicit ``recent_items`` histories are personalised; unknown users get the
cold-start answer.
"""

from __future__ import annotations

import atexit
import json
import math
import os
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ml.core.artifacts import HISTORIES_FILE, METADATA_FILE, read_histories, run_dir
from ml.core.pii import scrub, user_hash
from ml.core.settings import Settings, get_settings
from ml.modeling.model import load
from ml.retrieval.facts import CatalogFacts
from ml.retrieval.hybrid import DEFAULT_MODE, MODES, PERSONAL_MODE, HybridSearcher
from serving.index import catalog_index, catalog_matrices, read_user_vectors

if TYPE_CHECKING:
    # The assistant pulls in the generator's stack (transformers' causal-LM classes, peft): imported
    # on the first /ask, not at every worker's start.
    from ml.generation.live import LiveCopy
    from ml.retrieval.assistant import Assistant

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


LOG_FLUSH_S = 0.2
"""A sensible interval for the request log's writer thread (``RequestLog(flush_s=...)``): a SIGKILL
loses at most the lines of this interval (issue 14 asks for <= 1 s)."""


class RequestLog:
    """Requests and responses as JSON lines, one file per UTC day, for the monitoring ingest.

    With ``flush_s`` 0 (the default) each line is written by the request that logs it, before it
    returns (what the in-process callers and the monitoring tests read at once). With ``flush_s``
    > 0 the log is off the request path: :meth:`write` only stamps the record and appends it to a
    queue (no JSON, no lock held against the disk, no system call); a writer thread wakes every
    ``flush_s`` seconds, serialises what was queued and appends it to the day's file with one
    ``write(2)`` of whole lines on an ``O_APPEND`` descriptor. So:

    - a graceful stop (:meth:`close`: the service's shutdown hook, or interpreter exit) drains the
      queue: no line is lost;
    - a SIGKILL loses at most the lines queued in the last ``flush_s``, and never leaves a broken
      line (a batch reaches the file in one system call, or not at all);
    - writing one line per request, as before, cost a ``write(2)`` and a flush on every request.
    """

    def __init__(self, folder: Path, flush_s: float = 0.0) -> None:
        self.folder = folder
        self.flush_s = flush_s
        self._queue: deque[tuple[datetime, dict[str, Any]]] = deque()
        self._lock = threading.Lock()  # one writer at a time (the thread, flush(), close())
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._path: Path | None = None
        self._fd: int | None = None
        self._closed = False
        self.lines_written = 0

    def path_for(self, when: datetime) -> Path:
        return self.folder / f"requests-{when:%Y-%m-%d}.jsonl"

    def write(self, record: dict[str, Any]) -> None:
        """Queue one record (the caller must not change it afterwards); written within ``flush_s``."""
        self._queue.append((datetime.now(UTC), record))
        if self.flush_s <= 0 or self._closed:
            self.flush()  # synchronous, or after close (a late request): never left in the queue
        elif self._thread is None:
            self._start()

    def _start(self) -> None:
        with self._lock:
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._run, name="request-log", daemon=True)
                self._thread.start()
                atexit.register(self.close)  # a graceful interpreter exit drains the queue

    def _run(self) -> None:
        while not self._closed:
            self._wake.wait(self.flush_s)
            self.flush()

    def flush(self) -> int:
        """Write every queued record now; returns how many."""
        with self._lock:
            batch: dict[Path, list[str]] = {}
            n = 0
            while self._queue:
                when, record = self._queue.popleft()
                stamped = {"timestamp": when.isoformat(timespec="milliseconds"), **record}
                line = json.dumps(stamped, default=str)
                batch.setdefault(self.path_for(when), []).append(line)
                n += 1
            for path, lines in batch.items():
                self._append(path, ("\n".join(lines) + "\n").encode())
            self.lines_written += n
            return n

    def _append(self, path: Path, data: bytes) -> None:
        if path != self._path or self._fd is None:
            self._close_fd()
            self.folder.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            self._path = path
        view = memoryview(data)
        while view:  # one call for a regular file; the loop only matters on a full disk
            written = os.write(self._fd, view)
            view = view[written:]

    def _close_fd(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def close(self) -> None:
        """Stop the writer thread after writing everything queued (idempotent)."""
        self._closed = True
        self._wake.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(max(5.0, self.flush_s * 10))
        self.flush()
        with self._lock:
            self._close_fd()


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


def resolve_mode(mode: str | None, user_id: str | None) -> str:
    """The search method: the one asked, else hybrid with intent (personal when a user is given)."""
    if mode is None:
        return PERSONAL_MODE if user_id is not None else DEFAULT_MODE
    if mode not in MODES:
        raise ServingError(400, f"unknown search mode {mode!r}: use one of {', '.join(MODES)}")
    return mode


_generators: dict[str, Any] = {}
_generator_lock = threading.RLock()
GENERATOR_POINTER_POLL_S = 10.0
"""How often request-path copy reads the generator champion pointer (a file) again."""


def champion_generator(settings: Settings, tag: str) -> Any:
    """The registered generator ``tag`` (base + its tuned weights), loaded once per process and
    shared by /ask and request-path copy; an earlier champion is let go."""
    from ml.registry import load_served_generator

    key = f"champion:{tag}"
    with _generator_lock:
        if key not in _generators:
            for old in [k for k in _generators if k.startswith("champion:")]:
                del _generators[old]
            _generators[key] = load_served_generator(settings, tag=tag)
        return _generators[key]


def assistant_generator(settings: Settings) -> tuple[Any, str | None]:
    """The generator /ask writes with, loaded once per process on first use, or None and why.

    The one place that picks it (``settings.ask_generator``): for the packaged SmolLM2, the
    generator champion of ``finetune_generator`` when one won its gate (``ml.registry``), else the
    base. A GGUF generator is used
    only once its converted checkpoint is in ``settings.generator_cache_dir``: converting costs
    ~50 s of CPU and ~0.5 GB, not something a serving process should start on a request. Until
    then each call looks again (a file test), so a checkpoint converted later is picked up.
    """
    name = settings.ask_generator
    if not name:
        return None, "the assistant's generator is off (SHOPFLOW_ASK_GENERATOR is empty)"
    from ml.generation.load import GeneratorNotFound, cache_entry, load_generator, resolve

    with _generator_lock:
        if name in _generators:
            return _generators[name], None
        try:
            target = resolve(name)
        except GeneratorNotFound as error:
            return None, str(error)
        cache = settings.generator_cache_dir
        if isinstance(target, Path) and target.suffix == ".gguf" and not cache_entry(cache, target).is_dir():
            return None, (
                f"the generator {name!r} is not converted yet in {cache} (the Bento does not convert it; "
                "see the README, 'Search and the assistant')"
            )
        from ml.generation.load import DEFAULT_GENERATOR
        from ml.registry import generator_champion

        tag = generator_champion(settings) if name == DEFAULT_GENERATOR else None
        if tag:
            # The finetune_generator DAG's champion: the same base with its gated tuned weights.
            # Read once per process, like the base: a later promotion reaches a restarted worker.
            _generators[name] = champion_generator(settings, tag)
        else:
            _generators[name] = load_generator(name, cache_dir=cache)
        return _generators[name], None


def copy_writer(settings: Settings, brands: Any = None) -> LiveCopy | None:
    """Request-path copy (``ml.generation.live``) written by the generator champion, or None when
    ``settings.serve_copy_budget_s`` is 0. Without a champion it writes nothing: the base has not
    passed the generator gate (``raw_pass_rate``), so its copy is not served unasked."""
    if settings.serve_copy_budget_s <= 0:
        return None
    from ml.generation.live import LiveCopy
    from ml.registry import generator_champion

    read: list[Any] = [-math.inf, None]  # (when, tag): the pointer is a file, read every few seconds

    def champion() -> str | None:
        now = time.monotonic()
        if now - read[0] >= GENERATOR_POINTER_POLL_S:
            read[:] = [now, generator_champion(settings)]
        return read[1]

    return LiveCopy(
        champion,
        lambda tag: champion_generator(settings, tag),
        budget_s=settings.serve_copy_budget_s,
        max_pending=settings.serve_copy_max_pending,
        brands=brands,
        phone_regions=settings.pii_phone_regions,
    )


@dataclass
class _Ask:
    """One /recommend request once resolved (:meth:`ServingModel.recommend_many`)."""

    user_id: str | None
    k: int
    raw: list[str]
    source: str
    history: list[int]
    seen: set[int]
    found: list[tuple[int, float]] = field(default_factory=list)


class ServingModel:
    """A registered model version ready to answer requests.

    Args:
        version_dir: the registered version's folder (holds ``model/``).
        tag: the version's tag, written in every log line.
        log_dir: where the request log goes (``<work_dir>/serving_logs``).
        work_dir: ShopFlow work dir, to find the training snapshot's user histories.
        cache_size: hot users whose vectors are kept (LRU).
        log_flush_s: 0: each request writes its log line itself; > 0: lines are queued and written
            by a thread every this many seconds (:class:`RequestLog`).
        ann_min_items: catalogs this large are searched through the HNSW indexes built into the
            version (``serving.index``); default ``settings.serving_ann_min_items``.
        settings: given (the Bento), copy the package lacks is written on the request path by
            the generator champion within ``settings.serve_copy_budget_s`` (:func:`copy_writer`).
    """

    def __init__(
        self,
        version_dir: Path | str,
        tag: str,
        log_dir: Path | str,
        work_dir: Path | str | None = None,
        cache_size: int = 50_000,
        log_flush_s: float = 0.0,
        ann_min_items: int | None = None,
        settings: Settings | None = None,
    ) -> None:
        import torch

        self.version_dir = Path(version_dir)
        self.tag = tag
        self.model = load(self.version_dir / "model")
        self.log = RequestLog(Path(log_dir), flush_s=log_flush_s)
        self.user_cache = _LRU(cache_size)
        model = self.model
        self.item_ids = list(model.item_ids)
        self.titles = [title_of(t) for t in model.item_texts]
        # Precomputed once: the item table the user vectors are scored against, its cosine copy
        # (similar items, reasons), and the normalised text space (cold items, search).
        matrices = catalog_matrices(model)
        self.table = matrices["table"]
        self.unit_table = matrices["unit_table"]
        # Exact below the ANN threshold; above it the HNSW indexes the Bento build wrote (never
        # built here: that would cost start-up minutes at 10^6 items). serving/index.py.
        if ann_min_items is None:
            ann_min_items = get_settings().serving_ann_min_items
        self.index_kinds: dict[str, str] = {}
        indexes = {}
        for name, matrix in matrices.items():
            indexes[name], self.index_kinds[name] = catalog_index(
                self.version_dir, name, matrix, ann_min_items
            )
        self.table_index = indexes["table"]
        self.unit_table_index = indexes["unit_table"]
        self.warm = model.warm.cpu().numpy() > 0
        self.unit_text: np.ndarray | None = None
        self.text_index: Any = None
        self.retriever: HybridSearcher | None = None
        if model.config.use_text:
            self.unit_text = matrices["text"]
            self.text_index = indexes["text"]
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
        # Bundles and explanations packaged with the version (ml.generation.bundles), if any.
        self._load_bundles()
        # Copy the package lacks, written on the request path by the generator champion (the
        # Bento passes its settings; None: packaged copy and templates only).
        self.live_copy: LiveCopy | None = None
        if settings is not None:
            from ml.generation.grounding import BrandIndex

            brands = BrandIndex(f.brand for f in self.bundle_catalog.facts if f.brand)
            self.live_copy = copy_writer(settings, brands)
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
        # Vectors the Bento build precomputed (serving/index.py) are read, not computed: start-up
        # then costs a file read instead of a sequence-model pass per known user.
        stored = read_user_vectors(self.version_dir, len(self.item_ids))
        for key in todo:
            if key in stored:
                self.user_cache.put(key, stored[key])
        warmed = len(todo)
        todo = [key for key in todo if key not in stored]
        table = self.model.cached_table()
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            with self._sequence_lock, torch.inference_mode():
                vectors = (
                    self.model.user_vectors(self.model.pad_histories(chunk), table).float().cpu().numpy()
                )
            for key, vector in zip(chunk, vectors, strict=True):
                self.user_cache.put(key, vector)
        return warmed

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
        return self._search_many(index, query.reshape(1, -1), [k], [exclude])[0]

    def _search_many(
        self, index: Any, queries: np.ndarray, ks: Sequence[int], excludes: Sequence[set[int]]
    ) -> list[list[tuple[int, float]]]:
        """:meth:`_search` for several queries in one faiss call (one matrix product when exact)."""
        want = min(max(k + len(ex) for k, ex in zip(ks, excludes, strict=True)) + 1, index.ntotal)
        scores, ids = index.search(np.ascontiguousarray(queries, dtype=np.float32), want)
        answers = []
        for row_ids, row_scores, k, exclude in zip(ids, scores, ks, excludes, strict=True):
            out: list[tuple[int, float]] = []
            for i, s in zip(row_ids, row_scores, strict=True):
                if i <= 0 or int(i) in exclude:
                    continue
                out.append((int(i), float(s)))
                if len(out) == k:
                    break
            answers.append(out)
        return answers

    def _user_vector(self, history: list[int]) -> np.ndarray:
        vector: np.ndarray = self._user_vectors([history])[0]
        return vector

    def _user_vectors(self, histories: Sequence[list[int]]) -> np.ndarray:
        """User vectors (one row per history): cached ones looked up, the rest in one padded pass."""
        max_len = self.model.config.max_len
        keys = [tuple(h[-max_len:]) for h in histories]
        found = [self.user_cache.get(key) for key in keys]
        missing = sorted({key for key, vector in zip(keys, found, strict=True) if vector is None})
        if missing:
            import torch

            with self._sequence_lock, torch.inference_mode():
                seqs = self.model.pad_histories([list(key) for key in missing])
                vectors = self.model.user_vectors(seqs, self.model.cached_table()).float().cpu().numpy()
            computed = dict(zip(missing, vectors, strict=True))
            for key, vector in computed.items():
                self.user_cache.put(key, vector)
            return np.stack([computed[k] if v is None else v for k, v in zip(keys, found, strict=True)])
        return np.stack([v for v in found if v is not None])

    def _reasons(self, items: list[int], history: list[int]) -> list[tuple[str, Any, tuple[str, ...]]]:
        """For each item, the history item most similar to it (cosine), in one matrix product:
        (reason, copy status, failed rules) - see :meth:`_explain`."""
        if not history or not items:
            return []
        sims = self.unit_table[history] @ self.unit_table[items].T  # len(history) x len(items)
        best = [history[int(j)] for j in np.argmax(sims, axis=0)]
        reasons = [self._explain(i, b) for i, b in zip(items, best, strict=True)]
        live = self.live_copy
        misses = [n for n, r in enumerate(reasons) if r[1] == "template"]
        if live is None or not misses or live.generator_tag() is None:
            return reasons
        from ml.generation.bundles import explanation_facts
        from ml.generation.live import CopyRequest

        facts = self.bundle_catalog.facts
        requests = [
            CopyRequest(
                (self.tag, "explanation", items[n], best[n]),
                "explanation",
                explanation_facts(facts[items[n]], facts[best[n]]),
            )
            for n in misses
        ]
        # /recommend runs on the event loop: a miss never waits there. It is written in the
        # background, and the user's next request gets the generated sentence.
        written = live.write(requests, wait_s=0.0)
        for n, request in zip(misses, requests, strict=True):
            if request.key in written:
                text, status, rules = written[request.key]
                reasons[n] = (f"{text} (you interacted with {self.item_ids[best[n]]})", status, rules)
        return reasons

    # -- bundles and explanations (issue 12) ----------------------------------------------------
    def _load_bundles(self) -> None:
        """The packaged catalog (exact prices, categories), bundles and explanation cache.

        A version packaged before bundles existed has none: the catalog is then parsed back from
        the item texts (no prices, so /bundle cannot price a bundle and answers 404), and every
        explanation is the template.
        """
        import pandas as pd

        from ml.generation import bundles as b
        from ml.retrieval.facts import parse_item_text

        folder = self.version_dir / b.BUNDLES_DIR
        self.bundles_source = str(folder) if (folder / b.CATALOG_FILE).exists() else "none"
        if self.bundles_source != "none":
            frame = pd.read_parquet(folder / b.CATALOG_FILE).drop_duplicates("item_id")
            frame = frame.set_index("item_id").reindex(self.item_ids).reset_index(names="item_id")
            frame["title"] = frame["title"].fillna(pd.Series(self.titles))
        else:
            parsed = [parse_item_text(t) for t in self.model.item_texts]
            frame = pd.DataFrame(
                {
                    "item_id": self.item_ids,
                    "title": [p[0] for p in parsed],
                    "brand": [p[1] for p in parsed],
                    "categories": [p[2] for p in parsed],
                    "price": None,
                }
            )
        frame.loc[0, ["title", "price"]] = ["", None]  # the padding row: never in a bundle
        self.bundle_catalog = b.BundleCatalog(frame)
        self.packaged_bundles: dict[str, Any] = {}
        self.explanations: dict[tuple[str, str], str] = {}
        # (status, failed rules) of each packaged explanation: the request log counts them.
        self.explanation_copy: dict[tuple[str, str], tuple[Any, tuple[str, ...]]] = {}
        self._reason_cache: dict[tuple[int, int], tuple[str, Any, tuple[str, ...]]] = {}
        self._reason_lock = threading.Lock()
        if (folder / b.BUNDLES_FILE).exists():
            self.packaged_bundles = b.read_bundles(pd.read_parquet(folder / b.BUNDLES_FILE))
        if (folder / b.EXPLANATIONS_FILE).exists():
            cached = pd.read_parquet(folder / b.EXPLANATIONS_FILE)
            self.explanations = {
                (str(i), str(h)): str(t)
                for i, h, t in zip(cached["item_id"], cached["history_item_id"], cached["text"], strict=True)
            }
            statuses = cached["copy"] if "copy" in cached else ["generated"] * len(cached)
            failed = cached["failures"] if "failures" in cached else [()] * len(cached)
            self.explanation_copy = {
                (str(i), str(h)): (str(c), tuple(str(r) for r in f))
                for i, h, c, f in zip(
                    cached["item_id"], cached["history_item_id"], statuses, failed, strict=True
                )
            }

    def _explain(self, item: int, history: int) -> tuple[str, Any, tuple[str, ...]]:
        """Why ``item`` follows ``history``: the packaged sentence for the pair (generated and
        checked at packaging) or the template from the facts they share.

        The template folds and compares the two items' texts (268 us a pair, measured at load
        average 15 on the shared 2-core box; k of them per /recommend), so each pair's reason is
        kept in a bounded cache: a known user's repeated request costs dictionary lookups.

        Returns:
            (reason, copy status, rules failed): the status and rules of the packaged text
            (``generated``, or ``fallback`` with the rules its generated text failed, or
            ``template``), ``template`` when the pair was not packaged.
        """
        key = (item, history)
        cached = self._reason_cache.get(key)
        if cached is not None:
            return cached
        from ml.generation.bundles import explanation_facts
        from ml.generation.grounding import template

        pair = (self.item_ids[item], self.item_ids[history])
        text = self.explanations.get(pair)
        status, rules = self.explanation_copy.get(pair, ("template", ()))
        if text is None:
            facts = self.bundle_catalog.facts
            text = template("explanation", explanation_facts(facts[item], facts[history]))
        reason = (f"{text} (you interacted with {pair[1]})", status, rules)
        with self._reason_lock:
            self._reason_cache[key] = reason
            if len(self._reason_cache) > 200_000:  # oldest first out (dicts keep insertion order)
                self._reason_cache.pop(next(iter(self._reason_cache)))
        return reason

    def bundle(
        self,
        item_id: str | None = None,
        user_id: str | None = None,
        title: str | None = None,
        category: str | None = None,
        brand: str | None = None,
        price: float | None = None,
        size: int = 3,
    ) -> dict[str, Any]:
        """A bundle around a catalog item, a known user's latest item, or a new item's text.

        A catalog seed with a packaged bundle of ``size`` items is served from the package (its
        copy generated and checked at packaging); otherwise (another size, a user without one,
        a brand-new item) the bundle is built now from the model's embeddings (the item space;
        the text space for a new item) under the complementarity rule. Copy that is the
        template either way is written by the generator champion within the time budget
        (:meth:`_live_bundle_copy`), else the template is served.
        """
        from ml.generation import bundles as b
        from ml.generation.grounding import ItemFacts

        started = time.perf_counter()
        catalog = self.bundle_catalog
        index = self.model._index
        seed_vector: np.ndarray | None = None
        space = self.unit_table
        if item_id is not None:
            i = index.get(str(item_id))
            if i is None or i == 0:
                raise ServingError(
                    404,
                    f"unknown item_id {item_id!r}: not in the catalog of model {self.tag}; "
                    "send the new item's title (and category) instead",
                )
            if not catalog.priced(i):
                raise ServingError(
                    404,
                    f"item {item_id!r} has no price in the catalog of model {self.tag}: a bundle has a total",
                )
            seed, basis = b.Seed(catalog.facts[i], i), "item"
        elif user_id is not None:
            history = [index[x] for x in self.histories.get(str(user_id), []) if x in index]
            if not history:
                raise ServingError(
                    404, f"user {user_id!r} has no history with model {self.tag}: send an item_id or a title"
                )
            # The latest item of the history that has a packaged bundle, else the latest priced one.
            priced = [h for h in history if catalog.priced(h)]
            if not priced:
                raise ServingError(
                    404, f"user {user_id!r} has no priced item in their history with model {self.tag}"
                )
            i = next((h for h in reversed(priced) if self.item_ids[h] in self.packaged_bundles), priced[-1])
            seed, basis = b.Seed(catalog.facts[i], i), "user"
        elif title is not None:
            if self.unit_text is None:
                raise ServingError(501, f"model {self.tag} has no text encoder (ID-only): send an item_id")
            from ml.core.catalog import item_text

            categories = tuple(c.strip() for c in (category or "").split(">") if c.strip())
            facts = ItemFacts("new", title.strip(), brand, categories, price)
            seed_vector = self.encode_queries([item_text("new", title, brand, category, price)])[0]
            seed, basis, space = b.Seed(facts), "new_item", self.unit_text
        else:
            raise ServingError(400, "give an item_id, a user_id or a new item's title")
        packaged = self.packaged_bundles.get(seed.facts.item_id) if seed.index is not None else None
        if packaged is not None and len(packaged.item_ids) == size:
            found, strategy = packaged, "packaged"
        else:
            made = b.make_bundle(catalog, seed, {}, space, size, seed_vector)
            if made is None:
                raise ServingError(
                    404, f"no bundle for {seed.facts.item_id!r}: fewer than 2 priced, complementary items"
                )
            found, strategy = b.template_copy(catalog, made), "embeddings"
        if found.copy == "template":
            found = self._live_bundle_copy(found)
        rows = [catalog.facts[catalog.index[x]] for x in found.item_ids]
        response = {
            "model_version": self.tag,
            "basis": basis,
            "seed_item_id": seed.facts.item_id if seed.index is not None else None,
            "seed_title": seed.facts.title,
            "strategy": strategy,
            "copy_status": found.copy,
            "name": found.name,
            "description": found.description,
            "total_price": found.total_price,
            "items": [
                {
                    "item_id": f.item_id,
                    "title": f.title,
                    "brand": f.brand,
                    "category": " > ".join(f.categories) if f.categories else None,
                    "price": f.price,
                    "source": source,
                }
                for f, source in zip(rows, found.sources, strict=True)
            ],
        }
        # The bundle keeps its failed rules together: they count once, on its first failed text.
        first_failed = next((n for n, c in enumerate(found.copies) if c == "fallback"), None)
        self._log(
            "bundle",
            started,
            {"strategy": strategy, "items": [{"item_id": x, "score": 1.0} for x in found.item_ids]},
            user_id=user_id,
            request={"basis": basis, "size": size, "item_id": item_id},
            copy=b.copy_counts(
                (c, found.failures if n == first_failed else ()) for n, c in enumerate(found.copies)
            ),
        )
        return response

    def _live_bundle_copy(self, bundle: Any) -> Any:
        """A bundle whose copy is the template (not packaged, or packaged past the batch's budget)
        with the generator champion's name and description, when written within the budget
        (``ml.generation.live``; /bundle runs in a worker thread, so waiting blocks no one else)."""
        live = self.live_copy
        if live is None or live.generator_tag() is None:
            return bundle
        from ml.generation import bundles as b
        from ml.generation.live import CopyRequest

        facts = b.bundle_facts(self.bundle_catalog, bundle)
        key = (self.tag, bundle.seed, bundle.item_ids)
        requests = [
            CopyRequest((*key, "bundle_name"), "bundle_name", facts),
            CopyRequest((*key, "bundle_description"), "bundle_description", facts),
        ]
        written = live.write(requests)
        name = written.get(requests[0].key)
        description = written.get(requests[1].key)
        if name is None and description is None:
            return bundle
        name = name or (bundle.name, "template", ())
        description = description or (bundle.description, "template", ())
        return b.with_copy(bundle, name[:2], description[:2], [*name[2], *description[2]])

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
        query = {"user_id": user_id, "recent_items": recent_items, "k": k, "exclude_seen": exclude_seen}
        return self.recommend_many([query])[0]

    def recommend_many(self, queries: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """:meth:`recommend` for several requests (keys as its arguments) at once: the users whose
        vectors are not cached go through the sequence model in one padded pass, and every user is
        scored against the catalog in one faiss call. Each request still gets its own log line."""
        from ml.generation import bundles as b

        started = time.perf_counter()
        index = self.model._index
        asks = [self._resolve(q) for q in queries]
        personal = [a for a in asks if a.history]
        if personal:
            vectors = self._user_vectors([a.history for a in personal])
            found = self._search_many(
                self.table_index, vectors, [a.k for a in personal], [a.seen for a in personal]
            )
            for a, hits in zip(personal, found, strict=True):
                a.found = hits
        responses = []
        for a in asks:
            note = None
            if a.history:
                strategy = "personalized"
                reasons = self._reasons([i for i, _ in a.found], a.history)
                items = [self._hit(i, s, r[0]) for (i, s), r in zip(a.found, reasons, strict=True)]
                statuses: list[str | None] = [status for _, status, _ in reasons]
                copy = b.copy_counts((status, rules) for _, status, rules in reasons)
            else:
                strategy = "cold_start_popular"
                copy = b.copy_counts(())  # a fixed phrase, no copy
                total = len(self.popular)
                items = [
                    self._hit(i, 1.0 - rank / total, "popular with other shoppers")
                    for rank, i in enumerate(self.popular[: a.k])
                ]
                statuses = [None] * len(items)
                note = (
                    f"user {a.user_id!r} is unknown to model {self.tag}: showing popular items"
                    if a.source == "user_history"
                    else "none of recent_items is in the catalog: showing popular items"
                )
            response = {
                "model_version": self.tag,
                "strategy": strategy,
                "history_source": a.source,
                "history_length": len(a.history),
                "unknown_items": [i for i in a.raw if i not in index],
                "note": note,
                "items": [{**h.__dict__, "reason_copy": c} for h, c in zip(items, statuses, strict=True)],
            }
            self._log(
                "recommend",
                started,
                response,
                user_id=a.user_id,
                request={"k": a.k, "n_recent": len(a.raw)},
                copy=copy,
            )
            responses.append(response)
        return responses

    def _resolve(self, query: Mapping[str, Any]) -> _Ask:
        """One recommend request's history (item indices), where it came from and what to exclude."""
        user_id, recent = query.get("user_id"), query.get("recent_items")
        if user_id is None and not recent:
            raise ServingError(
                400, "give a user_id or a non-empty recent_items list (item ids, oldest first)"
            )
        if recent:
            raw, source = [str(i) for i in recent], "recent_items"
        else:
            raw, source = self.histories.get(str(user_id), []), "user_history"
        index = self.model._index
        history = [index[i] for i in raw if i in index]
        seen = set(history) if query.get("exclude_seen", True) else set()
        return _Ask(user_id, int(query.get("k", 10)), raw, source, history, seen)

    def similar(self, item_id: str, k: int = 10) -> dict[str, Any]:
        """The k items closest (cosine) to an item: in the model's item space for warm items,
        in the encoder's text space for cold ones (as :meth:`Recommender.similar_items`)."""
        answer = self.similar_many([{"item_id": item_id, "k": k}])[0]
        if isinstance(answer, ServingError):
            raise answer
        return answer

    def similar_many(self, queries: Sequence[Mapping[str, Any]]) -> list[dict[str, Any] | ServingError]:
        """:meth:`similar` for several ``{item_id, k}`` at once, one faiss call per item space; an
        unknown item's answer is its 404 error (the others are answered)."""
        started = time.perf_counter()
        answers: list[dict[str, Any] | ServingError] = []
        # Per item space, the (position in queries, item index, item id, k) of what it answers.
        spaces: dict[str, list[tuple[int, int, str, int]]] = {"model": [], "text": []}
        for n, q in enumerate(queries):
            item_id, k = str(q["item_id"]), int(q.get("k", 10))
            i = self.model._index.get(item_id)
            if i is None or i == 0:
                answers.append(
                    ServingError(
                        404,
                        f"unknown item_id {item_id!r}: not in the catalog of model {self.tag} "
                        f"({len(self.item_ids) - 1} items); use /search to find items by text",
                    )
                )
                continue
            answers.append({})  # filled below
            cold = self.text_index is not None and not self.warm[i]
            spaces["text" if cold else "model"].append((n, i, item_id, k))
        for space, members in spaces.items():
            if not members:
                continue
            items = [i for _, i, _, _ in members]
            if space == "text":
                assert self.unit_text is not None
                index, vectors = self.text_index, self.unit_text[items]
            else:
                index, vectors = self.unit_table_index, self.unit_table[items]
            found = self._search_many(index, vectors, [k for *_, k in members], [{i} for i in items])
            for (n, i, item_id, k), hits in zip(members, found, strict=True):
                response = {
                    "model_version": self.tag,
                    "item_id": item_id,
                    "title": self.titles[i],
                    "space": space,
                    "items": [self._hit(j, s).__dict__ for j, s in hits],
                }
                self._log("similar", started, response, request={"item_id": item_id, "k": k})
                answers[n] = response
        return answers

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

    def assistant(self, settings: Settings) -> tuple[Assistant, str | None]:
        """This version's shopping assistant (built on the first /ask), with the generator when
        one is ready, else None and why (looked for again on later questions)."""
        if self.retriever is None:
            raise ServingError(501, f"model {self.tag} has no text encoder (ID-only): /ask is unavailable")
        from ml.retrieval.assistant import Assistant, AssistantConfig

        assistant: Assistant | None = getattr(self, "_assistant", None)
        if assistant is None:
            combiner = self.query_combiner
            assistant = Assistant(
                self.retriever,
                encode=lambda texts: np.stack([combiner(t) for t in texts]),
                config=AssistantConfig(time_budget_s=settings.ask_time_budget_s),
                phone_regions=settings.pii_phone_regions,
            )
            self._assistant = assistant
        why = None
        if assistant.generator is None:
            assistant.generator, why = assistant_generator(settings)
        return assistant, why

    def ask(
        self, question: str, history: Sequence[dict[str, str]] = (), settings: Settings | None = None
    ) -> dict[str, Any]:
        """The shopping assistant's answer to a question (``ml.retrieval.assistant``), logged.

        ``history``: earlier turns, ``{"role": "user" | "assistant", "content": ...}``, oldest first.
        """
        from ml.generation.bundles import copy_counts, failure_rules

        started = time.perf_counter()
        assistant, why = self.assistant(settings or Settings())
        answer = assistant.answer(question, history)
        public = answer.public()
        if why is not None and answer.fallback and not answer.no_match:
            public["note"] = f"{public['note']} ({why})"
        strategy = "no_match" if answer.no_match else "template" if answer.fallback else "generated"
        # One text served: generated and passed, generated and failed (the template instead), or
        # the template without a generation (no match, no generator, busy, over budget).
        status = "generated" if not answer.fallback else "fallback" if answer.generated else "template"
        rules = failure_rules(answer.reasons) if status == "fallback" else ()
        response = {"model_version": self.tag, "question": question, "strategy": strategy, **public}
        intent = public["intent"]
        self._log(
            "ask",
            started,
            {
                "strategy": strategy,
                "items": [{"item_id": i["item_id"], "score": i["match"]} for i in public["items"]],
            },
            request={
                "question": scrub(question),
                "turns": len(history),
                "intent": {**intent, "terms": scrub(intent["terms"])},
                "grounded": answer.grounded,
                "generated": answer.generated,
            },
            copy=copy_counts([(status, rules)]),
        )
        return response

    # -- logging -------------------------------------------------------------------------------
    def _log(
        self,
        endpoint: str,
        started: float,
        response: dict[str, Any],
        user_id: str | None = None,
        request: dict[str, Any] | None = None,
        copy: dict[str, Any] | None = None,
    ) -> None:
        """One request log line. ``copy``: what the response's texts were (``copy_counts``) - the
        monitoring run's fallback and check-failure rates per interval come from it."""
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
                "copy": copy,
            }
        )
