"""Bundles and explanations: which items go together, and the grounded copy that presents them.

Pure logic on frames and arrays (no settings, no warehouse): the training stage reads the marts
and calls it to package a version's bundles (``ml.training.bundles``), the Bento calls it on a
miss, and ``bench/bundles.py`` evaluates it on the shipped files.

**Candidates.** A bundle is a seed (a catalog item, a user's latest item, or a brand-new item
given by its text) and 1-3 complementary items:

1. real co-purchase first: Online Retail items bought on the same invoice
   (:func:`basket_pairs`, the rule of the ``fct_copurchase_pairs`` mart), Beauty items reviewed by
   the same user within 30 days (:func:`window_pairs`); partners ranked by how many baskets (or
   users) hold the pair;
2. the recommender's item embeddings for seeds with too few co-purchase partners (cosine nearest
   items), and for items the shop has never sold (a brand-new item's text vector);
3. the complementarity rule on both: no two items of a bundle are substitutes
   (:meth:`BundleCatalog.substitutes`): items with category paths are substitutes when their leaf
   categories are equal (two mascaras), so a bundle spans different leaves. Online Retail has no
   categories; there the stand-in is the product type read from the description
   (:func:`type_words`: its words without colours, patterns' filler and numbers): two items are
   substitutes when their first two type words agree ("HAND WARMER UNION JACK" / "HAND WARMER RED
   POLKA DOT"), the last type word of one is among the other's ("JUMBO BAG RED RETROSPOT" / "JUMBO
   STORAGE BAG SUKI") or half of their type words are shared (Jaccard >= 0.5: "JUMBO BAG RED RETROSPOT" /
   "LUNCH BAG RED RETROSPOT"). Items without a price are left out (a bundle has a total).

**Copy.** A bundle's name and one-sentence description, and each explanation ("why this item,
given that one from your history"), come from the generator through :func:`grounding.ground`:
the template of the kind is served when the generated text fails the check, and also when there
is no generator or no time left in the budget (:func:`write_copy` records which).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

from ml.generation.grounding import (
    BrandIndex,
    Facts,
    ItemFacts,
    Kind,
    common_category,
    fold,
    ground,
    item_name,
    set_theme,
    template,
    words,
)

if TYPE_CHECKING:
    from ml.generation.generate import GenerationConfig
    from ml.generation.load import Generator

MIN_SIZE, MAX_SIZE, DEFAULT_SIZE = 2, 4, 3
WINDOW_DAYS = 30.0
"""Beauty: two items reviewed by the same user this many days apart or less count as bought together."""
MAX_BASKET_ITEMS = 200
"""Baskets with more distinct items are left out of pair mining (the mart's ``max_basket_lines``):
pairs grow with the square of a basket and wholesale orders say little about what goes together."""

Source = Literal["seed", "copurchase", "embedding"]
CopyStatus = Literal["generated", "fallback", "template"]
"""generated: the generator's text passed the check; fallback: it failed, the template is served;
template: nothing was generated (no generator, or the time budget was spent)."""

# Words that say which variant an item is, not what it is (Online Retail's type rule).
_VARIANT_WORDS = frozenset(
    {
        "red",
        "blue",
        "green",
        "pink",
        "white",
        "black",
        "ivory",
        "cream",
        "grey",
        "gray",
        "yellow",
        "orange",
        "purple",
        "gold",
        "silver",
        "brown",
        "natural",
        "pastel",
        "multicolour",
        "multi",
        "colour",
        "colours",
        "assorted",
        "small",
        "large",
        "medium",
        "mini",
        "jumbo",
        "big",
        "set",
        "of",
        "and",
        "the",
        "with",
        "in",
        "a",
        "for",
        "to",
        "s",
        "retrospot",
        "polkadot",
        "polka",
        "dot",
        "spotty",
        "dots",
        "vintage",
        "design",
        "designs",
        "pack",
    }
)
_DIGITS = re.compile(r"\d")


# -- the complementarity rule --------------------------------------------------------------------
def leaf_category(categories: object) -> str | None:
    """The last level of an ``A > B > C`` category path (None when there is none)."""
    if not isinstance(categories, str):
        return None
    parts = [p.strip() for p in categories.split(">") if p.strip()]
    return parts[-1] if parts else None


def type_words(title: str) -> tuple[str, ...]:
    """What kind of product a category-less title names: its folded words, in order, without
    colours, sizes, pattern names, filler words and numbers (Online Retail's stand-in for a leaf)."""
    return tuple(w for w in words(title) if w not in _VARIANT_WORDS and not _DIGITS.search(w) and len(w) > 1)


def substitutes_by_type(a: Sequence[str], b: Sequence[str]) -> bool:
    """The category-less rule: same first two type words, one's last type word among the other's,
    or Jaccard of the type words >= 0.5."""
    if not a or not b:
        return False
    if len(a) >= 2 and len(b) >= 2 and tuple(a[:2]) == tuple(b[:2]):
        return True
    # The noun a description ends on is often what the item is ("JUMBO BAG ..." / "... STORAGE BAG").
    if a[-1] in b or b[-1] in a:
        return True
    sa, sb = set(a), set(b)
    return len(sa & sb) / len(sa | sb) >= 0.5


@dataclass(frozen=True)
class Seed:
    """What a bundle is built around: a catalog item (``index``) or a new item's facts alone."""

    facts: ItemFacts
    index: int | None = None

    @property
    def leaf(self) -> str | None:
        return leaf_category(" > ".join(self.facts.categories)) if self.facts.categories else None


class BundleCatalog:
    """The items bundles are made of, row-aligned with an embedding matrix.

    Built from a frame with ``item_id``, ``title``, ``brand``, ``categories`` (``A > B > C``) and
    ``price`` (missing columns are unknown). Row ``i`` is ``frame.iloc[i]``.
    """

    COLUMNS = ("item_id", "title", "brand", "categories", "price")

    def __init__(self, frame: pd.DataFrame) -> None:
        missing = [c for c in ("item_id", "title") if c not in frame.columns]
        if missing:
            raise ValueError(f"catalog frame: missing column(s) {missing} (have {list(frame.columns)})")
        frame = frame.reset_index(drop=True)
        self.facts = [ItemFacts.from_record(r) for r in frame.to_dict("records")]
        self.item_ids = [f.item_id for f in self.facts]
        self.index = {item: i for i, item in enumerate(self.item_ids)}
        self.leaves = [f.categories[-1] if f.categories else None for f in self.facts]
        self.folded_leaves = [fold(x) if x else None for x in self.leaves]
        self.types = [type_words(f.title) for f in self.facts]
        self.prices = np.array([np.nan if f.price is None else f.price for f in self.facts], dtype=float)

    def __len__(self) -> int:
        return len(self.item_ids)

    def frame(self) -> pd.DataFrame:
        """The catalog back as a frame (what a version packages: exact prices and categories)."""
        return pd.DataFrame(
            {
                "item_id": self.item_ids,
                "title": [f.title for f in self.facts],
                "brand": [f.brand for f in self.facts],
                "categories": [" > ".join(f.categories) if f.categories else None for f in self.facts],
                "price": self.prices,
            }
        )

    def priced(self, i: int) -> bool:
        return bool(np.isfinite(self.prices[i]))

    def substitutes(self, i: int | Seed, j: int | Seed) -> bool:
        """Whether two items (rows or seeds) would replace each other rather than go together."""
        leaf_i, type_i = self._rule(i)
        leaf_j, type_j = self._rule(j)
        if leaf_i is not None and leaf_j is not None:
            return leaf_i == leaf_j
        return substitutes_by_type(type_i, type_j)

    def _rule(self, x: int | Seed) -> tuple[str | None, tuple[str, ...]]:
        if isinstance(x, Seed):
            if x.index is not None:
                return self.folded_leaves[x.index], self.types[x.index]
            leaf = x.leaf
            return (fold(leaf) if leaf else None), type_words(x.facts.title)
        return self.folded_leaves[x], self.types[x]

    def seed(self, item_id: str) -> Seed:
        i = self.index[item_id]
        return Seed(self.facts[i], i)


# -- co-purchase mining --------------------------------------------------------------------------
def _count_pairs(groups: Iterable[np.ndarray], n_items: int) -> pd.DataFrame:
    """Distinct groups holding each unordered item pair (codes a < b)."""
    chunks: list[np.ndarray] = []
    for codes in groups:
        if len(codes) < 2:
            continue
        a, b = np.triu_indices(len(codes), k=1)
        chunks.append(codes[a].astype(np.int64) * n_items + codes[b])
    if not chunks:
        return pd.DataFrame({"a": np.array([], dtype=np.int64), "b": np.array([], dtype=np.int64), "n": []})
    keys, counts = np.unique(np.concatenate(chunks), return_counts=True)
    return pd.DataFrame({"a": keys // n_items, "b": keys % n_items, "n": counts})


def basket_pairs(
    lines: pd.DataFrame, basket: str = "invoice", item: str = "item_id", max_items: int = MAX_BASKET_ITEMS
) -> pd.DataFrame:
    """Pairs bought on the same basket (invoice): ``item_a < item_b``, ``n_baskets`` (distinct baskets).

    Baskets with more than ``max_items`` distinct items are left out (see :data:`MAX_BASKET_ITEMS`).
    """
    for column in (basket, item):
        if column not in lines.columns:
            raise ValueError(f"basket lines: missing column {column!r} (have {list(lines.columns)})")
    distinct = lines[[basket, item]].drop_duplicates()
    codes, uniques = pd.factorize(distinct[item].astype(str), sort=True)
    distinct = distinct.assign(_code=codes)
    sizes = distinct.groupby(basket)["_code"].transform("size")
    kept = distinct[sizes <= max_items].sort_values([basket, "_code"])
    groups = np.split(kept["_code"].to_numpy(), np.flatnonzero(np.diff(pd.factorize(kept[basket])[0])) + 1)
    counted = _count_pairs(groups, len(uniques))
    names = np.asarray(uniques, dtype=object)
    return pd.DataFrame(
        {"item_a": names[counted["a"]], "item_b": names[counted["b"]], "n_baskets": counted["n"].astype(int)}
    )


def window_pairs(
    events: pd.DataFrame,
    window_days: float = WINDOW_DAYS,
    user: str = "user_id",
    item: str = "item_id",
    ts: str = "event_ts",
) -> pd.DataFrame:
    """Pairs one user reviewed (bought) within ``window_days`` of each other: ``n_baskets`` counts users.

    The Beauty rule: a review is the only trace of a purchase, and items reviewed by the same
    person within a month were, as far as the data can tell, bought together.
    """
    for column in (user, item, ts):
        if column not in events.columns:
            raise ValueError(f"events: missing column {column!r} (have {list(events.columns)})")
    frame = events[[user, item, ts]].copy()
    frame["_day"] = pd.to_datetime(frame[ts]).astype("datetime64[s]").astype(np.int64) / 86_400.0
    codes, uniques = pd.factorize(frame[item].astype(str), sort=True)
    frame["_code"] = codes
    left = frame[[user, "_code", "_day"]]
    joined = left.merge(left, on=user, suffixes=("_a", "_b"))
    joined = joined[
        (joined["_code_a"] < joined["_code_b"]) & ((joined["_day_a"] - joined["_day_b"]).abs() <= window_days)
    ]
    per_user = joined[[user, "_code_a", "_code_b"]].drop_duplicates()
    counted = per_user.groupby(["_code_a", "_code_b"]).size().reset_index(name="n")
    names = np.asarray(uniques, dtype=object)
    return pd.DataFrame(
        {
            "item_a": names[counted["_code_a"].to_numpy()],
            "item_b": names[counted["_code_b"].to_numpy()],
            "n_baskets": counted["n"].astype(int).to_numpy(),
        }
    )


def partners(pairs: pd.DataFrame, min_baskets: int = 2) -> dict[str, list[tuple[str, int]]]:
    """Each item's co-purchase partners, most shared baskets first (ties: item id)."""
    kept = pairs[pairs["n_baskets"] >= min_baskets]
    both = pd.concat(
        [
            kept.rename(columns={"item_a": "item", "item_b": "partner"}),
            kept.rename(columns={"item_b": "item", "item_a": "partner"}),
        ],
        ignore_index=True,
    )[["item", "partner", "n_baskets"]]
    both = both.sort_values(["item", "n_baskets", "partner"], ascending=[True, False, True], kind="stable")
    out: dict[str, list[tuple[str, int]]] = {}
    for item, partner, n in zip(both["item"], both["partner"], both["n_baskets"], strict=True):
        out.setdefault(str(item), []).append((str(partner), int(n)))
    return out


# -- assembling bundles --------------------------------------------------------------------------
def nearest(unit_matrix: np.ndarray, vector: np.ndarray, k: int, exclude: Iterable[int] = ()) -> list[int]:
    """The ``k`` rows of a row-normalised matrix closest (cosine) to ``vector``, best first."""
    norm = float(np.linalg.norm(vector))
    scores = unit_matrix @ (vector / max(norm, 1e-12))
    for i in exclude:
        scores[i] = -np.inf
    k = min(k, int(np.isfinite(scores).sum()))
    if k <= 0:
        return []
    top = np.argpartition(-scores, k - 1)[:k]
    return [int(i) for i in top[np.argsort(-scores[top], kind="stable")]]


def unit_rows(matrix: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return np.asarray(matrix / np.maximum(norms, 1e-12), dtype=np.float32)


@dataclass(frozen=True)
class Bundle:
    """A seed and its complementary items, with its total and copy.

    ``item_ids[0]`` is the seed when it is in the catalog; a new item's bundle holds only catalog
    items (``seed`` then names the new item and ``seed_in_bundle`` is False).
    """

    seed: str
    item_ids: tuple[str, ...]
    sources: tuple[Source, ...]
    total_price: float | None
    seed_in_bundle: bool = True
    name: str = ""
    description: str = ""
    copy: CopyStatus = "template"
    copies: tuple[CopyStatus, CopyStatus] = ("template", "template")
    """The name's and the description's own status (``copy`` is the weaker of the two)."""
    failures: tuple[str, ...] = ()
    """The grounding rules the generated name or description failed (fallback only)."""


def choose(
    catalog: BundleCatalog,
    seed: Seed,
    candidates: Iterable[tuple[int, Source]],
    size: int = DEFAULT_SIZE,
    complementary: bool = True,
) -> list[tuple[int, Source]]:
    """Items for a bundle, in candidate order: priced, not the seed, and (``complementary``) no
    substitute of the seed or of an item already chosen. The seed itself, when it is a catalog
    item, comes first and counts towards ``size``."""
    chosen: list[tuple[int, Source]] = [(seed.index, "seed")] if seed.index is not None else []
    members: list[int | Seed] = [seed]
    taken = {seed.index} if seed.index is not None else set()
    for i, source in candidates:
        if len(chosen) >= size:
            break
        # Unpriced rows (a model's padding row among them) never join: a bundle has a total.
        if i in taken or not catalog.priced(i):
            continue
        if complementary and any(catalog.substitutes(i, m) for m in members):
            continue
        chosen.append((i, source))
        members.append(i)
        taken.add(i)
    return chosen


def candidates(
    catalog: BundleCatalog,
    seed: Seed,
    copurchase: Mapping[str, Sequence[tuple[str, int]]],
    unit_embeddings: np.ndarray | None,
    seed_vector: np.ndarray | None = None,
    n_neighbours: int = 50,
) -> list[tuple[int, Source]]:
    """Co-purchase partners of the seed first, then its nearest items in the embedding space."""
    out: list[tuple[int, Source]] = []
    for partner, _ in copurchase.get(seed.facts.item_id, ()) if seed.index is not None else ():
        j = catalog.index.get(partner)
        if j is not None:
            out.append((j, "copurchase"))
    if unit_embeddings is not None:
        vector = (
            seed_vector
            if seed_vector is not None
            else (unit_embeddings[seed.index] if seed.index is not None else None)
        )
        if vector is not None and float(np.abs(vector).sum()) > 0:
            exclude = [seed.index] if seed.index is not None else []
            out.extend((j, "embedding") for j in nearest(unit_embeddings, vector, n_neighbours, exclude))
    return out


def make_bundle(
    catalog: BundleCatalog,
    seed: Seed,
    copurchase: Mapping[str, Sequence[tuple[str, int]]],
    unit_embeddings: np.ndarray | None,
    size: int = DEFAULT_SIZE,
    seed_vector: np.ndarray | None = None,
) -> Bundle | None:
    """A bundle around ``seed`` (None when fewer than two items fit the rules)."""
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise ValueError(f"bundle size must be {MIN_SIZE}..{MAX_SIZE}, not {size}")
    if seed.index is not None and not catalog.priced(seed.index):
        return None  # a bundle has a total: a catalog seed without a price has none
    found = candidates(catalog, seed, copurchase, unit_embeddings, seed_vector, n_neighbours=20 * size)
    chosen = choose(catalog, seed, found, size)
    if len(chosen) < MIN_SIZE:
        return None
    total = round(float(sum(catalog.prices[i] for i, _ in chosen)), 2)
    return Bundle(
        seed=seed.facts.item_id,
        item_ids=tuple(catalog.item_ids[i] for i, _ in chosen),
        sources=tuple(s for _, s in chosen),
        total_price=total,
        seed_in_bundle=seed.index is not None,
    )


# -- copy -----------------------------------------------------------------------------------------
def bundle_facts(catalog: BundleCatalog, bundle: Bundle) -> Facts:
    """The facts a bundle's copy may use: its items (title, brand, categories, price)."""
    return Facts(items=tuple(catalog.facts[catalog.index[i]] for i in bundle.item_ids))


def explanation_facts(item: ItemFacts, history: ItemFacts) -> Facts:
    """``item`` recommended because of ``history``: both items and the attributes they share."""
    shared: list[str] = []
    if item.brand and history.brand and fold(item.brand) == fold(history.brand):
        shared.append(item.brand)
    category = common_category([item, history])
    if category:
        shared.append(category)
    return Facts(items=(item, history), extra=tuple(shared))


def _describe(item: ItemFacts, currency: str = "$") -> str:
    parts = [item_name(item)]
    if item.brand:
        parts.append(f"by {item.brand}")
    if item.categories:
        parts.append(f"({item.categories[-1]})")
    if item.price is not None:
        parts.append(f"{currency}{item.price:.2f}")
    return " ".join(parts)


def prompt(kind: Kind, facts: Facts) -> str:
    """The user prompt for one text of ``kind`` from its facts (the system prompt is the caller's)."""
    listing = "\n".join(f"- {_describe(i, facts.currency)}" for i in facts.items)
    if kind == "bundle_name":
        # Given the theme, the model copies it into the name instead of listing the items.
        theme = set_theme(facts.items)
        theme_line = f"Its theme: {theme}.\n" if theme else ""
        return (
            f"These products are sold together as a set:\n{listing}\n{theme_line}"
            "Write a short catchy name for the set, at most five words. Answer with the name only."
        )
    if kind == "bundle_description":
        total = facts.total_price
        price = f" The set costs {facts.currency}{total:.2f} in all." if total is not None else ""
        return (
            f"These products are sold together as a set:\n{listing}\n{price}\n"
            "Write one sentence that tells a shopper why they go well together. "
            "Mention only the products above."
        )
    if kind == "explanation":
        item, history = facts.items[0], facts.items[1]
        shared = f" They share: {', '.join(facts.extra)}." if facts.extra else ""
        return (
            f"A shopper liked: {_describe(history, facts.currency)}.\n"
            f"We recommend: {_describe(item, facts.currency)}.{shared}\n"
            "Write one short sentence telling the shopper why we recommend it. "
            "Mention only these two products."
        )
    raise ValueError(f"unknown kind {kind!r}")


SYSTEM_PROMPT = "You write short, factual shop copy. Never invent product names, brands or prices."
SERVED_MAX_NEW_TOKENS = 48  # a three-item description with its total fits; past it, a text is cut off
# > 1 on the answer's own tokens: stops a text looping on what it wrote. The prompt's tokens are
# not penalised: counted, they pushed the tuned model off the exact names it must copy
# ("Volum' Express" came out as "Volumn Express", a name not in the facts).
SERVED_REPETITION_PENALTY = 1.1


def served_config(batch_size: int = 8, max_new_tokens: int = SERVED_MAX_NEW_TOKENS) -> GenerationConfig:
    """How serving writes copy (greedy, under :data:`SYSTEM_PROMPT`): :func:`write_copy` uses it
    and the evaluation measures ``raw_pass_rate`` with it, so the rate gated is the served one."""
    from ml.generation.generate import GenerationConfig

    return GenerationConfig(
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        system_prompt=SYSTEM_PROMPT,
        repetition_penalty=SERVED_REPETITION_PENALTY,
        penalize_prompt=False,
    )


def failure_rules(reasons: Iterable[str]) -> tuple[str, ...]:
    """The rule names of a grounding check's reasons ("number not in facts: 3" -> "number not in
    facts"), each once, in order: monitoring counts failures per rule, not per wording."""
    return tuple(dict.fromkeys(r.split(":", 1)[0].strip() for r in reasons))


@dataclass
class CopyStats:
    """How the copy of one batch was made: generated (passed), fallback (failed), template."""

    generated: int = 0
    fallback: int = 0
    template: int = 0
    seconds: float = 0.0
    failures: dict[str, int] = field(default_factory=dict)
    failed: dict[int, tuple[str, ...]] = field(default_factory=dict)
    """Request position -> the rules its generated text failed (fallbacks only; not in as_dict)."""

    @property
    def attempted(self) -> int:
        return self.generated + self.fallback

    @property
    def raw_pass_rate(self) -> float | None:
        return self.generated / self.attempted if self.attempted else None

    def as_dict(self) -> dict[str, object]:
        return {
            "generated": self.generated,
            "fallback": self.fallback,
            "template": self.template,
            "raw_pass_rate": None if self.raw_pass_rate is None else round(self.raw_pass_rate, 4),
            "seconds": round(self.seconds, 2),
            "failure_rules": dict(sorted(self.failures.items())),
        }


def write_copy(
    requests: Sequence[tuple[Kind, Facts]],
    generator: Generator | None = None,
    *,
    budget_s: float = 0.0,
    batch_size: int = 8,
    max_new_tokens: int = SERVED_MAX_NEW_TOKENS,
    brands: BrandIndex | None = None,
    phone_regions: Sequence[str] = ("US", "GB"),
) -> tuple[list[tuple[str, CopyStatus]], CopyStats]:
    """The text to serve for each (kind, facts), generated in batches while the budget lasts.

    Each generated text goes through :func:`grounding.ground`; requests left when the budget is
    spent (or without a generator) get the template. The batch that crosses the budget finishes.

    Returns:
        (text, status) per request in order, and the counts (``raw_pass_rate`` over what was
        generated, the failing rules by name).
    """
    out: list[tuple[str, CopyStatus]] = [(template(kind, facts), "template") for kind, facts in requests]
    stats = CopyStats(template=len(requests))
    if generator is None or budget_s <= 0 or not requests:
        return out, stats
    from ml.generation.generate import generate

    config = served_config(batch_size, max_new_tokens)
    started = time.perf_counter()
    for first in range(0, len(requests), batch_size):
        if time.perf_counter() - started >= budget_s:
            break
        chunk = requests[first : first + batch_size]
        result = generate(generator, [prompt(kind, facts) for kind, facts in chunk], config)
        for offset, ((kind, facts), text) in enumerate(zip(chunk, result.texts, strict=True)):
            grounded = ground(text, facts, kind, brands=brands, phone_regions=phone_regions)
            stats.template -= 1
            if grounded.fallback:
                stats.fallback += 1
                rules = failure_rules(grounded.check.reasons)
                stats.failed[first + offset] = rules
                for rule in rules:
                    stats.failures[rule] = stats.failures.get(rule, 0) + 1
                out[first + offset] = (grounded.text, "fallback")
            else:
                stats.generated += 1
                out[first + offset] = (grounded.text, "generated")
    stats.seconds = time.perf_counter() - started
    return out, stats


def copy_counts(texts: Iterable[tuple[str, Sequence[str]]]) -> dict[str, object]:
    """What one response served, for its request log line: texts served, how many the generator
    wrote and passed (generated), wrote but failed the check (fallback: the template was served),
    or never wrote (template), and the failed rules counted per rule.

    Monitoring sums these per interval (``ml.monitoring.run.copy_quality``).
    """
    counts: dict[str, int] = {"generated": 0, "fallback": 0, "template": 0}
    failures: dict[str, int] = {}
    for status, rules in texts:
        counts[status] += 1
        for rule in rules:
            failures[rule] = failures.get(rule, 0) + 1
    return {"served": sum(counts.values()), **counts, "failures": dict(sorted(failures.items()))}


def with_copy(
    bundle: Bundle,
    name: tuple[str, CopyStatus],
    description: tuple[str, CopyStatus],
    failures: Sequence[str] = (),
) -> Bundle:
    """The bundle with its name and description; its status is the weaker of the two."""
    order: dict[CopyStatus, int] = {"generated": 0, "fallback": 1, "template": 2}
    status = max(name[1], description[1], key=order.__getitem__)
    return Bundle(
        bundle.seed,
        bundle.item_ids,
        bundle.sources,
        bundle.total_price,
        bundle.seed_in_bundle,
        name[0],
        description[0],
        status,
        (name[1], description[1]),
        tuple(dict.fromkeys(failures)),
    )


def template_copy(catalog: BundleCatalog, bundle: Bundle) -> Bundle:
    """The bundle with its template name and description (the miss path: microseconds)."""
    facts = bundle_facts(catalog, bundle)
    return with_copy(
        bundle,
        (template("bundle_name", facts), "template"),
        (template("bundle_description", facts), "template"),
    )


def bundles_frame(bundles: Sequence[Bundle]) -> pd.DataFrame:
    """Bundles as a frame (one row each, lists as JSON-able lists) for a version's package."""
    return pd.DataFrame(
        {
            "seed": [b.seed for b in bundles],
            "item_ids": [list(b.item_ids) for b in bundles],
            "sources": [list(b.sources) for b in bundles],
            "total_price": [b.total_price for b in bundles],
            "name": [b.name for b in bundles],
            "description": [b.description for b in bundles],
            "copy": [b.copy for b in bundles],
            "copies": [list(b.copies) for b in bundles],
            "failures": [list(b.failures) for b in bundles],
        }
    )


def read_bundles(frame: pd.DataFrame) -> dict[str, Bundle]:
    """Seed item id → its packaged bundle (a frame of :func:`bundles_frame`)."""
    out: dict[str, Bundle] = {}
    for row in frame.to_dict("records"):
        out[str(row["seed"])] = Bundle(
            seed=str(row["seed"]),
            item_ids=tuple(str(i) for i in row["item_ids"]),
            sources=tuple(row["sources"]),
            total_price=None if pd.isna(row["total_price"]) else float(row["total_price"]),
            name=str(row["name"]),
            description=str(row["description"]),
            copy=row["copy"],
            # A package written before per-text statuses: both texts count with the bundle's.
            copies=tuple(str(c) for c in row["copies"]) if "copies" in row else (row["copy"], row["copy"]),  # type: ignore[arg-type]
            failures=tuple(str(r) for r in row["failures"]) if "failures" in row else (),
        )
    return out


# -- a version's packaged bundles and explanations ----------------------------------------------
BUNDLES_DIR = "bundles"
CATALOG_FILE, BUNDLES_FILE, EXPLANATIONS_FILE, STATS_FILE = (
    "catalog.parquet",
    "bundles.parquet",
    "explanations.parquet",
    "stats.json",
)


def all_nearest(unit_embeddings: np.ndarray, k: int, chunk: int = 1024) -> np.ndarray:
    """Each row's ``k`` nearest other rows (cosine, best first), in chunks of matrix products."""
    n = len(unit_embeddings)
    k = max(0, min(k, n - 1))
    out = np.zeros((n, k), dtype=np.int64)
    if k == 0:
        return out
    for first in range(0, n, chunk):
        scores = unit_embeddings[first : first + chunk] @ unit_embeddings.T
        rows = np.arange(len(scores))
        scores[rows, first + rows] = -np.inf
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
        out[first : first + chunk] = np.take_along_axis(top, order, axis=1)
    return out


@dataclass(frozen=True)
class Packaged:
    """What :func:`package` wrote: file paths and the copy statistics."""

    folder: str
    bundles: int
    explanations: int
    stats: dict[str, object]


def package(
    folder: str | object,
    catalog: BundleCatalog,
    unit_embeddings: np.ndarray,
    copurchase: Mapping[str, Sequence[tuple[str, int]]],
    popularity: Sequence[str],
    generator: Generator | None = None,
    *,
    budget_s: float = 0.0,
    size: int = DEFAULT_SIZE,
    explanation_neighbours: int = 3,
    brands: BrandIndex | None = None,
    phone_regions: Sequence[str] = ("US", "GB"),
) -> Packaged:
    """Bundles for every catalog item and explanations for its nearest items, with their copy.

    Args:
        folder: where the files go (``<version>/bundles/``).
        catalog: the items, row-aligned with ``unit_embeddings`` (a model's item table, padding
            row included: it has no price and never joins a bundle).
        unit_embeddings: normalised item vectors (the recommender's).
        copurchase: item → partners (:func:`partners`).
        popularity: item ids, most popular first: their copy is generated first, so the budget
            goes where the traffic is; the rest get the template.
        generator: the loaded generator (None: template copy only).
        budget_s: seconds the generator may spend on the whole batch.
        size: items per bundle (seed included).
        explanation_neighbours: per item, how many of its nearest items get an explanation
            "recommended because you had this item" cached.
    """
    import json
    from pathlib import Path

    out = Path(str(folder))
    out.mkdir(parents=True, exist_ok=True)
    neighbours = all_nearest(unit_embeddings, max(20 * size, explanation_neighbours))
    bundles: dict[str, Bundle] = {}
    for i, item in enumerate(catalog.item_ids):
        if not catalog.priced(i):
            continue
        seed = Seed(catalog.facts[i], i)
        found = [(int(j), "embedding") for j in neighbours[i]]
        co = [(catalog.index[p], "copurchase") for p, _ in copurchase.get(item, ()) if p in catalog.index]
        chosen = choose(catalog, seed, [*co, *found], size)  # type: ignore[list-item]
        if len(chosen) >= MIN_SIZE:
            bundles[item] = Bundle(
                seed=item,
                item_ids=tuple(catalog.item_ids[j] for j, _ in chosen),
                sources=tuple(s for _, s in chosen),
                total_price=round(float(sum(catalog.prices[j] for j, _ in chosen)), 2),
            )
    # Rows without a vector (a model's padding row) explain nothing and are nobody's neighbour.
    has_vector = np.linalg.norm(unit_embeddings, axis=1) > 0
    pairs: list[tuple[int, int]] = [
        (int(j), i)
        for i in range(len(catalog))
        if catalog.facts[i].title and has_vector[i]
        for j in [j for j in neighbours[i] if has_vector[j]][:explanation_neighbours]
    ]
    rank = {item: r for r, item in enumerate(popularity)}
    last = len(rank)
    # Requests in popularity order: a popular seed's name and description, then the explanations
    # of items recommended after a popular history item.
    requests: list[tuple[int, Kind, Facts, object]] = []
    for item, bundle in bundles.items():
        facts = bundle_facts(catalog, bundle)
        r = rank.get(item, last)
        requests.append((r, "bundle_name", facts, ("bundle", item)))
        requests.append((r, "bundle_description", facts, ("bundle", item)))
    for rec, hist in pairs:
        facts = explanation_facts(catalog.facts[rec], catalog.facts[hist])
        requests.append((rank.get(catalog.item_ids[hist], last), "explanation", facts, (rec, hist)))
    requests.sort(key=lambda r: r[0])
    texts, stats = write_copy(
        [(kind, facts) for _, kind, facts, _ in requests],
        generator,
        budget_s=budget_s,
        brands=brands,
        phone_regions=phone_regions,
    )
    names: dict[str, tuple[str, CopyStatus]] = {}
    descriptions: dict[str, tuple[str, CopyStatus]] = {}
    failed: dict[str, list[str]] = {}
    explanations: list[tuple[str, str, str, CopyStatus, list[str]]] = []
    for position, ((_, kind, _, key), text) in enumerate(zip(requests, texts, strict=True)):
        rules = list(stats.failed.get(position, ()))
        if kind == "bundle_name":
            names[str(key[1])] = text  # type: ignore[index]
            failed.setdefault(str(key[1]), []).extend(rules)  # type: ignore[index]
        elif kind == "bundle_description":
            descriptions[str(key[1])] = text  # type: ignore[index]
            failed.setdefault(str(key[1]), []).extend(rules)  # type: ignore[index]
        else:
            rec, hist = key  # type: ignore[misc]
            explanations.append((catalog.item_ids[rec], catalog.item_ids[hist], text[0], text[1], rules))
    finished = [with_copy(b, names[s], descriptions[s], failed.get(s, ())) for s, b in bundles.items()]
    catalog.frame().to_parquet(out / CATALOG_FILE, index=False)
    bundles_frame(finished).to_parquet(out / BUNDLES_FILE, index=False)
    # Each text keeps its status and failed rules: the Bento logs them per served text (monitoring).
    pd.DataFrame(explanations, columns=["item_id", "history_item_id", "text", "copy", "failures"]).to_parquet(
        out / EXPLANATIONS_FILE, index=False
    )
    summary: dict[str, object] = {
        "bundles": len(finished),
        "bundle_sources": dict(
            sorted(pd.Series([s for b in finished for s in b.sources[1:]]).value_counts().items())
        ),
        "explanations": len(explanations),
        "copy": stats.as_dict(),
        "generator": getattr(generator, "name", None),
        "budget_s": budget_s,
    }
    (out / STATS_FILE).write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return Packaged(str(out), len(finished), len(explanations), summary)
