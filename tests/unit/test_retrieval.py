"""ml.retrieval on a small real slice of the Beauty catalog: facts, query intent, BM25, fusion.

Dense vectors here are a cheap stand-in (hashed title words): the fusion and filter logic does not
care where the vectors come from, and the real encoder's quality is measured in
tests/serving/test_search_hybrid.py and the slow full-catalog test.
"""

from __future__ import annotations

import zlib

import numpy as np
import pandas as pd
import pytest

from ml.core.catalog import item_texts, normalize_categories, price_bucket, price_bucket_labels
from ml.core.settings import PROJECT_DIR
from ml.retrieval.facts import CatalogFacts, band_ranges, parse_item_text
from ml.retrieval.hybrid import MODES, HybridSearcher, rrf, top_indices
from ml.retrieval.intent import CHEAP_MAX, LUXURY_MIN, IntentParser, QueryIntent, brand_base, key
from ml.retrieval.lexical import LexicalIndex

ITEMS = PROJECT_DIR / "data" / "amazon_beauty_2014_5core" / "items.parquet"
BRANDS = (
    "Maybelline",
    "L&#39;Oreal Paris",
    "L&#39;Oreal",
    "OPI",
    "Neutrogena",
    "Burt&#39;s Bees",
    "e.l.f. Cosmetics",
    "COVERGIRL",
    "Revlon",
    "Organic",
)


@pytest.fixture(scope="module")
def items() -> pd.DataFrame:
    """Every item of a few real brands plus every 8th other item (~1,900 items)."""
    frame = pd.read_parquet(ITEMS, columns=["item_id", "title", "categories", "brand", "price"])
    frame["categories"] = normalize_categories(frame["categories"])
    keep = frame["brand"].isin(BRANDS) | (np.arange(len(frame)) % 8 == 0)
    return frame[keep].reset_index(drop=True)


@pytest.fixture(scope="module")
def facts(items: pd.DataFrame) -> CatalogFacts:
    return CatalogFacts.from_frame(items)


@pytest.fixture(scope="module")
def parser(facts: CatalogFacts) -> IntentParser:
    return IntentParser(facts)


def _hashed_vectors(texts: list[str], dim: int = 256) -> np.ndarray:
    out = np.zeros((len(texts), dim), dtype=np.float32)
    for row, text in enumerate(texts):
        for word in key(text).split():
            out[row, zlib.crc32(word.encode()) % dim] += 1.0
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


@pytest.fixture(scope="module")
def searcher(items: pd.DataFrame, facts: CatalogFacts) -> HybridSearcher:
    texts = item_texts(items).tolist()
    return HybridSearcher(facts, texts, _hashed_vectors(texts))


def _query_vector(query: str) -> np.ndarray:
    return _hashed_vectors([query])[0]


# -- facts ---------------------------------------------------------------------------------------
def test_band_ranges_invert_the_price_bands() -> None:
    ranges = band_ranges()
    assert list(ranges) == price_bucket_labels()[1:]  # every band but 'unknown', in order
    assert ranges["under 5"] == (0.0, 5.0)
    assert ranges["10-25"] == (10.0, 25.0)
    assert ranges["100+"] == (100.0, np.inf)
    for price in (0.0, 4.99, 5.0, 24.99, 25.0, 99.99, 100.0, 1234.0):
        low, high = ranges[price_bucket(price)]
        assert low <= price < high


def test_facts_parsed_from_item_texts_match_the_catalog(items: pd.DataFrame, facts: CatalogFacts) -> None:
    parsed = CatalogFacts.from_texts(items["item_id"].tolist(), item_texts(items).tolist())
    assert parsed.brands == facts.brands
    assert parsed.categories == facts.categories
    assert parsed.price_bands == facts.price_bands
    known = ~np.isnan(facts.price_low)
    assert np.isnan(parsed.price_low[~known]).all()
    assert (parsed.price_low[known] <= facts.price_low[known]).all()
    assert (facts.price_low[known] < parsed.price_high[known]).all()
    assert facts.exact_prices and not parsed.exact_prices
    assert "L'Oreal Paris" in facts.brands  # HTML entities decoded


def test_parse_item_text_without_optional_parts() -> None:
    assert parse_item_text("Rose Soap | price: 5-10") == ("Rose Soap", None, None, "5-10")
    assert parse_item_text("item 42") == ("item 42", None, None, None)
    text = "Kit | brand: A&amp;B | category: Beauty > Bath | price: under 5 | brand: not this"
    assert parse_item_text(text) == ("Kit", "A&B", "Beauty > Bath", "under 5")


# -- intent --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("maybelline mascara", QueryIntent("Maybelline", "Mascara", None, None, "")),
        ("Maybeline mascara under $10", QueryIntent("Maybelline", "Mascara", 10.0, None, "")),
        (
            "fragrance-free moisturizer under $15",
            QueryIntent(None, "Moisturizers", 15.0, None, "fragrance-free"),
        ),
        ("cheap shampoo", QueryIntent(None, "Shampoos", CHEAP_MAX, None, "")),
        ("red lipstick below 15", QueryIntent(None, "Lipstick", 15.0, None, "red")),
        ("loreal foundation between 10 and 15", QueryIntent("L'Oreal Paris", "Foundation", 15.0, 10.0, "")),
        ("Burts Bees lip balm $5-$10", QueryIntent("Burt's Bees", "Lips", 10.0, 5.0, "balm")),
        ("OPI nail polish less than 8 dollars", QueryIntent("OPI", "Nail Polish", 8.0, None, "")),
        ("revlon lipstick over $20", QueryIntent("Revlon", "Lipstick", None, 20.0, "")),
        ("elf brushes", QueryIntent("e.l.f. Cosmetics", "Brushes", None, None, "")),
        ("COVERGIRL mascara 5 to 10 dollars", QueryIntent("COVERGIRL", "Mascara", 10.0, 5.0, "")),
        ("cover girl clean foundation", QueryIntent("COVERGIRL", "Foundation", None, None, "clean")),
        ("neutrogna sunscreen", QueryIntent("Neutrogena", "Sunscreens", None, None, "")),
        ("luxury eau de parfum", QueryIntent(None, "Eau de Parfum", None, LUXURY_MIN, "")),
        ("gift for my sister", QueryIntent(None, None, None, None, "gift for my sister")),
    ],
)
def test_intent_of_hand_written_queries(parser: IntentParser, query: str, expected: QueryIntent) -> None:
    got = parser.parse(query)
    assert got.public() == expected.public()


def test_a_brand_that_is_mostly_an_ordinary_word_is_no_brand(
    parser: IntentParser, facts: CatalogFacts
) -> None:
    assert "Organic" in facts.brands  # a real brand of the slice, and a word of many other titles
    intent = parser.parse("organic shampoo")
    assert intent.brand is None
    assert intent.category == "Shampoos"
    assert intent.terms == "organic"


def test_a_real_word_is_never_corrected_into_a_brand(parser: IntentParser) -> None:
    # 'revive' is close to 'revlon'-like names only by edit distance; it is a word of the titles.
    assert parser.parse("revive serum").brand is None


def test_brand_spellings_share_a_family() -> None:
    assert brand_base("L'Oreal Paris") == brand_base("L'Oreal") == brand_base("LOREAL") == "loreal"
    assert brand_base("e.l.f. Cosmetics") == "elf"


def test_intent_text_keeps_brand_and_category_words_but_not_the_price(parser: IntentParser) -> None:
    intent = parser.parse("OPI red nail polish under $9.50")
    assert intent.max_price == pytest.approx(9.5)
    assert intent.text == "OPI red nail polish"
    assert intent.terms == "red"


# -- lexical -------------------------------------------------------------------------------------
def test_bm25_stems_and_drops_unknown_words() -> None:
    index = LexicalIndex(["Suave Shampoo for dry hair", "Matte red lipstick", "Volume mascara, black"])
    scores = index.scores("shampoos")
    assert scores[0] > 0 and scores[1] == scores[2] == 0
    assert index.scores("the zzzz").tolist() == [0.0, 0.0, 0.0]
    assert int(np.argmax(index.scores("black mascara"))) == 2


# -- fusion --------------------------------------------------------------------------------------
def test_rrf_adds_weighted_reciprocal_ranks() -> None:
    fused = rrf([np.array([2, 0]), np.array([0, 3])], [1.0, 0.5], size=5, k0=60)
    assert fused[0] == pytest.approx(1 / 62 + 0.5 / 61)
    assert fused[2] == pytest.approx(1 / 61)
    assert fused[3] == pytest.approx(0.5 / 62)
    assert fused[1] == fused[4] == 0.0


def test_top_indices_masks_orders_and_breaks_ties_by_row() -> None:
    scores = np.array([0.5, 0.9, 0.9, -np.inf, 0.1])
    assert top_indices(scores, 3).tolist() == [1, 2, 0]
    assert top_indices(scores, 10).tolist() == [1, 2, 0, 4]
    allowed = np.array([True, False, True, True, True])
    assert top_indices(scores, 2, allowed).tolist() == [2, 0]
    assert top_indices(scores, 0).tolist() == []
    assert top_indices(scores, 3, np.zeros(5, dtype=bool)).tolist() == []


# -- search --------------------------------------------------------------------------------------
def test_intent_filters_brand_and_price_and_boosts_the_category(searcher: HybridSearcher) -> None:
    query = "maybelline mascara under $8"
    result = searcher.search(query, k=10, query_vector=_query_vector(query))
    facts = searcher.facts
    assert result.mode == "hybrid_intent"
    assert result.indices
    for i in result.indices:
        assert brand_base(facts.brands[i] or "") == "maybelline" or "maybelline" in key(facts.titles[i])
        assert facts.price_low[i] < 8
    n_mascara = int((searcher.in_category("Mascara") & searcher.allowed(result.intent)).sum())
    top = result.indices[: min(5, n_mascara)]
    assert all("Mascara" in (facts.categories[i] or "") for i in top)
    assert result.scores == sorted(result.scores, reverse=True)


def test_brand_filter_keeps_every_spelling(searcher: HybridSearcher) -> None:
    intent = searcher.parser.parse("loreal")
    kept = np.flatnonzero(searcher.allowed(intent))
    brands = {searcher.facts.brands[i] for i in kept}
    assert brands == {"L'Oreal Paris", "L'Oreal", None}
    # An item of no recorded brand is kept only when its title names the brand.
    for i in kept:
        if searcher.facts.brands[i] is None:
            assert "loreal" in key(searcher.facts.titles[i])


def test_without_intent_the_filters_do_not_apply(searcher: HybridSearcher) -> None:
    query = "maybelline mascara under $8"
    for mode in ("hybrid", "dense", "bm25"):
        result = searcher.search(query, k=20, mode=mode, query_vector=_query_vector(query))
        assert result.intent.brand == "Maybelline"  # parsed and returned all the same
        allowed = searcher.allowed(result.intent)
        assert not all(allowed[i] for i in result.indices), mode


def test_nothing_fits_is_an_empty_answer_with_a_note(searcher: HybridSearcher) -> None:
    query = "OPI nail polish over $500"
    result = searcher.search(query, query_vector=_query_vector(query))
    assert result.indices == []
    assert result.note == "no item in the catalog has brand OPI and price at least $500"


def test_personal_scores_reorder_within_the_filters(searcher: HybridSearcher) -> None:
    query = "revlon lipstick"
    plain = searcher.search(query, k=10, query_vector=_query_vector(query))
    favourite = plain.indices[-1]
    user = np.zeros(len(searcher.facts))
    user[favourite] = 1.0
    personal = searcher.search(
        query, k=10, mode="hybrid_intent_personal", query_vector=_query_vector(query), user_scores=user
    )
    assert personal.indices.index(favourite) < plain.indices.index(favourite)
    assert all(searcher.facts.brands[i] == "Revlon" for i in personal.indices)


def test_bad_arguments_are_refused(searcher: HybridSearcher, facts: CatalogFacts) -> None:
    with pytest.raises(ValueError, match="unknown search mode"):
        searcher.search("soap", mode="semantic")
    with pytest.raises(ValueError, match="needs item vectors"):
        searcher.search("soap", mode="hybrid")
    assert searcher.search("soap", mode="bm25").indices  # BM25 alone needs no vector
    with pytest.raises(ValueError, match="must align"):
        HybridSearcher(facts, ["one text"])
    assert MODES == ("dense", "bm25", "hybrid", "hybrid_intent", "hybrid_intent_personal")
