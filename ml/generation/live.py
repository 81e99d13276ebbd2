"""Copy written on the request path: the Bento's cache misses (issue 12, item 5).

The package holds copy for the catalog's bundles and the explanations of each item's nearest
items, written in batch when the version was registered. A text it lacks - a bundle of another
size, a brand-new item's bundle, an explanation for a pair that was not packaged, or a text
packaged as the template because the batch's budget ran out - is a miss. :class:`LiveCopy` has the
generator write a miss while the request waits up to a time budget; past the budget the caller
serves the template, and the generation finishes in the background, so the next request for the
same text gets it. Every text goes through the grounding check (:func:`bundles.write_copy`, the
one owner of how copy is written and checked) before it is kept; a text that fails is kept as a
``fallback`` (greedy decoding would write it again) and its template is what gets served.

Why a hand-written cache and one thread rather than a serving framework's batching: a generation
takes seconds on 2 CPU cores, so what matters is that requests never pile up behind each other's
generations. One worker writes, in batches; a miss that would queue more than ``max_pending``
texts is not queued (the template is served, and a later request asks again).

Which generator writes is the caller's choice (``champion``/``load``): the Bento passes the gated
generator champion, so copy is only written by a generator that beat the base on ``raw_pass_rate``.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ml.generation.bundles import CopyStatus, write_copy
from ml.generation.grounding import BrandIndex, Facts, Kind

if TYPE_CHECKING:  # the generator's stack (torch, transformers) loads with the generator
    from ml.generation.load import Generator

log = logging.getLogger(__name__)

Written = tuple[str, CopyStatus, tuple[str, ...]]
"""A kept text: what to serve (the generated text, or the template where it failed the check),
its status (``generated`` or ``fallback``) and the rules it failed."""


@dataclass(frozen=True)
class CopyRequest:
    """One text a response needs: its cache key, its kind and the facts it may use."""

    key: Hashable
    kind: Kind
    facts: Facts


class LiveCopy:
    """The generator's texts for requests' cache misses, within a time budget.

    Args:
        champion: the tag of the generator to write with, or None (nothing is written); called
            on every request, so the caller keeps it cheap (the Bento caches the pointer's read).
        load: loads the generator of a tag (called on the writer thread, never on a request).
        budget_s: how long :meth:`write` waits by default; 0 turns live copy off.
        max_pending: texts queued or being written at most; a miss beyond it is not queued.
        batch_size: texts per generation batch.
        cache_size: texts kept (oldest out first).
        brands, phone_regions: for the grounding check.
    """

    def __init__(
        self,
        champion: Callable[[], str | None],
        load: Callable[[str], Generator],
        *,
        budget_s: float,
        max_pending: int = 32,
        batch_size: int = 8,
        cache_size: int = 100_000,
        brands: BrandIndex | None = None,
        phone_regions: Sequence[str] = ("US", "GB"),
    ) -> None:
        self._champion = champion
        self._load = load
        self.budget_s = budget_s
        self.max_pending = max_pending
        self.batch_size = batch_size
        self.cache_size = cache_size
        self.brands = brands
        self.phone_regions = tuple(phone_regions)
        self._cache: dict[tuple[str, Hashable], Written] = {}
        self._pending: dict[tuple[str, Hashable], Future[None]] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="live-copy")
        self._loaded: tuple[str, Generator] | None = None
        self._broken: dict[str, str] = {}
        self.counts = {"written": 0, "not_queued": 0, "seconds": 0.0}

    def generator_tag(self) -> str | None:
        """The generator that writes now, or None (live copy off, no champion, or it failed to load)."""
        if self.budget_s <= 0:
            return None
        tag = self._champion()
        return None if tag is None or tag in self._broken else tag

    def write(self, requests: Sequence[CopyRequest], wait_s: float | None = None) -> dict[Hashable, Written]:
        """The kept texts for ``requests``; the misses are queued and waited for up to ``wait_s``
        seconds (default: the budget; 0: never wait). Requests missing from the answer get the
        template from the caller."""
        tag = self.generator_tag()
        if tag is None or not requests:
            return {}
        keyed = {(tag, r.key): r for r in requests}
        with self._lock:
            missing = [r for k, r in keyed.items() if k not in self._cache and k not in self._pending]
            if missing and len(self._pending) + len(missing) <= self.max_pending:
                future = self._pool.submit(self._run, tag, missing)
                for r in missing:
                    self._pending[(tag, r.key)] = future
            elif missing:
                self.counts["not_queued"] += len(missing)
            waiting = {self._pending[k] for k in keyed if k in self._pending}
        wait_s = self.budget_s if wait_s is None else wait_s
        if waiting and wait_s > 0:
            wait_for(waiting, timeout=wait_s)
        with self._lock:
            return {k[1]: self._cache[k] for k in keyed if k in self._cache}

    def idle(self, timeout: float) -> bool:
        """Wait until nothing is queued or being written (True), or ``timeout`` seconds (False)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self._pending:
                    return True
            time.sleep(0.05)
        return False

    def _generator(self, tag: str) -> Generator:
        if self._loaded is None or self._loaded[0] != tag:
            self._loaded = None  # the old champion's weights go before the new ones load
            self._loaded = (tag, self._load(tag))
        return self._loaded[1]

    def _run(self, tag: str, requests: list[CopyRequest]) -> None:
        written: dict[tuple[str, Hashable], Written] = {}
        started = time.perf_counter()
        try:
            generator = self._generator(tag)
            texts, stats = write_copy(
                [(r.kind, r.facts) for r in requests],
                generator,
                budget_s=math.inf,  # the request's budget bounds its wait, not the writing
                batch_size=self.batch_size,
                brands=self.brands,
                phone_regions=self.phone_regions,
            )
            for n, (request, (text, status)) in enumerate(zip(requests, texts, strict=True)):
                written[(tag, request.key)] = (text, status, stats.failed.get(n, ()))
        except Exception as error:  # a generator that cannot load or write: templates from now on
            log.exception("live copy: generator %s failed; the template is served for its misses", tag)
            self._broken[tag] = f"{type(error).__name__}: {error}"
        finally:
            with self._lock:
                self._cache.update(written)
                while len(self._cache) > self.cache_size:  # oldest first out (insertion order)
                    self._cache.pop(next(iter(self._cache)))
                for request in requests:
                    self._pending.pop((tag, request.key), None)
                self.counts["written"] += len(written)
                self.counts["seconds"] += time.perf_counter() - started

    def stats(self) -> dict[str, Any]:
        """What live copy did in this process: texts written, misses not queued, seconds writing."""
        with self._lock:
            return {
                **self.counts,
                "seconds": round(float(self.counts["seconds"]), 2),
                "kept": len(self._cache),
                "pending": len(self._pending),
                "generator": self.generator_tag(),
                "broken": dict(self._broken),
            }

    def close(self) -> None:
        """Stop the writer thread (a running batch finishes first)."""
        self._pool.shutdown(wait=False, cancel_futures=True)
