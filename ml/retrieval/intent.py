"""Query intent: price limits, a brand and a category from the catalog's real values, the rest.

``IntentParser(facts).parse("maybeline mascara under $10")`` →
``QueryIntent(brand="Maybelline", category="Mascara", max_price=10.0, terms="")``.

* Prices: "under $20", "below 15", "less than 20", "up to 20", "over 30", "at least 30", "between
  10 and 15", "$10-$15", "10 to 15 dollars"; "cheap" (and "affordable", "budget", "inexpensive")
  means under :data:`CHEAP_MAX`, "luxury" (and "premium", "high end") at least :data:`LUXURY_MIN`.
* Brands and categories are matched against the values the catalog really has, case-insensitive,
  with apostrophes and dots ignored ("loreal" is "L'Oreal Paris", "elf" is "e.l.f. Cosmetics"),
  categories by stemmed words ("shampoo" is "Shampoos"), and typos tolerated through rapidfuzz
  (``fuzz.ratio`` ≥ :data:`FUZZY_CUTOFF` on phrases of 5+ letters that are not themselves a word
  of the catalog's texts, so a real word is never "corrected").
* A brand whose name is more often a phrase in the titles of other brands' items than the name of
  its own items ("Organic", "Classic", "Fresh") is never taken as a brand: "organic shampoo" is no
  brand filter.
* ``terms`` is what is left once the price, brand and category phrases are taken out.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

import rapidfuzz
import Stemmer

from ml.retrieval.facts import CATEGORY_SEPARATOR, CatalogFacts

CHEAP_MAX = 10.0
"""'cheap' means under this (the two lowest price bands of ml.core.catalog.PRICE_BANDS)."""
LUXURY_MIN = 50.0
"""'luxury' means at least this (the two highest bands)."""
FUZZY_CUTOFF = 85.0
FUZZY_MIN_CHARS = 5
MAX_PHRASE_WORDS = 4
BRAND_SUFFIXES = frozenset(
    {"cosmetics", "paris", "professional", "beauty", "inc", "co", "company", "labs", "usa", "international"}
)
"""Words a brand is often named without ("L'Oreal Paris" is asked for as "loreal")."""
CHEAP_WORDS = ("cheap", "cheapest", "inexpensive", "affordable", "budget", "low cost", "low priced")
LUXURY_WORDS = ("luxury", "premium", "high end", "high-end", "expensive")

_NUMBER = r"\$?\s*(\d+(?:\.\d+)?)\s*(?:\$|dollars?|usd|bucks)?"
_PRICE_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    ("range", re.compile(rf"\bbetween\s+{_NUMBER}\s+(?:and|to|-)\s+{_NUMBER}", re.I)),
    ("range", re.compile(rf"(?<![\w.])\${_NUMBER}\s*(?:-|–|to)\s*{_NUMBER}", re.I)),
    (
        "range",
        re.compile(
            r"(?<![\w.$])(\d+(?:\.\d+)?)\s*(?:-|–|to)\s*(\d+(?:\.\d+)?)\s*(?:\$|dollars?\b|usd\b|bucks\b)",
            re.I,
        ),
    ),
    (
        "max",
        re.compile(
            rf"\b(?:under|below|less\s+than|cheaper\s+than|up\s+to|at\s+most|max(?:imum)?|no\s+more\s+than|"
            rf"within)\s+{_NUMBER}|<\s*=?\s*{_NUMBER}",
            re.I,
        ),
    ),
    (
        "min",
        re.compile(
            rf"\b(?:over|above|more\s+than|at\s+least|min(?:imum)?|from|pricier\s+than)\s+{_NUMBER}|>\s*=?\s*{_NUMBER}",
            re.I,
        ),
    ),
]
_WORD = re.compile(r"[a-z0-9]+")


@dataclass(frozen=True)
class QueryIntent:
    """What a query asks for.

    Attributes:
        brand: a brand as the catalog spells it, or None.
        category: a category name as the catalog spells it (one level of a path), or None.
        max_price: the price must be below this (None: no limit).
        min_price: the price must be at least this (None: no limit).
        terms: the query's remaining free text.
        text: the query without its price phrases (what the lexical index is asked).
    """

    brand: str | None = None
    category: str | None = None
    max_price: float | None = None
    min_price: float | None = None
    terms: str = ""
    text: str = ""

    def public(self) -> dict[str, Any]:
        """The intent as an API returns it (without the internal ``text``)."""
        out = asdict(self)
        out.pop("text")
        return out


def key(text: str) -> str:
    """A name as matched: lower case, apostrophes and dots dropped, other punctuation a space."""
    text = re.sub(r"['’`.]", "", text.lower())
    return " ".join(_WORD.findall(text))


def brand_base(brand: str) -> str:
    """A brand's family key: its :func:`key` without corporate suffixes and spaces ("L'Oreal Paris",
    "L'Oreal" and "LOREAL" are all "loreal"), so a brand filter keeps every spelling."""
    words = key(brand).split()
    while len(words) > 1 and words[-1] in BRAND_SUFFIXES:
        words = words[:-1]
    return "".join(words)


class IntentParser:
    """Parses queries against a catalog's brands and categories (built once per catalog).

    Args:
        facts: the catalog (brands, category paths and titles are read).
        fuzzy_cutoff: the least ``rapidfuzz.fuzz.ratio`` (0-100) of a typo'd phrase to a name.
    """

    def __init__(self, facts: CatalogFacts, fuzzy_cutoff: float = FUZZY_CUTOFF) -> None:
        self._stemmer = Stemmer.Stemmer("english")
        self.fuzzy_cutoff = fuzzy_cutoff
        brand_counts = Counter(b for b in facts.brands if b)
        self.brands = self._brand_keys(facts, brand_counts)
        self.categories = self._category_keys(facts)
        self.known_words = {w for t in facts.titles for w in _WORD.findall(key(t))}
        self.known_words |= {w for b in brand_counts for w in key(b).split()}

    # -- vocabularies --------------------------------------------------------------------------
    def _stem(self, phrase: str) -> str:
        return " ".join(self._stemmer.stemWords(phrase.split()))

    def _brand_keys(self, facts: CatalogFacts, counts: Counter[str]) -> dict[str, str]:
        """Match key → brand (the most common spelling of its family), ambiguous names left out."""
        family: Counter[str] = Counter()
        for brand, n in counts.items():
            family[brand_base(brand)] += n
        keys: dict[str, str] = {}
        for brand, _ in counts.most_common():
            full = key(brand)
            words = full.split()
            while len(words) > 1 and words[-1] in BRAND_SUFFIXES:
                words = words[:-1]
            for alias in (full, full.replace(" ", ""), " ".join(words), "".join(words)):
                if len(alias) >= 2:
                    keys.setdefault(alias, brand)
        # How often each key is a phrase in the titles of items of another brand. Items of no known
        # brand, or of a brand whose name has the phrase ("Christian Dior" for "Dior"), do not count:
        # theirs is the same brand, spelled apart.
        elsewhere: Counter[str] = Counter()
        for title, item_brand in zip(facts.titles, facts.brands, strict=True):
            if not item_brand:
                continue
            words = key(title).split()
            grams = {
                " ".join(words[i : i + n])
                for n in range(1, MAX_PHRASE_WORDS + 1)
                for i in range(len(words) - n + 1)
            }
            own, base = f" {key(item_brand)} ", brand_base(item_brand)
            for gram in grams & keys.keys():
                if f" {gram} " not in own and brand_base(keys[gram]) != base:
                    elsewhere[gram] += 1
        return {k: b for k, b in keys.items() if elsewhere[k] <= family[brand_base(b)]}

    def _category_keys(self, facts: CatalogFacts) -> dict[str, str]:
        """Stemmed key → category name: each level below the root, then the parts of a composite
        name ("Creams, Gels & Lotions"), most common first."""
        counts: Counter[str] = Counter()
        for path in facts.categories:
            if path:
                counts.update(set(path.split(CATEGORY_SEPARATOR)[1:]))
        names: dict[str, str] = {}
        for name, _ in counts.most_common():
            names.setdefault(self._stem(key(name)), name)
        for name, _ in counts.most_common():
            for part in re.split(r",|&|/|\band\b", name):
                stemmed = self._stem(key(part))
                if stemmed:
                    names.setdefault(stemmed, name)
        return names

    # -- parsing -------------------------------------------------------------------------------
    def parse(self, query: str) -> QueryIntent:
        """The intent of one query (see the module docstring)."""
        text = f" {query} "
        low, high = None, None
        for kind, pattern in _PRICE_PATTERNS:
            for match in pattern.finditer(text):
                values = [float(v) for v in match.groups() if v is not None]
                if kind == "range" and len(values) == 2:
                    low, high = min(values), max(values)
                elif kind == "max" and values:
                    high = values[0] if high is None else min(high, values[0])
                elif kind == "min" and values:
                    low = values[0] if low is None else max(low, values[0])
                text = text.replace(match.group(0), " ")
        for words, bound in ((CHEAP_WORDS, "max"), (LUXURY_WORDS, "min")):
            for word in words:
                pattern = re.compile(rf"\b{re.escape(word)}\b", re.I)
                if pattern.search(text):
                    text = pattern.sub(" ", text)
                    if bound == "max" and high is None:
                        high = CHEAP_MAX
                    if bound == "min" and low is None:
                        low = LUXURY_MIN
        search_text = " ".join(text.split())

        tokens = search_text.split()
        keys = [key(t) for t in tokens]
        used = [not k for k in keys]
        brand = self._take(keys, used, self.brands, stem=False)
        category = self._take(keys, used, self.categories, stem=True)
        terms = " ".join(t for t, u in zip(tokens, used, strict=True) if not u)
        return QueryIntent(brand, category, high, low, terms, search_text)

    def _take(self, keys: list[str], used: list[bool], names: dict[str, str], stem: bool) -> str | None:
        """The first name matched by a run of unused tokens (longest runs first, exact before
        fuzzy); its tokens are marked used."""
        for fuzzy in (False, True):
            for n in range(min(MAX_PHRASE_WORDS, len(keys)), 0, -1):
                for i in range(len(keys) - n + 1):
                    if any(used[i : i + n]):
                        continue
                    words = " ".join(keys[i : i + n]).split()
                    phrase = " ".join(words)
                    candidates = [self._stem(phrase) if stem else phrase]
                    if not stem and n > 1:
                        candidates.append("".join(words))
                    found = None
                    for candidate in candidates:
                        if not fuzzy:
                            found = names.get(candidate)
                        elif len(candidate.replace(" ", "")) >= FUZZY_MIN_CHARS and not all(
                            w in self.known_words for w in words
                        ):
                            best = rapidfuzz.process.extractOne(
                                candidate,
                                names.keys(),
                                scorer=rapidfuzz.fuzz.ratio,
                                score_cutoff=self.fuzzy_cutoff,
                            )
                            found = names[best[0]] if best else None
                        if found:
                            break
                    if found:
                        used[i : i + n] = [True] * n
                        return found
        return None
