"""PII handling at the warehouse's door: salted hashing of user ids, scrubbing of free text.

Scrubbing replaces e-mail addresses with ``[email]`` and phone numbers with ``[phone]``:

- E-mail addresses by a regular expression: the address syntax is regular enough that a pattern
  is the standard tool (PII libraries such as scrubadub and Presidio use one too).
- Phone numbers by Google's libphonenumber (the ``phonenumbers`` package): its matcher finds
  candidates in text, and only numbers that are *valid* for a numbering plan
  (``Leniency.VALID``: a real country code, area/range and length) count. Numbers written with
  ``+<country code>`` are found whatever the region; national formats ("(212) 555-0123",
  "020 7946 0018") are read in each of the given regions (setting ``pii_phone_regions``).
  Part numbers and size runs ("099-0502-000", "45-65-85-105") are not valid numbers, so product
  text is left alone. ``make bench-pii`` measures both on real text.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence

import pandas as pd
from phonenumbers import Leniency, PhoneNumberMatcher

from ml.core.settings import get_settings

EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
# The cheap check first: text with fewer than five digits holds no phone number (the shortest
# valid ones have seven with their country code), so it skips the libphonenumber pass.
_ENOUGH_DIGITS = re.compile(r"\d(?:\D*\d){4}")
EMAIL_TOKEN, PHONE_TOKEN = "[email]", "[phone]"


def hash_ids(values: pd.Series, salt: str) -> pd.Series:
    """Salted SHA-256 of each id, 20 hex chars; nulls stay null.

    The same id and salt always give the same hash, so reruns and later partitions join up.
    """
    prefix = f"{salt}:".encode()

    def one(value: object) -> object:
        if value is None or (isinstance(value, float) and pd.isna(value)) or value is pd.NA:
            return None
        return hashlib.sha256(prefix + str(value).encode()).hexdigest()[:20]

    return values.map(one).astype("object")


def _default_regions() -> Sequence[str]:
    return get_settings().pii_phone_regions


def phone_spans(text: str, regions: Iterable[str]) -> list[tuple[int, int]]:
    """``(start, end)`` of every valid phone number in ``text``, overlaps merged, in order."""
    if _ENOUGH_DIGITS.search(text) is None:
        return []
    spans: list[tuple[int, int]] = []
    for region in regions:
        for match in PhoneNumberMatcher(text, region.upper(), leniency=Leniency.VALID):
            raw = match.raw_string  # may keep a separator's blank ("... / 020 7946 0018")
            start = match.start + len(raw) - len(raw.lstrip())
            spans.append((start, start + len(raw.strip())))
    spans.sort()
    merged: list[tuple[int, int]] = []
    for start, end in spans:
        if merged and start < merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def scrub(text: str, regions: Sequence[str] | None = None) -> str:
    """One free-text value with its e-mail addresses and phone numbers replaced by tokens.

    Args:
        text: the value.
        regions: ISO 3166 regions whose national phone formats are recognised; None = the
            setting ``pii_phone_regions``.
    """
    regions = _default_regions() if regions is None else regions
    text = EMAIL.sub(EMAIL_TOKEN, text)
    for start, end in reversed(phone_spans(text, regions)):
        text = text[:start] + PHONE_TOKEN + text[end:]
    return text


def scrub_text(values: pd.Series, regions: Sequence[str] | None = None) -> pd.Series:
    """:func:`scrub` over a column; nulls stay null. Each distinct value is scrubbed once."""
    mask = values.notna()
    if not mask.any():
        return values
    regions = _default_regions() if regions is None else regions
    text = values[mask].astype(str)
    scrubbed = {value: scrub(value, regions) for value in text.unique()}
    out = values.astype("object").copy()
    out[mask] = text.map(scrubbed)
    return out


def changed_count(before: pd.Series, after: pd.Series) -> int:
    """How many non-null values scrubbing changed."""
    mask = before.notna()
    return int((before[mask].astype(str) != after[mask].astype(str)).sum())


def user_hash(user_id: str | None) -> str | None:
    """A short, stable digest of a user id for the request log (ids never appear in logs)."""
    if user_id is None:
        return None
    return hashlib.sha256(user_id.encode()).hexdigest()[:16]
