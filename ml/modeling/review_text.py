"""Item text from reviews, for catalogs without titles (issue 11, item 5).

Many review exports carry ratings and review text but no titles: every such item's catalog text
is then ``item <id>``, which tells the encoder nothing. Here an item's text is built from the
reviews written about it **in the training period only** (a validation or test event's review
would tell the model what that user picked), summarised to the encoder's budget. By default a
review counts only if its event is ``train`` under both the leave-one-out and the time split, so
the texts are safe for either protocol; ``protocol="loo"`` (or ``"time"``) reads every training
event of that protocol only (more items get text; evaluate only under that protocol then).

* ``terms`` (the default): the item's ``max_words`` most distinctive words by TF-IDF over the
  catalog (each item's training reviews are one document; English stop words and words of
  fewer than three letters dropped), most distinctive first. Simple, and an item's text names
  what its reviewers say that others' do not.
* ``sentences``: the review sentences closest to the item's TF-IDF profile (a sentence's score is
  the sum of its words' weights over the square root of its length), most representative
  first, until ``max_words`` words.

``rating_weight`` counts a word of a review by ``rating / 5`` (what satisfied reviewers say
weighs more). Items with no training review keep their catalog text.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable
from typing import Literal

import pandas as pd

Summary = Literal["terms", "sentences"]
PREFIX = "reviews: "
_WORD = re.compile(r"[a-z][a-z']+")
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
# English function words and review boilerplate: frequent everywhere, distinctive nowhere.
_STOP = """a about above after again against all also am an and any are aren't as at be because been
    before being below between both but by can can't cannot could couldn't did didn't do does
    doesn't doing don't down during each few for from further get got had hadn't has hasn't have
    haven't having he her here hers herself him himself his how i i'm i've if in into is isn't it
    it's its itself just let's me more most much my myself no nor not now of off on once only or
    other ought our ours ourselves out over own really same she should shouldn't so some such than
    that that's the their theirs them themselves then there there's these they they're this those
    through to too under until up use used using very was wasn't we we're were weren't what when
    where which while who whom why will with won't would wouldn't you you're your yours yourself
    one two three stars star five four item product products bought buy amazon would well even
    still ever every many lot lots"""
STOP_WORDS = frozenset(_STOP.split())


def words(text: str) -> list[str]:
    """Lower-case words of three letters or more, stop words dropped."""
    return [w for w in _WORD.findall(text.lower()) if len(w) >= 3 and w not in STOP_WORDS]


ReviewProtocol = Literal["both", "loo", "time"]


def training_reviews(examples: pd.DataFrame, protocol: ReviewProtocol = "both") -> pd.DataFrame:
    """The rows whose review may describe an item: training events (under both splits by default).

    ``examples`` carries ``item_id``, ``review_text`` (and optionally ``summary``, ``rating``) and
    the split labels ``loo_split`` / ``time_split`` (missing labels count as ``train``).
    """
    if protocol not in ("both", "loo", "time"):
        raise ValueError(f"protocol={protocol!r}: use 'both', 'loo' or 'time'")
    columns = ("loo_split", "time_split") if protocol == "both" else (f"{protocol}_split",)
    keep = pd.Series(True, index=examples.index)
    for column in columns:
        if column in examples.columns:
            keep &= examples[column].fillna("train").astype(str).eq("train")
    return examples[keep]


def _documents(rows: pd.DataFrame, rating_weight: bool) -> dict[str, list[tuple[str, float]]]:
    """Per item, its reviews' texts (summary first) with their weight."""
    texts = rows["review_text"].fillna("").astype(str)
    if "summary" in rows.columns:
        summary = rows["summary"].fillna("").astype(str)
        texts = (summary.where(summary.eq(""), summary + ". ") + texts).str.strip()
    weights = (
        (rows["rating"].fillna(5.0).astype(float) / 5.0).clip(0.0, 1.0)
        if rating_weight and "rating" in rows.columns
        else pd.Series(1.0, index=rows.index)
    )
    docs: dict[str, list[tuple[str, float]]] = {}
    for item, text, weight in zip(rows["item_id"].astype(str), texts, weights, strict=True):
        if text:
            docs.setdefault(item, []).append((text, float(weight)))
    return docs


def _tfidf(docs: dict[str, list[tuple[str, float]]]) -> dict[str, dict[str, float]]:
    """Per item, each word's weighted term frequency times its smooth inverse document frequency."""
    counts: dict[str, dict[str, float]] = {}
    for item, reviews in docs.items():
        tally: dict[str, float] = {}
        for text, weight in reviews:
            for word in words(text):
                tally[word] = tally.get(word, 0.0) + weight
        counts[item] = tally
    df: Counter[str] = Counter(w for tally in counts.values() for w in tally)
    n = len(counts)
    out = {}
    for item, tally in counts.items():
        total = sum(tally.values()) or 1.0
        out[item] = {w: (c / total) * (math.log((1 + n) / (1 + df[w])) + 1.0) for w, c in tally.items()}
    return out


def _sentences(reviews: Iterable[tuple[str, float]], weights: dict[str, float], budget: int) -> str:
    scored = []
    seen = set()
    for text, review_weight in reviews:
        for sentence in _SENTENCE.split(text):
            sentence = sentence.strip()
            key = sentence.lower()
            toks = words(sentence)
            if not toks or key in seen:
                continue
            seen.add(key)
            score = review_weight * sum(weights.get(w, 0.0) for w in toks) / math.sqrt(len(toks))
            scored.append((score, sentence))
    scored.sort(key=lambda s: -s[0])
    picked: list[str] = []
    used = 0
    for _, sentence in scored:
        n = len(sentence.split())
        if used and used + n > budget:
            continue
        picked.append(" ".join(sentence.split()[:budget]))
        used += min(n, budget)
        if used >= budget:
            break
    return " ".join(picked)


def review_texts(
    examples: pd.DataFrame,
    method: Summary = "terms",
    max_words: int = 32,
    rating_weight: bool = False,
    protocol: ReviewProtocol = "both",
) -> dict[str, str]:
    """Each reviewed item's text, from its training-period reviews (see the module docstring).

    Args:
        examples: interactions with ``item_id``, ``review_text`` (+ ``summary``, ``rating``) and
            the split labels; only :func:`training_reviews` rows are read.
        method: ``terms`` or ``sentences``.
        max_words: the summary's length in words (the encoder reads 64 tokens by default;
            32 words leave room for the prefix and word pieces).
        rating_weight: weight each review's words by ``rating / 5``.
        protocol: whose training events may be read: ``both`` splits' (default), ``loo`` or ``time``.

    Returns:
        ``{item_id: "reviews: ..."}`` for items with at least one training review.
    """
    if "review_text" not in examples.columns:
        return {}
    docs = _documents(training_reviews(examples, protocol), rating_weight)
    tfidf = _tfidf(docs)
    out = {}
    for item, weights in tfidf.items():
        if method == "terms":
            top = sorted(weights, key=lambda w: (-weights[w], w))[:max_words]
            body = " ".join(top)
        elif method == "sentences":
            body = _sentences(docs[item], weights, max_words)
        else:
            raise ValueError(f"method={method!r}: use 'terms' or 'sentences'")
        if body:
            out[item] = PREFIX + body
    return out


def is_titleless(item_id: str, text: str) -> bool:
    """Whether a catalog text names the item only by its id (ml.core.catalog.item_text's fallback)."""
    return not text or text == f"item {item_id}" or text.startswith(f"item {item_id} | ")


def with_review_text(
    examples: pd.DataFrame,
    text_of: dict[str, str],
    when: Literal["titleless", "always"] = "titleless",
    method: Summary = "terms",
    max_words: int = 32,
    rating_weight: bool = False,
    protocol: ReviewProtocol = "both",
) -> dict[str, str]:
    """``text_of`` with review-derived text for titleless items (or every item: ``always``).

    A titleless item's text becomes its review summary, followed by what the catalog did say
    (brand, category, price) without the id placeholder; with ``always`` the summary is
    appended to the catalog text.
    """
    reviews = review_texts(examples, method, max_words, rating_weight, protocol)
    out = dict(text_of)
    for item, summary in reviews.items():
        text = out.get(item, f"item {item}")
        if is_titleless(item, text):
            rest = text[len(f"item {item}") :].lstrip(" |")
            out[item] = summary + (f" | {rest}" if rest else "")
        elif when == "always":
            out[item] = f"{text} | {summary}"
    return out
