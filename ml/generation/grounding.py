"""Grounded or nothing: check a generated text against the facts it was written from.

A text passes only if everything checkable in it comes from its facts (the items' titles, brands,
categories, prices and ids, plus any extra fact strings):

- **brands**: no brand of the catalog (``BrandIndex``) that is not among the facts;
- **names**: no capitalised word in mid-sentence (a product or brand name the catalog does not
  know) and no code (letters with digits: "M84", "XR200") that the facts do not contain; bundle
  names are exempt from the first rule (a bundle's name is new by nature);
- **numbers and prices**: every number is in the facts (a number of their text, a price, the
  total price, the item count); a price ($12.99, 12.99 dollars) is an item's price or the total;
  number words from two to twelve count as numbers;
- **PII**: no e-mail address or phone number (``ml.core.pii``'s detectors), no scrubbed
  placeholder, no link;
- **shape**: within the length limits of its kind, ends like a sentence (not cut off by the
  token budget), no three-word sequence more than twice (a looping model), no chat markup and no
  fact labels ("brand: ...") copied from the prompt.

Text is compared in words: lowercased, accents and HTML entities (``L&#39;Oreal``) undone, split
on everything that is not a letter or a digit, so "L'Oréal", "L'Oreal" and "l oreal" agree.
Everything here is pure Python and fast (microseconds to a millisecond per text).

When a text fails, :func:`ground` serves the template of its kind instead, which is built from the
facts alone and passes the check by construction (tests hold it to that).
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from ml.core.pii import EMAIL, EMAIL_TOKEN, PHONE_TOKEN, phone_spans

Kind = Literal["bundle_name", "bundle_description", "explanation"]
KINDS: tuple[Kind, ...] = ("bundle_name", "bundle_description", "explanation")

_WORD = re.compile(r"[^\W_]+")
# A number as written: 12, 1,000, 2.2 (a trailing sentence full stop is not a decimal point).
_NUMBER = re.compile(r"(?<![\d.,])\d+(?:,\d{3})*(?:\.\d+)?")
_PRICE = re.compile(
    r"(?P<symbol>[$£€])\s?(?P<value>\d+(?:,\d{3})*(?:\.\d+)?)"
    r"|(?P<value2>\d+(?:,\d{3})*(?:\.\d+)?)\s?(?:dollars?|usd|gbp|pounds?|euros?|eur)\b",
    re.IGNORECASE,
)
_UNIT_NUMBER = re.compile(r"(?<![\w.,])(\d+(?:,\d{3})*(?:\.\d+)?)[^\W\d_]{1,3}(?![^\W_])")
_LINK = re.compile(r"https?://|www\.", re.IGNORECASE)
_MARKUP = re.compile(
    r"<\|[^|]*\|>|<\/?s>|\[/?INST\]|^(?:assistant|user|system)\s*:", re.IGNORECASE | re.MULTILINE
)
# The prompt's fact layout ("brand: X, price: $Y") copied into the answer instead of prose.
_FACT_LABELS = re.compile(r"\b(?:brand|category|categories|price|item id)\s*:", re.IGNORECASE)
_SENTENCE_END = re.compile(r"[.!?…][\"'”’)\]]*$")
# Characters after which a capitalised word starts a sentence or a list item, not a name.
_SENTENCE_START = set(".!?:;\n\"'“‘(—–•*#")
NUMBER_WORDS = {
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
    "eleven": 11,
    "twelve": 12,
    "dozen": 12,
}
# Capitalised in mid-sentence without naming anything.
_ALWAYS_CAPITALISED = {"i"}
# Brand fields that name no brand.
_NOT_BRANDS = {"", "none", "unknown", "generic", "na", "n a", "other"}


def fold(text: str) -> str:
    """Lowercase, HTML entities decoded, accents removed: the form all comparisons use."""
    text = unicodedata.normalize("NFKD", html.unescape(text))
    return "".join(c for c in text if not unicodedata.combining(c)).lower()


def words(text: str) -> list[str]:
    """The folded words of ``text`` (runs of letters and digits)."""
    return _WORD.findall(fold(text))


def _number(value: str) -> float:
    return round(float(value.replace(",", "")), 4)


@dataclass(frozen=True)
class ItemFacts:
    """What is known about one item; a generated text may mention only these."""

    item_id: str
    title: str
    brand: str | None = None
    categories: tuple[str, ...] = ()
    price: float | None = None

    @classmethod
    def from_record(cls, record: Mapping[str, object]) -> ItemFacts:
        """From a catalog row: ``item_id``, ``title``, optional ``brand``, ``categories`` (a
        sequence or an ``"A > B > C"`` path) and ``price``; nulls and NaN become absent."""

        def present(value: object) -> bool:
            return value is not None and value == value  # NaN != NaN

        cats = record.get("categories")
        if isinstance(cats, str):
            categories = tuple(c.strip() for c in cats.split(">") if c.strip())
        elif isinstance(cats, Iterable) and present(cats):
            categories = tuple(str(c) for c in cats)
        else:
            categories = ()
        brand, price = record.get("brand"), record.get("price")
        brand_text = html.unescape(str(brand)).strip() if present(brand) else ""
        return cls(
            item_id=str(record["item_id"]),
            title=html.unescape(str(record.get("title") or "")).strip(),
            brand=brand_text if fold(brand_text) not in _NOT_BRANDS else None,
            categories=categories,
            price=float(price) if present(price) and isinstance(price, int | float | str) else None,
        )

    def strings(self) -> list[str]:
        return [self.item_id, self.title, self.brand or "", *self.categories]


@dataclass(frozen=True)
class Facts:
    """The facts one text was generated from: items and any extra fact strings.

    ``extra`` holds facts that are not an item's (the shared attribute of an explanation, a
    price band label); their words and numbers are allowed like the items'.
    """

    items: tuple[ItemFacts, ...]
    extra: tuple[str, ...] = ()
    currency: str = "$"

    @property
    def total_price(self) -> float | None:
        """The sum of the items' prices, when every item has one."""
        prices = [item.price for item in self.items]
        if not prices or any(p is None for p in prices):
            return None
        return round(sum(p for p in prices if p is not None), 2)

    def prices(self) -> set[float]:
        found = {round(item.price, 2) for item in self.items if item.price is not None}
        total = self.total_price
        return found | ({total} if total is not None else set())

    def strings(self) -> list[str]:
        return [s for item in self.items for s in item.strings()] + list(self.extra)

    def vocabulary(self) -> set[str]:
        """Every word of the facts, folded."""
        return {w for s in self.strings() for w in words(s)}

    def word_sequences(self) -> list[list[str]]:
        return [words(s) for s in self.strings()]

    def numbers(self) -> set[float]:
        """Every number the facts hold: in their text, the prices and total, the item count."""
        found = {_number(m.group()) for s in self.strings() for m in _NUMBER.finditer(html.unescape(s))}
        return found | self.prices() | {float(len(self.items))}

    def brands(self) -> set[str]:
        return {" ".join(words(item.brand)) for item in self.items if item.brand}


class BrandIndex:
    """The catalog's brands, looked up word sequence by word sequence (no regex alternation)."""

    def __init__(self, brands: Iterable[str]) -> None:
        self._by_words: dict[tuple[str, ...], str] = {}
        for brand in brands:
            key = tuple(words(brand))
            # One- and two-letter brands ("e", "ab") would match ordinary words; unnamed brands.
            if key and len("".join(key)) >= 3 and " ".join(key) not in _NOT_BRANDS:
                self._by_words.setdefault(key, html.unescape(brand).strip())
        self.max_words = max((len(k) for k in self._by_words), default=0)

    def __len__(self) -> int:
        return len(self._by_words)

    def find(self, text: str) -> list[tuple[str, tuple[str, ...], tuple[int, int]]]:
        """Brands named in ``text``: (brand, its words, its span in ``text``), longest match first.

        Only capitalised mentions count ("Dove", "DOVE"; not "a dove-grey case"), unless the
        brand itself is written lowercase ("e.l.f."): a brand that is also an ordinary word is a
        brand only when written as a name.
        """
        spans = [(m.span(), fold(m.group())) for m in _WORD.finditer(text)]
        found: list[tuple[str, tuple[str, ...], tuple[int, int]]] = []
        i = 0
        while i < len(spans):
            for n in range(min(self.max_words, len(spans) - i), 0, -1):
                key = tuple(w for _, w in spans[i : i + n])
                brand = self._by_words.get(key)
                start, end = spans[i][0][0], spans[i + n - 1][0][1]
                # "dove" in a lowercase sentence is a bird; "e.l.f." is written lowercase anyway.
                if brand is not None and not (text[start].islower() and not brand[0].islower()):
                    found.append((brand, key, (start, end)))
                    i += n
                    break
            else:
                i += 1
        return found


@dataclass(frozen=True)
class Limits:
    """The shape a text of one kind must have."""

    min_words: int = 1
    max_words: int = 40
    max_chars: int = 280
    allow_new_names: bool = False  # bundle names invent a name by nature
    sentences: bool = True  # ends like a sentence: a text cut off by the token budget fails
    max_repeats: int = 2  # how often one three-word sequence may occur (a looping model repeats)


LIMITS: dict[Kind, Limits] = {
    "bundle_name": Limits(min_words=1, max_words=8, max_chars=60, allow_new_names=True, sentences=False),
    "bundle_description": Limits(min_words=4, max_words=45, max_chars=320),
    "explanation": Limits(min_words=4, max_words=35, max_chars=240),
}


@dataclass(frozen=True)
class CheckResult:
    """Whether a text is grounded in its facts, and if not, every reason why."""

    passed: bool
    reasons: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return self.passed


def _in_sequences(key: Sequence[str], sequences: Iterable[Sequence[str]]) -> bool:
    n = len(key)
    return any(list(key) == list(seq[i : i + n]) for seq in sequences for i in range(len(seq) - n + 1))


def _starts_sentence(text: str, start: int) -> bool:
    before = text[:start]
    trimmed = before.rstrip(" \t")
    if not trimmed:
        return True
    if trimmed[-1] == "-":  # "- Item" is a list item or a dash; "Anti-Aging" is one word
        return len(trimmed) < len(before)
    return trimmed[-1] in _SENTENCE_START


def check(
    text: str,
    facts: Facts,
    *,
    kind: Kind = "explanation",
    limits: Limits | None = None,
    brands: BrandIndex | None = None,
    phone_regions: Sequence[str] = ("US", "GB"),
) -> CheckResult:
    """Check one generated text against the facts it was given.

    Args:
        text: the generated text.
        facts: the items (and extra strings) the prompt held.
        kind: which kind of text, for its length limits (``LIMITS``).
        limits: overrides the kind's limits.
        brands: the catalog's brands; without it only unknown capitalised names are caught.
        phone_regions: regions whose national phone formats count as phone numbers (the caller
            passes the setting ``pii_phone_regions``).

    Returns:
        Passed, or failed with the reasons (each ``"<rule>: <what>"``), in text order per rule.
    """
    limits = limits or LIMITS[kind]
    reasons: list[str] = []
    stripped = text.strip()
    n_words = len(_WORD.findall(stripped))
    if n_words < limits.min_words:
        reasons.append(f"length: {n_words} words < {limits.min_words}" if stripped else "length: empty")
    if n_words > limits.max_words:
        reasons.append(f"length: {n_words} words > {limits.max_words}")
    if len(stripped) > limits.max_chars:
        reasons.append(f"length: {len(stripped)} characters > {limits.max_chars}")
    if limits.sentences and stripped and not _SENTENCE_END.search(stripped):
        reasons.append("length: cut off (no closing punctuation)")
    folded = [fold(w) for w in _WORD.findall(stripped)]
    trigrams = Counter(zip(folded, folded[1:], folded[2:], strict=False))
    if trigrams and max(trigrams.values()) > limits.max_repeats:
        gram, times = trigrams.most_common(1)[0]
        reasons.append(f"repetition: '{' '.join(gram)}' {times} times")
    if _MARKUP.search(stripped):
        reasons.append("markup: chat template tokens left in the text")
    if _FACT_LABELS.search(stripped):
        reasons.append("markup: fact labels copied from the prompt")

    # PII and links
    if EMAIL.search(stripped):
        reasons.append("pii: e-mail address")
    phones = phone_spans(stripped, phone_regions)
    if phones:
        reasons.append("pii: phone number")
    if EMAIL_TOKEN in stripped or PHONE_TOKEN in stripped:
        reasons.append("pii: scrubbed placeholder")
    if _LINK.search(stripped):
        reasons.append("link: a URL is not a fact")

    # Prices, then the remaining numbers
    allowed_prices = facts.prices()
    allowed_numbers = facts.numbers()
    consumed: list[tuple[int, int]] = list(phones)  # a phone number's digits are reported once
    for m in _PRICE.finditer(stripped):
        value = _number(m.group("value") or m.group("value2"))
        consumed.append(m.span())
        if not any(abs(value - p) < 0.005 for p in allowed_prices):
            reasons.append(f"price not in facts: {m.group().strip()}")
    for m in _NUMBER.finditer(stripped):
        if any(a <= m.start() < b for a, b in consumed):
            continue
        # Digits inside a code ("M84", "2pk") are judged with the code below.
        if (m.start() > 0 and stripped[m.start() - 1].isalpha()) or (
            m.end() < len(stripped) and stripped[m.end()].isalpha()
        ):
            continue
        if _number(m.group()) not in allowed_numbers:
            reasons.append(f"number not in facts: {m.group()}")
    vocabulary = facts.vocabulary()
    # A number of the facts with a short unit ("0.5oz", "2pk") is judged as its number.
    units = [u.span() for u in _UNIT_NUMBER.finditer(stripped) if _number(u.group(1)) in allowed_numbers]
    for m in _WORD.finditer(stripped):
        token = fold(m.group())
        if (
            token in NUMBER_WORDS
            and float(NUMBER_WORDS[token]) not in allowed_numbers
            and token not in vocabulary
        ):
            reasons.append(f"number not in facts: {m.group()}")
        has_digit = any(c.isdigit() for c in token)
        if has_digit and not token.isdigit() and token not in vocabulary:
            if any(a <= m.start() < b for a, b in units):
                continue
            reasons.append(f"code not in facts: {m.group()}")

    # Brands of the catalog that are not the facts'
    sequences = facts.word_sequences()
    fact_brands = facts.brands()
    brand_spans: list[tuple[int, int]] = []
    for brand, key, span in brands.find(stripped) if brands is not None else []:
        brand_spans.append(span)
        if " ".join(key) not in fact_brands and not _in_sequences(key, sequences):
            reasons.append(f"brand not in facts: {brand}")

    # Names: capitalised words in mid-sentence that the facts do not contain
    if not limits.allow_new_names:
        for m in _WORD.finditer(stripped):
            word = m.group()
            token = fold(word)
            if not word[0].isupper() or token in vocabulary or token in _ALWAYS_CAPITALISED:
                continue
            if any(a <= m.start() < b for a, b in brand_spans) or _starts_sentence(stripped, m.start()):
                continue
            if any(c.isdigit() for c in token):
                continue  # judged as a code above
            reasons.append(f"name not in facts: {word}")
    return CheckResult(passed=not reasons, reasons=tuple(reasons))


# -- templates --------------------------------------------------------------------------------------
def short_title(title: str, max_words: int = 6) -> str:
    """The head of a title: up to its first comma, dash or parenthesis, at most ``max_words``."""
    head = re.split(r"\s*(?:,|\s-\s|\s–\s|\(|\|)\s*", title.strip(), maxsplit=1)[0] or title.strip()
    return " ".join(head.split()[:max_words])


def item_name(item: ItemFacts) -> str:
    """How copy names an item: its short title, else its id. The prompts list items by it, and
    the templates and the fine-tuning targets write it, so a text copies a name exactly as given."""
    return short_title(item.title) or item.item_id


def _common_path(items: Sequence[ItemFacts]) -> list[str]:
    paths = [item.categories for item in items if item.categories]
    if not paths or len(paths) < len(items):
        return []
    shared: list[str] = []
    for level in zip(*paths, strict=False):
        if len({fold(c) for c in level}) != 1:
            break
        shared.append(level[0])
    return shared


def common_category(items: Sequence[ItemFacts]) -> str | None:
    """The deepest category all items share (the bundle's theme), if any."""
    shared = _common_path(items)
    return shared[-1] if shared else None


def shared_leaf(items: Sequence[ItemFacts]) -> str | None:
    """The deepest category all items share below the root, if any: the root alone ("Beauty")
    names nothing a shopper would call a theme."""
    shared = _common_path(items)
    return shared[-1] if len(shared) > 1 else None


def set_theme(items: Sequence[ItemFacts]) -> str | None:
    """What a set of items is named after: the category they share below the root, else the
    first (the seed) item's own leaf category; None where the items carry no categories."""
    leaf = shared_leaf(items)
    if leaf is None and items and len(items[0].categories) > 1:
        leaf = items[0].categories[-1]
    return leaf


def _price(value: float, currency: str) -> str:
    return f"{currency}{value:.2f}"


def _join(parts: Sequence[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def template(kind: Kind, facts: Facts) -> str:
    """The fallback text of a kind, built from the facts alone.

    - ``bundle_name``: the category the items share below the root, else their shared brand,
      else the seed's own leaf category (:func:`set_theme`), plus "Set";
    - ``bundle_description``: the items' short titles and the total price;
    - ``explanation``: ``facts.items[0]`` is recommended because of ``facts.items[1]`` (the
      history item): what they share (brand, category), else just the link.
    """
    items = facts.items
    if not items:
        raise ValueError("a template needs at least one item")
    if kind == "bundle_name":
        # Named after the theme serving's prompt gives the generator (set_theme), so the template
        # and the generated names agree; a brand all items share before the seed's own leaf, and
        # never the root alone ("Beauty Set" names nothing).
        theme = shared_leaf(items)
        brands = {fold(i.brand) for i in items if i.brand}
        if theme is None and len(brands) == 1 and all(i.brand for i in items):
            theme = items[0].brand
        theme = theme or set_theme(items)
        name = f"{theme} Set" if theme else "Bundle Set"
        return name if len(name) <= LIMITS["bundle_name"].max_chars else "Bundle Set"
    if kind == "bundle_description":
        titles = [item_name(i) for i in items]
        total = facts.total_price
        price = f" for {_price(total, facts.currency)} in all" if total is not None else ""
        return f"A set of {len(items)}: {_join(titles)}{price}."
    if kind == "explanation":
        item, history = items[0], items[1] if len(items) > 1 else None
        name = item_name(item)
        if history is None:
            return f"Recommended: {name}."
        seen = item_name(history)
        if item.brand and history.brand and fold(item.brand) == fold(history.brand):
            return f"Same brand as {seen}: {item.brand}."
        shared = common_category([item, history])
        if shared:
            return f"Also in {shared}, like {seen}."
        return f"Picked for you after {seen}."
    raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS}")


@dataclass(frozen=True)
class Grounded:
    """The text to serve: the generated one when it passed, else the template."""

    text: str
    generated: str
    check: CheckResult
    fallback: bool = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "fallback", not self.check.passed)


def ground(
    generated: str,
    facts: Facts,
    kind: Kind,
    *,
    brands: BrandIndex | None = None,
    phone_regions: Sequence[str] = ("US", "GB"),
) -> Grounded:
    """Check a generated text and fall back to the kind's template when it fails."""
    result = check(generated, facts, kind=kind, brands=brands, phone_regions=phone_regions)
    served = generated.strip() if result.passed else template(kind, facts)
    return Grounded(text=served, generated=generated, check=result)
