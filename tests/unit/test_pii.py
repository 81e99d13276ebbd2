"""PII: salted hashing is stable and salt-dependent; scrubbing removes contacts, keeps product text."""

from datetime import date, datetime

import pandas as pd
import pytest

from ml.core import pii, schemas
from ml.core.settings import Settings
from ml.data.ingest import FileLoad, IngestSummary, to_raw


def test_hash_ids_is_stable_salted_and_keeps_nulls() -> None:
    ids = pd.Series(["A1", "A2", None, "A1"], dtype="object")
    first, again, other_salt = pii.hash_ids(ids, "s1"), pii.hash_ids(ids, "s1"), pii.hash_ids(ids, "s2")
    assert first.tolist() == again.tolist()
    assert first[0] == first[3] and first[0] != first[1]
    assert first[2] is None
    assert other_salt[0] != first[0]
    assert len(first[0]) == 20 and "A1" not in first[0]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mail me at jane.doe+shop@example.co.uk today", "mail me at [email] today"),
        ("call +44 20 7946 0958 now", "call [phone] now"),
        # Valid area codes: the old cases "(555) 123-4567" / "555.123.4567" have area code 555,
        # which no number has (libphonenumber rejects it), so they are not phone numbers.
        ("call (212) 555-0123", "call [phone]"),
        ("ring 415.555.2671!", "ring [phone]!"),
        ("text +1 415-555-2671 or 4155552671", "text [phone] or [phone]"),
        ("toll free 1-800-275-2273 ext. 12, thanks", "toll free [phone], thanks"),
        ("UK office 020 7946 0018 / mobile 07911 123456", "UK office [phone] / mobile [phone]"),
        ("Berlin +49 30 901820, Paris +33 1 42 68 53 00", "Berlin [phone], Paris [phone]"),
        ("me@shop.com, (617) 253-1000", "[email], [phone]"),
    ],
)
def test_scrub_text_removes_emails_and_phones(text: str, expected: str) -> None:
    assert pii.scrub_text(pd.Series([text]), ["US", "GB"]).iloc[0] == expected


@pytest.mark.parametrize(
    "title",
    [
        "15CM CHRISTMAS GLASS BALL 20 LIGHTS",
        "Shampoo 12 x 250 ml, 2013 edition",
        "Eyeshadow Palette 120 Colors",
        "Nail polish set 3.4 oz / 100 ml",
        # What the old digit-counting regex turned into [phone] (issue 16): part numbers,
        # string gauges, a UPC, a run of sizes.
        "Replacement cartridge 099-0502-000",
        "Guitar strings 45-65-85-105",
        "Hair Chalk Beauty Kit, 6pc - UPC: 700580458542",
        "Kolinsky Acrylic Nail Brush Round Size 16 18 20 22 (20)",
    ],
)
def test_scrub_text_leaves_product_text_alone(title: str) -> None:
    assert pii.scrub_text(pd.Series([title]), ["US", "GB"]).iloc[0] == title


def test_scrub_text_keeps_missing_values() -> None:
    out = pii.scrub_text(pd.Series([None, "x@y.com"], dtype="object"))
    assert out.iloc[0] is None and out.iloc[1] == "[email]"


def test_national_formats_follow_the_regions_international_ones_do_not() -> None:
    text = "London 020 7946 0018, New York (212) 555-0123, Sydney +61 2 9374 4000"
    assert pii.scrub(text, ["US"]) == "London 020 7946 0018, New York [phone], Sydney [phone]"
    assert pii.scrub(text, ["GB"]) == "London [phone], New York (212) 555-0123, Sydney [phone]"
    assert pii.scrub(text, ["US", "GB"]) == "London [phone], New York [phone], Sydney [phone]"


def test_the_regions_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SHOPFLOW_PII_PHONE_REGIONS", raising=False)
    assert Settings().pii_phone_regions == ["US", "GB"]
    monkeypatch.setenv("SHOPFLOW_PII_PHONE_REGIONS", '["DE"]')
    assert Settings().pii_phone_regions == ["DE"]


def test_ingest_counts_the_values_the_scrubber_changed() -> None:
    contract = schemas.INTERACTIONS
    frame = pd.DataFrame({column.name: [None, None, None] for column in contract.columns})
    frame["review_text"] = ["call (212) 555-0123", "part 099-0502-000", None]
    scrubbed: dict[str, int] = {}
    raw = to_raw(
        frame,
        contract,
        source="shop",
        partition=date(2024, 10, 1),
        relative_file="shop/x/2024-10-01.csv",
        run_id="r",
        salt="s",
        loaded_at=datetime(2024, 10, 2),
        phone_regions=["US"],
        scrubbed=scrubbed,
    )
    assert raw["review_text"].tolist()[:2] == ["call [phone]", "part 099-0502-000"]
    assert scrubbed == {"review_text": 1}
    day = date(2024, 10, 1)
    summary = IngestSummary("r", day, day)
    summary.files += [
        FileLoad("shop", "items", day, "a", 3, {"title": 2}),
        FileLoad("shop", "items", day, "b", 3, {"title": 1, "description": 4}),
        FileLoad("shop", "interactions", day, "c", 3),
    ]
    assert summary.scrubbed_by_column == {"shop.items.title": 3, "shop.items.description": 4}
