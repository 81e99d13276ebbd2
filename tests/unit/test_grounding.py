"""The grounding check on hand-written grounded and hallucinated texts, and its templates."""

from __future__ import annotations

import pandas as pd
import pytest

from ml.core.settings import PROJECT_DIR
from ml.generation.grounding import (
    KINDS,
    LIMITS,
    BrandIndex,
    Facts,
    ItemFacts,
    Limits,
    check,
    common_category,
    fold,
    ground,
    item_name,
    shared_leaf,
    short_title,
    template,
)

BEAUTY_ITEMS = PROJECT_DIR / "data" / "amazon_beauty_2014_5core" / "items.parquet"

OPI = ItemFacts(
    item_id="B0001433VI",
    title="OPI Start-to-finish Base Coat, Top Coat and Nail Strengthener, 0.5-Fluid Ounce",
    brand="OPI",
    categories=("Beauty", "Skin Care", "Hands & Nails", "Nail Treatments", "Nail Strengthening"),
    price=8.45,
)
ESSIE = ItemFacts(
    item_id="B001ESSIE1",
    title="Essie Nail Polish, Ballet Slippers",
    brand="Essie",
    categories=("Beauty", "Makeup", "Nails", "Nail Polish"),
    price=7.0,
)
LOREAL = ItemFacts(
    item_id="B00LOREAL1",
    title="L'Oreal Paris Voluminous Mascara, Black",
    brand="L&#39;Oreal Paris",
    categories=("Beauty", "Makeup", "Eyes", "Mascara"),
    price=5.99,
)
BUNDLE = Facts(items=(OPI, ESSIE))
BRANDS = BrandIndex(
    ["OPI", "Essie", "L&#39;Oreal Paris", "Olay", "Dove", "Harmony", "e.l.f. Cosmetics", "Estee Lauder"]
)


def reasons(text: str, facts: Facts = BUNDLE, kind: str = "bundle_description") -> tuple[str, ...]:
    return check(text, facts, kind=kind, brands=BRANDS).reasons  # type: ignore[arg-type]


# -- grounded texts pass ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "text",
    [
        "A nail care pair: the OPI base and top coat with Essie Ballet Slippers polish.",
        "Strengthen with OPI, then paint with Essie for $15.45 in all.",
        "Both for 15.45 dollars: a 0.5-fluid ounce OPI coat and an Essie polish.",
        "Two nail favourites: a strengthener at $8.45 and a polish at $7.00.",
        "Protect your nails with the Start-to-finish coat, then add Ballet Slippers.",
        "OPI and Essie: 2 steps to stronger, prettier nails.",
        "- Essie polish in Ballet Slippers;\n- OPI Nail Strengthener.",
        "I love this pair of nail treatments from OPI and Essie.",
    ],
)
def test_grounded_texts_pass(text: str) -> None:
    assert reasons(text) == ()


def test_folding_undoes_entities_accents_and_case() -> None:
    assert fold("L&#39;Oréal") == "l'oreal"
    facts = Facts(items=(LOREAL,))
    assert reasons("Volume with L’Oréal Paris: a Voluminous mascara in black.", facts) == ()
    assert reasons("Volume with L'Oreal Paris, in Black, for $5.99.", facts) == ()


# -- each rule catches its hallucination ---------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Pair OPI with a Dove body wash for soft hands.", ("brand not in facts: Dove",)),
        (
            "Essie and Olay Regenerist for hands and face.",
            ("brand not in facts: Olay", "name not in facts: Regenerist"),
        ),
        ("Finish with e.l.f. Cosmetics top coat.", ("brand not in facts: e.l.f. Cosmetics",)),
        ("A coat and a polish from OPI and Essie, now with Chanel glitter.", ("name not in facts: Chanel",)),
        ("The set costs $12.99 today, OPI and Essie included.", ("price not in facts: $12.99",)),
        ("Both for 16 dollars from OPI and Essie.", ("price not in facts: 16 dollars",)),
        ("Save 50% on OPI and Essie nail care.", ("number not in facts: 50",)),
        ("Three nail essentials from OPI and Essie.", ("number not in facts: Three",)),
        ("OPI and Essie, rated 4.8 by shoppers.", ("number not in facts: 4.8",)),
        ("Get the OPI XR200 coat with Essie polish.", ("code not in facts: XR200",)),
    ],
)
def test_hallucinations_fail_with_their_reason(text: str, expected: tuple[str, ...]) -> None:
    assert reasons(text) == expected


def test_harmless_uses_of_brand_words_and_numbers_pass() -> None:
    # A brand that is an ordinary word counts only when written as a name.
    assert reasons("Nail care in harmony: OPI and Essie.") == ()
    assert reasons("OPI and Essie, made for Harmony lovers.") == ("brand not in facts: Harmony",)
    # Numbers of the facts: item count, prices, total, numbers in titles, units on them.
    assert reasons("2 picks: 0.5 oz of OPI strengthener and Essie polish, $8.45 and $7.") == ()
    assert reasons("A 0.5oz OPI coat and an Essie polish.") == ()
    assert reasons("A 0.7oz OPI coat and an Essie polish.") == ("code not in facts: 7oz",)
    # A whole-dollar price must equal a price exactly: $8 is not $8.45.
    assert reasons("OPI coat at $8 with Essie polish.") == ("price not in facts: $8",)


def test_a_brand_in_the_facts_text_but_not_the_brand_field_passes() -> None:
    youth_dew = ItemFacts("B000C1VWIQ", "Youth Dew by Estee Lauder for Women - 2.2 Ounce EDP Spray", None)
    facts = Facts(items=(youth_dew,))
    assert reasons("Youth Dew by Estee Lauder, a 2.2 ounce spray.", facts, "explanation") == ()
    assert reasons("Youth Dew, like Olay perfume.", facts, "explanation") == ("brand not in facts: Olay",)


def test_item_ids_are_facts_and_other_codes_are_not() -> None:
    assert reasons("Item B0001433VI pairs with B001ESSIE1 for nails.") == ()
    assert reasons("Item B0001433VI pairs with B00XXXXXX9 for nails.") == ("code not in facts: B00XXXXXX9",)


def test_extra_facts_allow_their_words_and_numbers() -> None:
    facts = Facts(items=(ESSIE, OPI), extra=("shared: category Nails", "price band: 5-10"))
    assert reasons("Under 10 each, both for Nails.", facts, "explanation") == ()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Questions? Mail shop@example.com about OPI and Essie.", ("pii: e-mail address",)),
        ("Call (212) 555-0123 to order OPI and Essie.", ("pii: phone number",)),
        ("Call +44 20 7946 0018 to order OPI and Essie.", ("pii: phone number",)),
        ("Ask [email] about the OPI and Essie pair.", ("pii: scrubbed placeholder",)),
        ("See www.opi.com for OPI and Essie colours.", ("link: a URL is not a fact",)),
    ],
)
def test_pii_and_links_fail(text: str, expected: tuple[str, ...]) -> None:
    assert reasons(text) == expected


def test_a_part_number_is_not_a_phone_number() -> None:
    part = ItemFacts("B1", "Hair Clip 099-0502-000", None, (), 3.0)
    assert reasons("Hair Clip 099-0502-000 for thick hair.", Facts(items=(part,)), "explanation") == ()


def test_length_limits_per_kind_and_markup() -> None:
    assert reasons("", kind="explanation") == ("length: empty",)
    assert reasons("OPI coat.", kind="explanation") == ("length: 2 words < 4",)
    long_name = "Nail Care Duo With Base Coat And Polish Set"
    assert reasons(long_name, kind="bundle_name") == ("length: 9 words > 8",)
    long_chars = "OPI and Essie " + "strengthening" * 25 + "."
    assert reasons(long_chars, kind="bundle_description") == ("length: 340 characters > 320",)
    assert reasons("OPI and Essie<|im_end|> for nails.") == ("markup: chat template tokens left in the text",)
    assert reasons("assistant: OPI and Essie for nails.") == (
        "markup: chat template tokens left in the text",
    )
    custom = check("OPI and Essie nail care.", BUNDLE, limits=Limits(max_words=3))
    assert custom.reasons == ("length: 5 words > 3",)


def test_cut_off_looping_and_prompt_echoing_texts_fail() -> None:
    """Shapes the untuned SmolLM2 really produces (seen on Beauty bundles)."""
    assert reasons("A strengthener from OPI and an Essie polish, designed to", kind="explanation") == (
        "length: cut off (no closing punctuation)",
    )
    assert reasons('OPI and Essie, "the nail pair."') == ()  # a closing quote after the full stop
    looping = "OPI and Essie: a nail polish, a nail polish, a nail polish for you."
    assert reasons(looping) == ("repetition: 'a nail polish' 3 times",)
    assert reasons("Essie polish, a nail polish, a nail polish from OPI.") == ()  # twice is fine
    echo = "Essie Nail Polish, Ballet Slippers (brand: Essie, category: Beauty > Makeup, price: $7.00)."
    assert reasons(echo) == ("markup: fact labels copied from the prompt",)
    # A bundle name is not a sentence.
    assert reasons("Manicure Duo", kind="bundle_name") == ()


def test_bundle_names_may_invent_a_name_but_not_a_brand_or_number() -> None:
    assert reasons("The Perfect Manicure Duo", kind="bundle_name") == ()
    assert reasons("Dove Manicure Duo", kind="bundle_name") == ("brand not in facts: Dove",)
    assert reasons("Top 10 Manicure Picks", kind="bundle_name") == ("number not in facts: 10",)
    # In a description, the same invented capitalised words are names the facts lack.
    assert reasons("OPI and Essie: the Perfect Manicure Duo.") == (
        "name not in facts: Perfect",
        "name not in facts: Manicure",
        "name not in facts: Duo",
    )


def test_every_failure_is_reported() -> None:
    result = check("Olay at $99 - call 212-555-0123!", BUNDLE, kind="explanation", brands=BRANDS)
    assert not result
    assert result.reasons == (
        "pii: phone number",
        "price not in facts: $99",
        "brand not in facts: Olay",
    )


def test_without_a_brand_index_unknown_names_are_still_caught() -> None:
    assert check("OPI and Essie, like Olay lotion.", BUNDLE).reasons == ("name not in facts: Olay",)


# -- facts ----------------------------------------------------------------------------------------
def test_facts_from_catalog_records() -> None:
    row = {
        "item_id": 7,
        "title": "Lip Lock",
        "brand": "None",
        "categories": "Beauty > Makeup > Lips",
        "price": float("nan"),
    }
    item = ItemFacts.from_record(row)
    assert item == ItemFacts("7", "Lip Lock", None, ("Beauty", "Makeup", "Lips"), None)
    loreal = ItemFacts.from_record(
        {"item_id": "x", "title": "Mascara", "brand": "L&#39;Oreal Paris", "price": "5.99"}
    )
    assert (loreal.brand, loreal.price, loreal.categories) == ("L'Oreal Paris", pytest.approx(5.99), ())
    assert Facts(items=(OPI, ESSIE)).total_price == pytest.approx(15.45)
    assert Facts(items=(OPI, item)).total_price is None
    assert Facts(items=(OPI, ESSIE)).numbers() >= {0.5, 8.45, 7.0, 15.45, 2.0}


def test_brand_index_ignores_tiny_and_empty_brands_and_prefers_the_longest() -> None:
    index = BrandIndex(["e", "AB", "None", "Paul Mitchell", "Paul", ""])
    assert len(index) == 2
    assert [b for b, _, _ in index.find("Paul Mitchell shampoo and Paul gel")] == ["Paul Mitchell", "Paul"]


# -- templates and ground() -----------------------------------------------------------------------
def test_templates_read_well() -> None:
    # Only the root in common: named after the seed's own leaf, as serving's prompt gives it.
    assert template("bundle_name", Facts(items=(OPI, ESSIE))) == "Nail Strengthening Set"
    same_leaf = ItemFacts("B2", "OPI Nail Envy", "OPI", OPI.categories[:4], 12.0)
    assert template("bundle_name", Facts(items=(OPI, same_leaf))) == "Nail Treatments Set"
    brand_only = ItemFacts("B3", "OPI Lacquer", "OPI", (), 9.0)
    assert template("bundle_name", Facts(items=(OPI, brand_only))) == "OPI Set"
    assert template("bundle_name", Facts(items=(ESSIE, brand_only))) == "Nail Polish Set"
    assert template("bundle_name", Facts(items=(brand_only, ESSIE))) == "Bundle Set"
    assert template("bundle_description", BUNDLE) == (
        "A set of 2: OPI Start-to-finish Base Coat and Essie Nail Polish for $15.45 in all."
    )
    assert (
        template("explanation", Facts(items=(same_leaf, OPI)))
        == "Same brand as OPI Start-to-finish Base Coat: OPI."
    )
    assert (
        template("explanation", Facts(items=(ESSIE, OPI)))
        == "Also in Beauty, like OPI Start-to-finish Base Coat."
    )
    assert template("explanation", Facts(items=(ESSIE,))) == "Recommended: Essie Nail Polish."
    assert (
        short_title("Grisi Sulfur Soap with Lanolin for Acne - 2 Pack")
        == "Grisi Sulfur Soap with Lanolin for"
    )
    assert common_category([OPI, ESSIE]) == "Beauty"
    assert common_category([OPI, ItemFacts("x", "y")]) is None
    # Below the root only: "Beauty" alone is no theme.
    assert shared_leaf([OPI, ESSIE]) is None
    assert shared_leaf([OPI, same_leaf]) == "Nail Treatments"
    assert shared_leaf([OPI, ItemFacts("x", "y")]) is None
    # Copy names an item by its short title, else its id.
    assert item_name(ESSIE) == "Essie Nail Polish"
    assert item_name(ItemFacts("B0NOTITLE", "")) == "B0NOTITLE"
    with pytest.raises(ValueError, match="at least one item"):
        template("bundle_name", Facts(items=()))


@pytest.mark.parametrize("kind", KINDS)
def test_templates_pass_the_check_on_real_catalog_items(kind: str) -> None:
    items = pd.read_parquet(BEAUTY_ITEMS, columns=["item_id", "title", "brand", "categories", "price"])
    items["categories"] = items["categories"].str.replace("'", "").str.replace(", ", " > ")
    sample = items.sample(300, random_state=0)
    records = [ItemFacts.from_record(r) for r in sample.to_dict("records")]
    brands = BrandIndex(items["brand"].dropna().unique())
    failures = []
    for start in range(0, len(records) - 3, 3):
        facts = Facts(items=tuple(records[start : start + 3]))
        text = template(kind, facts)  # type: ignore[arg-type]
        result = check(text, facts, kind=kind, brands=brands)  # type: ignore[arg-type]
        if not result:
            failures.append((text, result.reasons))
    assert failures == []


def test_ground_serves_the_generated_text_or_the_template() -> None:
    ok = ground("  A nail pair from OPI and Essie. ", BUNDLE, "bundle_description", brands=BRANDS)
    assert (ok.text, ok.fallback, ok.check.passed) == ("A nail pair from OPI and Essie.", False, True)
    bad = ground("A Dove and Olay pair for $5.", BUNDLE, "bundle_description", brands=BRANDS)
    assert bad.fallback and bad.text == template("bundle_description", BUNDLE)
    assert bad.generated == "A Dove and Olay pair for $5."
    assert bad.check.reasons == (
        "price not in facts: $5",
        "brand not in facts: Dove",
        "brand not in facts: Olay",
    )


def test_limits_are_sane() -> None:
    for kind in KINDS:
        limits = LIMITS[kind]
        assert 1 <= limits.min_words < limits.max_words
        assert limits.max_chars > limits.max_words
