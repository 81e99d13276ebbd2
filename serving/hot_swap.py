"""The running Bento follows the champion pointer and swaps versions inside the process.

A promotion (``train_recommender``'s promote task, ``shopflow models promote``) or a rollback
(``shopflow models rollback``) only rewrites the registry's champion pointer
(``ml.registry.champion``). :class:`ChampionFollower` polls that pointer from a background thread
every ``Settings.serving_follow_champion_s`` seconds; when it names another version it

1. loads that version into a new :class:`~serving.engine.ServingModel` and warms it (encoder loaded,
   known users' vectors precomputed), while the current model keeps answering;
2. sends it the train DAG's smoke queries (``serving.bento.run_smoke``: the same list, called
   in-process instead of over HTTP), so a version that loads but answers nonsense is caught;
3. only then replaces the one reference the endpoints read (``on_swap``): a request already inside
   the old model finishes there, the next one goes to the new model, and none fails.

A version that fails any step (a corrupt file in the store, a tag the store lacks, a smoke query
that errors or answers no finite score) is refused: the current model keeps serving, the reason
is logged once and shown by :meth:`ChampionFollower.status` (``GET /version`` on the Bento), and the
same tag is not retried until the pointer moves (a broken version would otherwise be reloaded
every poll, costing the server CPU each time).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from serving.bento import run_smoke
from serving.engine import ServingError, ServingModel

log = logging.getLogger(__name__)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def smoke_engine(engine: ServingModel) -> dict[str, Any]:
    """The smoke queries (``serving.bento.SMOKE_CALLS``) answered by ``engine`` in-process.

    Each path maps to the engine method of that name with the payload as its arguments, so the
    check is the one the train DAG runs over HTTP, minus the transport.

    Raises:
        RuntimeError: an endpoint failed (the message names it).
    """

    def post(path: str, payload: dict[str, Any]) -> tuple[int, Any]:
        method = getattr(engine, path.strip("/"))
        try:
            return 200, method(**payload)
        except ServingError as error:
            return error.status, {"error": error.message}

    result = run_smoke(post, searchable=engine.retriever is not None)
    if result.get("model_version") != engine.tag:
        raise RuntimeError(f"smoke queries were answered by {result.get('model_version')}, not {engine.tag}")
    return result


class ChampionFollower:
    """Keeps the served model equal to the registry's champion, swapping atomically.

    Args:
        engine: the model serving now.
        champion: reads the champion pointer (a tag, or None before the first promotion).
        load: builds and warms the model of a tag (``ServingModel`` + ``warm_up``).
        on_swap: publishes a new model (e.g. sets the service's ``engine`` attribute); called once
            per swap from the follower's thread, after the new model passed the smoke queries.
        interval_s: seconds between two reads of the pointer.
        smoke: the check a loaded model must pass (default :func:`smoke_engine`).
    """

    def __init__(
        self,
        engine: ServingModel,
        champion: Callable[[], str | None],
        load: Callable[[str], ServingModel],
        on_swap: Callable[[ServingModel], None],
        interval_s: float,
        smoke: Callable[[ServingModel], Any] = smoke_engine,
    ) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s {interval_s}: must be > 0 (0 in the settings means: do not follow)")
        self.engine = engine
        self._champion = champion
        self._load = load
        self._on_swap = on_swap
        self._smoke = smoke
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._check = threading.Lock()  # one check at a time (the thread, or a test calling check())
        self.pointer: str | None = None
        self.last_check: str | None = None
        self.checks = 0
        self.swaps: list[dict[str, Any]] = []
        self.refused: dict[str, Any] | None = None

    # -- one check -------------------------------------------------------------------------------
    def check(self) -> str:
        """Read the pointer once and act; returns what happened.

        ``unchanged`` (the pointer names the served version, or none), ``refused`` (a new tag
        failed to load, warm up or pass the smoke queries, now or at an earlier check), or
        ``swapped``.
        """
        with self._check:
            self.checks += 1
            self.last_check = _now()
            try:
                wanted = self._champion()
            except Exception as error:  # an unreadable pointer is not a reason to stop serving
                self._refuse(None, f"cannot read the champion pointer: {type(error).__name__}: {error}")
                return "refused"
            self.pointer = wanted
            if wanted is None or wanted == self.engine.tag:
                if wanted == self.engine.tag:
                    self.refused = None  # back on the served version (e.g. a rollback past a bad one)
                return "unchanged"
            if self.refused is not None and self.refused["tag"] == wanted:
                return "refused"  # already tried: wait until the pointer moves
            return self._swap_to(wanted)

    def _swap_to(self, tag: str) -> str:
        started = time.perf_counter()
        old = self.engine
        try:
            candidate = self._load(tag)
        except Exception as error:
            self._refuse(tag, f"failed to load: {type(error).__name__}: {error}")
            return "refused"
        loaded_s = time.perf_counter() - started
        try:
            smoke = self._smoke(candidate)
        except Exception as error:
            self._refuse(tag, f"failed the smoke queries: {type(error).__name__}: {error}")
            return "refused"
        self._on_swap(candidate)
        self.engine = candidate
        self.refused = None
        record = {
            "from": old.tag,
            "to": candidate.tag,
            "at": _now(),
            "load_and_warm_s": round(loaded_s, 2),
            "total_s": round(time.perf_counter() - started, 2),
            "smoke": smoke.get("endpoints", {}),
        }
        self.swaps.append(record)
        log.info(
            "champion pointer moved: now serving %s (was %s), ready in %.1f s",
            candidate.tag,
            old.tag,
            record["total_s"],
        )
        return "swapped"

    def _refuse(self, tag: str | None, reason: str) -> None:
        self.refused = {"tag": tag, "reason": reason, "at": _now()}
        log.error("not serving %s: %s; still serving %s", tag or "the champion", reason, self.engine.tag)

    # -- the thread --------------------------------------------------------------------------------
    def start(self) -> ChampionFollower:
        """Poll in a daemon thread until :meth:`stop`."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="champion-follower", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.check()
            except Exception:  # the follower must never die: log and poll again
                log.exception("champion check failed")

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop polling (a load in progress finishes first, up to ``timeout_s``)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def status(self) -> dict[str, Any]:
        """What is served and why: for ``GET /version`` and the logs."""
        return {
            "model_version": self.engine.tag,
            "following_champion": True,
            "champion": self.pointer,
            "interval_s": self.interval_s,
            "checks": self.checks,
            "last_check": self.last_check,
            "swaps": self.swaps[-10:],
            "refused": self.refused,
        }
