"""Request-path copy (``ml.generation.live``): a miss is written by the generator while the
request waits up to its budget; past it the caller serves the template, and the text is written in
the background for the next request.

The writer is a real causal LM: the tiny random Llama of tests/conftest.py, which writes in
milliseconds. Its texts are noise, so they fail the grounding check and are kept as fallbacks (the
template served, the rules counted) - these tests check the mechanics; ``make bench-generation``
measures what a real tuned generator writes. A slow generator is the same model behind a load
that waits for the test's signal, so nothing here depends on how fast the machine is.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from ml.generation.bundles import explanation_facts
from ml.generation.grounding import Facts, ItemFacts, template
from ml.generation.live import CopyRequest, LiveCopy
from ml.generation.load import Generator, load_generator

SERUM = ItemFacts("a", "Vitamin C Serum", "Olay", ("Beauty", "Skin Care", "Serums"), 19.5)
CREAM = ItemFacts("b", "Night Cream", "Olay", ("Beauty", "Skin Care", "Creams"), 24.0)
MASK = ItemFacts("c", "Clay Mask", "Aztec", ("Beauty", "Skin Care", "Masks"), 9.0)


def requests(*pairs: tuple[ItemFacts, ItemFacts]) -> list[CopyRequest]:
    return [CopyRequest((x.item_id, y.item_id), "explanation", explanation_facts(x, y)) for x, y in pairs]


@pytest.fixture(scope="module")
def generator(tiny_base: Path) -> Generator:
    return load_generator(tiny_base, device="cpu")


def recorded(generator: Generator, loads: list[str]) -> Any:
    """A load that returns the generator at once and notes the tag it was asked for."""

    def load(tag: str) -> Generator:
        loads.append(tag)
        return generator

    return load


def held_back(generator: Generator) -> tuple[Any, threading.Event, list[str]]:
    """A load that waits for the returned event (a generator busy for as long as the test wants),
    and the tags it was asked to load."""
    release, loads = threading.Event(), []

    def load(tag: str) -> Generator:
        loads.append(tag)
        assert release.wait(60), "the test never released the generator"
        return generator

    return load, release, loads


def test_a_miss_within_the_budget_is_written_checked_and_kept(generator: Generator) -> None:
    loads: list[str] = []
    live = LiveCopy(lambda: "tuned-1", recorded(generator, loads), budget_s=60)
    asked = requests((SERUM, CREAM), (MASK, SERUM))
    written = live.write(asked)
    assert set(written) == {r.key for r in asked}
    for request in asked:
        text, status, rules = written[request.key]
        assert status in {"generated", "fallback"}
        if status == "fallback":  # what is served is the template, with the rules the text failed
            assert text == template("explanation", request.facts) and rules
    # Kept: the same texts again cost no generation.
    assert live.write(asked, wait_s=0) == written
    assert loads == ["tuned-1"]
    assert live.stats()["written"] == 2 and live.stats()["pending"] == 0


def test_a_miss_past_the_budget_is_written_in_the_background_for_the_next_request(
    generator: Generator,
) -> None:
    load, release, loads = held_back(generator)
    live = LiveCopy(lambda: "tuned-1", load, budget_s=0.05)
    asked = requests((SERUM, CREAM))
    assert live.write(asked) == {}  # over the budget: the caller serves the template
    assert live.write(asked, wait_s=0) == {}  # asked again while it is written: not queued twice
    assert live.stats()["pending"] == 1
    release.set()
    assert live.idle(timeout=60)
    assert set(live.write(asked, wait_s=0)) == {asked[0].key}
    assert loads == ["tuned-1"] and live.stats()["written"] == 1


def test_misses_beyond_the_queue_bound_are_not_queued(generator: Generator) -> None:
    load, release, _ = held_back(generator)
    live = LiveCopy(lambda: "tuned-1", load, budget_s=0.05, max_pending=2)
    assert live.write(requests((SERUM, CREAM), (MASK, CREAM), (SERUM, MASK)), wait_s=0) == {}
    assert live.stats()["not_queued"] == 3 and live.stats()["pending"] == 0
    assert live.write(requests((SERUM, CREAM)), wait_s=0) == {}
    assert live.stats()["pending"] == 1
    release.set()
    assert live.idle(timeout=60)


def test_nothing_is_written_without_a_champion_or_a_budget(generator: Generator) -> None:
    loads: list[str] = []
    for champion, budget in ((None, 60.0), ("tuned-1", 0.0)):
        live = LiveCopy(lambda c=champion: c, recorded(generator, loads), budget_s=budget)
        assert live.generator_tag() is None
        assert live.write(requests((SERUM, CREAM))) == {}
        assert live.stats()["pending"] == 0
    assert loads == []


def test_a_new_champion_writes_its_own_texts(generator: Generator) -> None:
    pointer = ["tuned-1"]
    loads: list[str] = []
    live = LiveCopy(lambda: pointer[0], recorded(generator, loads), budget_s=60)
    asked = requests((SERUM, CREAM))
    live.write(asked)
    pointer[0] = "tuned-2"
    assert set(live.write(asked)) == {asked[0].key}
    assert loads == ["tuned-1", "tuned-2"]  # the earlier champion's texts are not served for the new one
    assert live.stats()["written"] == 2


def test_a_generator_that_cannot_load_leaves_the_template(generator: Generator) -> None:
    def broken(tag: str) -> Generator:
        raise FileNotFoundError(f"no tuned weights for {tag}")

    live = LiveCopy(lambda: "tuned-1", broken, budget_s=60)
    assert live.write(requests((SERUM, CREAM))) == {}
    assert live.generator_tag() is None  # no retry on every request
    assert "no tuned weights for tuned-1" in live.stats()["broken"]["tuned-1"]
    bundle = Facts(items=(SERUM, MASK))
    assert live.write([CopyRequest("x", "bundle_name", bundle)]) == {}
