"""PII handling at the warehouse's door: salted hashing of user ids, scrubbing of free text."""

from __future__ import annotations

import hashlib
import re

import pandas as pd

EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
# A phone-number candidate: digits with the separators people write. Checked for 9-15 digits
# afterwards, so sizes and pack counts in product titles ("12 x 250 ml") are left alone.
PHONE_CANDIDATE = re.compile(r"(?<![\w])\+?\(?\d[\d\s().-]{7,}\d(?![\w])")
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


def _replace_phone(match: re.Match[str]) -> str:
    digits = sum(ch.isdigit() for ch in match.group(0))
    return PHONE_TOKEN if 9 <= digits <= 15 else match.group(0)


def scrub_text(values: pd.Series) -> pd.Series:
    """Replace email addresses and phone numbers in free text with placeholder tokens."""
    mask = values.notna()
    if not mask.any():
        return values
    text = values[mask].astype(str)
    text = text.str.replace(EMAIL, EMAIL_TOKEN, regex=True)
    text = text.str.replace(PHONE_CANDIDATE, _replace_phone, regex=True)
    out = values.astype("object").copy()
    out[mask] = text
    return out


def user_hash(user_id: str | None) -> str | None:
    """A short, stable digest of a user id for the request log (ids never appear in logs)."""
    if user_id is None:
        return None
    return hashlib.sha256(user_id.encode()).hexdigest()[:16]
