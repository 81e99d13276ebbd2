"""Evaluate generators on held-out catalog items, several in one run on the same cases.

What is measured (every figure a pure function of truth and outputs, tested on hand-made cases):

- *understanding* (title → category path and brand): ``leaf_exact`` (the deepest category, exactly),
  ``top_level_accuracy`` (the first category below the catalog's root: "Skin Care", "Makeup" —
  the root itself, "Beauty", is the same for every item and would say nothing) and
  ``brand_accuracy`` (items with a known brand), compared case- and accent-blind;
- *copy* (facts → the seller's title): ``rouge_l``, the mean ROUGE-L F1 against the held-out real
  titles (``rouge-score``, Google's reimplementation of ROUGE-1.5.5);
- *theme* (a set of items → their deepest common category): ``theme_leaf_exact``;
- *grounding*: ``raw_pass_rate``, the share of the generator's own texts that pass
  ``grounding.check`` before any template stands in, on bundle names, bundle descriptions and
  explanations built from real related items (bought or reviewed by the same user within 30 days)
  with the prompts and system prompt serving uses (``ml.generation.bundles``), overall and per
  kind. ``1 - raw_pass_rate`` is the fallback rate: how often the template is served.

Items are held out by a stable hash of their id (``split_items``), so the same catalog gives the same
held-out set in every run, and a champion can be re-scored on the challenger's cases.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ml.generation import bundles
from ml.generation.finetune import (
    UNDERSTANDING_PROMPT,
    _text,
    copy_pairs,
    item_sets,
    parse_target,
    theme_pairs,
)
from ml.generation.generate import GenerationConfig, generate
from ml.generation.grounding import KINDS, BrandIndex, Facts, ItemFacts, Kind, check, fold
from ml.generation.load import Generator

# The figures the gate compares (higher is better for each).
GATED_METRICS = (
    "leaf_exact",
    "top_level_accuracy",
    "brand_accuracy",
    "rouge_l",
    "theme_leaf_exact",
    "raw_pass_rate",
)
WINDOW_DAYS = 30


# -- held-out items and related pairs -------------------------------------------------------------------
def is_heldout(item_id: str, fraction: float, salt: str = "generator") -> bool:
    """Whether an item is held out: a stable hash of its id, not the row order or a random draw."""
    digest = hashlib.sha256(f"{salt}:{item_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def split_items(items: pd.DataFrame, fraction: float = 0.1) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(training items, held-out items) by ``is_heldout``; the held-out never reach fine-tuning."""
    if not 0 < fraction < 1:
        raise ValueError(f"the held-out fraction must be between 0 and 1, got {fraction}")
    mask = items["item_id"].astype(str).map(lambda i: is_heldout(i, fraction)).astype(bool)
    return items[~mask].reset_index(drop=True), items[mask].reset_index(drop=True)


def related_pairs(
    interactions: pd.DataFrame, *, window_days: int = WINDOW_DAYS, max_pairs: int | None = None, seed: int = 0
) -> list[tuple[str, str]]:
    """(item, earlier item) pairs of one user within ``window_days``, distinct items, deduplicated.

    The Beauty source has no baskets: two items reviewed by the same user within 30 days are what
    issue 12 counts as bought together (and an explanation's "because you bought" link).
    ``interactions`` needs ``user_id``, ``item_id`` and ``timestamp`` (epoch seconds or datetimes).
    """
    for column in ("user_id", "item_id", "timestamp"):
        if column not in interactions.columns:
            raise KeyError(f"interactions: column {column!r} missing (need user_id, item_id, timestamp)")
    frame = interactions[["user_id", "item_id", "timestamp"]].copy()
    ts = frame["timestamp"]
    if pd.api.types.is_datetime64_any_dtype(ts):  # any resolution, naive (UTC) or aware
        frame["t"] = (pd.to_datetime(ts, utc=True) - pd.Timestamp(0, tz="UTC")).dt.total_seconds()
    else:
        frame["t"] = ts.astype("int64")
    frame = frame.sort_values(["user_id", "t", "item_id"], kind="stable")
    window = window_days * 86_400
    pairs: dict[tuple[str, str], None] = {}
    for _, rows in frame.groupby("user_id", sort=True):
        items, times = rows["item_id"].astype(str).tolist(), rows["t"].tolist()
        for j in range(1, len(items)):
            for i in range(j - 1, -1, -1):
                if times[j] - times[i] > window:
                    break
                if items[i] != items[j]:
                    pairs.setdefault((items[j], items[i]), None)
    found = list(pairs)
    if max_pairs is not None and len(found) > max_pairs:
        found = random.Random(seed).sample(found, max_pairs)
    return found


# -- prompts of the grounded kinds --------------------------------------------------------------------
def grounded_prompt(kind: Kind, facts: Facts) -> str:
    """The prompt of one bundle name, bundle description or explanation: the one serving sends
    (``ml.generation.bundles.prompt``), so ``raw_pass_rate`` measures what shoppers would get."""
    if kind == "explanation" and len(facts.items) < 2:
        raise ValueError("an explanation needs the recommended item and the history item")
    return bundles.prompt(kind, facts)


@dataclass(frozen=True)
class GroundedCase:
    kind: Kind
    facts: Facts
    prompt: str


def grounded_cases(
    catalog: pd.DataFrame, pairs: Sequence[tuple[str, str]], per_kind: int, *, seed: int = 0
) -> list[GroundedCase]:
    """``per_kind`` cases of each kind from related pairs whose items are in ``catalog``.

    Explanations use a pair (recommended item, history item); bundles the pair plus, where the
    first item has another related item, a third one (2-3 items, as /bundle offers).
    """
    records = {str(r["item_id"]): r for r in catalog.to_dict("records")}
    usable = [(a, b) for a, b in pairs if a in records and b in records]
    if not usable:
        return []
    partners: dict[str, list[str]] = {}
    for a, b in usable:
        partners.setdefault(a, []).append(b)
    rng = random.Random(seed)
    cases: list[GroundedCase] = []
    for kind in KINDS:
        for a, b in rng.sample(usable, min(per_kind, len(usable))):
            ids = [a, b]
            if kind != "explanation":
                more = [c for c in partners.get(a, []) if c not in ids]
                if more and rng.random() < 0.5:
                    ids.append(rng.choice(more))
            items = [ItemFacts.from_record(records[i]) for i in ids]
            # An explanation's facts carry what the two items share, as serving builds them.
            facts = bundles.explanation_facts(*items) if kind == "explanation" else Facts(items=tuple(items))
            cases.append(GroundedCase(kind=kind, facts=facts, prompt=grounded_prompt(kind, facts)))
    return cases


# -- the pure metrics ---------------------------------------------------------------------------------
def _segments(path: str | None) -> list[str]:
    return [fold(c).strip() for c in (path or "").split(">") if c.strip()]


def root_depth(paths: Sequence[str | None]) -> int:
    """How many leading categories every path shares (1 for a catalog rooted at "Beauty")."""
    split = [_segments(p) for p in paths if p]
    depth = 0
    for level in zip(*split, strict=False):
        if len(set(level)) != 1:
            break
        depth += 1
    return depth if split and depth < min(len(s) for s in split) else 0


def understanding_metrics(
    truth: Sequence[tuple[str, str | None]], answers: Sequence[str], *, root: int = 0
) -> dict[str, float]:
    """Leaf exact match, top-level accuracy and brand accuracy of generated answers.

    Args:
        truth: (category path, brand or None) per case.
        answers: the generated text per case (``parse_target`` reads it).
        root: leading categories shared by the whole catalog, skipped for the top level.

    Returns:
        ``leaf_exact``, ``top_level_accuracy``, ``brand_accuracy`` (over cases with a brand),
        ``parsed_rate`` (answers in the expected format) and ``cases``.
    """
    if len(truth) != len(answers):
        raise ValueError(f"{len(truth)} truths but {len(answers)} answers")
    leaf = top = brand = branded = parsed = 0
    for (path, true_brand), answer in zip(truth, answers, strict=True):
        got_path, got_brand = parse_target(answer)
        parsed += got_path is not None and got_brand is not None
        want, got = _segments(path), _segments(got_path)
        leaf += bool(want and got and want[-1] == got[-1])
        level = min(root, len(want) - 1)
        top += bool(len(got) > level and want[level] == got[level])
        if true_brand:
            branded += 1
            brand += bool(got_brand and fold(got_brand).split() == fold(true_brand).split())
    n = len(truth)
    return {
        "leaf_exact": leaf / n if n else 0.0,
        "top_level_accuracy": top / n if n else 0.0,
        "brand_accuracy": brand / branded if branded else 0.0,
        "parsed_rate": parsed / n if n else 0.0,
        "cases": float(n),
    }


def rouge_l(references: Sequence[str], predictions: Sequence[str]) -> float:
    """Mean ROUGE-L F1 of predictions against references (Porter stemming, as ROUGE-1.5.5's -m)."""
    from rouge_score import rouge_scorer

    if len(references) != len(predictions):
        raise ValueError(f"{len(references)} references but {len(predictions)} predictions")
    if not references:
        return 0.0
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    scores = [scorer.score(r, p)["rougeL"].fmeasure for r, p in zip(references, predictions, strict=True)]
    return float(sum(scores) / len(scores))


def theme_metrics(truth: Sequence[str], answers: Sequence[str]) -> dict[str, float]:
    """``theme_leaf_exact``: the answer's deepest category is the set's deepest common one."""
    if len(truth) != len(answers):
        raise ValueError(f"{len(truth)} truths but {len(answers)} answers")
    hits = 0
    for path, answer in zip(truth, answers, strict=True):
        got, _ = parse_target(answer)
        want, have = _segments(path), _segments(got if got is not None else answer.strip())
        hits += bool(want and have and want[-1] == have[-1])
    return {"theme_leaf_exact": hits / len(truth) if truth else 0.0}


def pass_rates(
    texts: Sequence[str],
    cases: Sequence[GroundedCase],
    *,
    brands: BrandIndex | None = None,
    phone_regions: Sequence[str] = ("US", "GB"),
) -> dict[str, Any]:
    """``raw_pass_rate`` overall and per kind, its complement ``fallback_rate``, and why texts failed.

    The reasons are counted by rule (the part before the colon: ``length``, ``name not in facts``).
    """
    if len(texts) != len(cases):
        raise ValueError(f"{len(texts)} texts but {len(cases)} cases")
    passed: Counter[str] = Counter()
    total: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    for text, case in zip(texts, cases, strict=True):
        result = check(text, case.facts, kind=case.kind, brands=brands, phone_regions=phone_regions)
        total[case.kind] += 1
        passed[case.kind] += result.passed
        reasons.update({r.split(":", 1)[0] for r in result.reasons})
    n = sum(total.values())
    rate = sum(passed.values()) / n if n else 0.0
    return {
        "raw_pass_rate": rate,
        "fallback_rate": 1.0 - rate if n else 0.0,
        "by_kind": {k: passed[k] / total[k] for k in KINDS if total[k]},
        "texts": n,
        "failure_reasons": dict(reasons.most_common()),
    }


# -- one evaluation set, several generators ------------------------------------------------------------
@dataclass(frozen=True)
class EvaluationSet:
    """The held-out cases every generator of a run answers."""

    understanding: list[tuple[str, tuple[str, str | None]]]  # (prompt, (path, brand))
    copy: list[tuple[str, str]]  # (prompt, the seller's title)
    theme: list[tuple[str, str]]  # (prompt, the deepest common path)
    grounded: list[GroundedCase]
    root: int = 0
    brands: tuple[str, ...] = field(default=(), repr=False)

    def sizes(self) -> dict[str, int]:
        return {
            "understanding": len(self.understanding),
            "copy": len(self.copy),
            "theme": len(self.theme),
            "grounded": len(self.grounded),
        }


def evaluation_set(
    heldout: pd.DataFrame,
    catalog: pd.DataFrame,
    pairs: Sequence[tuple[str, str]],
    *,
    n_items: int = 32,
    n_sets: int = 16,
    per_kind: int = 16,
    seed: int = 0,
) -> EvaluationSet:
    """Cases from held-out items (understanding, copy, theme) and related pairs (grounded kinds).

    Args:
        heldout: held-out items (``split_items``): never seen in fine-tuning.
        catalog: the whole catalog, for the root depth, the brands and the pairs' facts.
        pairs: related (item, earlier item) pairs (``related_pairs``).
        n_items: held-out items for understanding and copy; n_sets: theme sets; per_kind: cases
            per grounded kind.
    """
    usable = heldout[
        [
            (_text(t) is not None and _text(c) is not None)
            for t, c in zip(heldout["title"], heldout["categories"], strict=True)
        ]
    ]
    sample = usable.sample(min(n_items, len(usable)), random_state=seed) if len(usable) else usable
    understanding = [
        (UNDERSTANDING_PROMPT.format(title=_text(r.title)), (str(_text(r.categories)), _text(r.brand)))
        for r in sample.itertuples(index=False)
    ]
    copy = copy_pairs(sample)
    sets = item_sets(usable.reset_index(drop=True), n_sets, seed=seed)
    theme = [
        (prompt, answer.removeprefix("Category: "))
        for prompt, answer in theme_pairs(usable.reset_index(drop=True), sets)
    ]
    paths = [_text(c) for c in catalog["categories"]]
    brands = tuple(sorted({b for b in (_text(x) for x in catalog.get("brand", [])) if b}))
    return EvaluationSet(
        understanding=understanding,
        copy=copy,
        theme=theme,
        grounded=grounded_cases(catalog, pairs, per_kind, seed=seed),
        root=root_depth(paths),
        brands=brands,
    )


def evaluate_generator(
    generator: Generator,
    cases: EvaluationSet,
    *,
    config: GenerationConfig | None = None,
    brands: BrandIndex | None = None,
    phone_regions: Sequence[str] = ("US", "GB"),
) -> dict[str, Any]:
    """Every metric of one generator on ``cases`` (greedy, so a rerun gives the same figures).

    ``config`` generates the understanding, copy and theme texts; the grounded texts are
    generated with serving's :func:`bundles.served_config` (its batch size from ``config``).

    Returns:
        The ``GATED_METRICS`` and ``parsed_rate`` at the top level, ``grounding`` (pass rates per
        kind, failure reasons), ``speed`` (texts, new tokens, seconds, tokens/s) and a few
        ``examples`` of each task's outputs.
    """
    config = config or GenerationConfig(max_new_tokens=48, batch_size=8)
    brands = brands if brands is not None else BrandIndex(cases.brands)
    # Grounded texts are generated as serving writes them, so raw_pass_rate is the served rate
    # (they were once generated with the tasks' 40-token budget and no repetition penalty: 9 of
    # 90 tuned texts failed on length and 4 on repetition, failures serving would not see).
    grounded_config = bundles.served_config(config.batch_size)
    start = time.perf_counter()
    runs = {
        "understanding": generate(generator, [p for p, _ in cases.understanding], config),
        "copy": generate(generator, [p for p, _ in cases.copy], config),
        "theme": generate(generator, [p for p, _ in cases.theme], config),
        "grounded": generate(generator, [c.prompt for c in cases.grounded], grounded_config),
    }
    seconds = time.perf_counter() - start
    understanding = understanding_metrics(
        [t for _, t in cases.understanding], runs["understanding"].texts, root=cases.root
    )
    grounding = pass_rates(runs["grounded"].texts, cases.grounded, brands=brands, phone_regions=phone_regions)
    tokens = sum(r.total_new_tokens for r in runs.values())
    every = max(1, len(cases.grounded) // 6)  # a few examples of each kind
    texts = sum(len(r.texts) for r in runs.values())
    return {
        "generator": generator.name,
        "leaf_exact": understanding["leaf_exact"],
        "top_level_accuracy": understanding["top_level_accuracy"],
        "brand_accuracy": understanding["brand_accuracy"],
        "parsed_rate": understanding["parsed_rate"],
        "rouge_l": rouge_l([t for _, t in cases.copy], runs["copy"].texts),
        **theme_metrics([t for _, t in cases.theme], runs["theme"].texts),
        "raw_pass_rate": grounding["raw_pass_rate"],
        "fallback_rate": grounding["fallback_rate"],
        "grounding": grounding,
        "cases": cases.sizes(),
        "speed": {
            "texts": texts,
            "new_tokens": tokens,
            "seconds": round(seconds, 2),
            "tokens_per_s": round(tokens / seconds, 2) if seconds > 0 else 0.0,
        },
        "examples": {
            "understanding": runs["understanding"].texts[:2],
            "copy": list(zip([t for _, t in cases.copy][:3], runs["copy"].texts[:3], strict=False)),
            "theme": runs["theme"].texts[:2],
            "grounded": [
                {"kind": c.kind, "text": t}
                for c, t in list(zip(cases.grounded, runs["grounded"].texts, strict=True))[::every]
            ],
        },
    }


def compare(
    challenger: dict[str, Any],
    reference: dict[str, Any],
    metrics: Sequence[str] = GATED_METRICS,
    *,
    min_grounded: int = 0,
) -> dict[str, Any]:
    """Does ``challenger`` beat ``reference``: at least as good on every metric, better on one?

    Both were measured on the same cases. Returns ``beats`` and, per metric, both values and the
    difference, so a rejection says which figure held it back. Fewer than ``min_grounded``
    grounded texts (``challenger["cases"]["grounded"]``) decide nothing: a pass rate on a handful
    of texts moves by a sixth with one text, so ``beats`` is False and ``too_few`` says why.
    """
    rows = {
        m: {
            "challenger": float(challenger[m]),
            "reference": float(reference[m]),
            "delta": float(challenger[m]) - float(reference[m]),
        }
        for m in metrics
    }
    worse = [m for m, r in rows.items() if r["delta"] < 0]
    better = [m for m, r in rows.items() if r["delta"] > 0]
    grounded = int((challenger.get("cases") or {}).get("grounded", 0))
    too_few = (
        f"{grounded} grounded texts < the gate's minimum {min_grounded}" if grounded < min_grounded else None
    )
    return {
        "beats": not worse and bool(better) and too_few is None,
        "worse": worse,
        "better": better,
        "too_few": too_few,
        "metrics": rows,
    }
