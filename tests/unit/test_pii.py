"""PII: salted hashing is stable and salt-dependent; scrubbing removes contacts, keeps product text."""

import pandas as pd
import pytest

from ml.core import pii


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
        ("call (555) 123-4567", "call [phone]"),
        ("ring 555.123.4567!", "ring [phone]!"),
    ],
)
def test_scrub_text_removes_emails_and_phones(text: str, expected: str) -> None:
    assert pii.scrub_text(pd.Series([text])).iloc[0] == expected


@pytest.mark.parametrize(
    "title",
    [
        "15CM CHRISTMAS GLASS BALL 20 LIGHTS",
        "Shampoo 12 x 250 ml, 2013 edition",
        "Eyeshadow Palette 120 Colors",
        "Nail polish set 3.4 oz / 100 ml",
    ],
)
def test_scrub_text_leaves_product_text_alone(title: str) -> None:
    assert pii.scrub_text(pd.Series([title])).iloc[0] == title


def test_scrub_text_keeps_missing_values() -> None:
    out = pii.scrub_text(pd.Series([None, "x@y.com"], dtype="object"))
    assert out.iloc[0] is None and out.iloc[1] == "[email]"
