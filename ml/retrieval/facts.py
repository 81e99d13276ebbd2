"""What search needs to know about each item: brand, category path and price range.

A catalog frame (``item_id, title, brand, categories, price``) gives exact prices. A model
version keeps only each item's encoder text (``title | brand: X | category: A > B | price: band |
description``, see :func:`ml.core.catalog.item_text`), so the serving path parses the facts back
from it: the price is then a band of ``ml.core.catalog.PRICE_BANDS`` and becomes a range (a
"10-25" item is somewhere in [10, 25)).
"""

from __future__ import annotations

import html
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ml.core.catalog import PRICE_BANDS, price_bucket

TEXT_SEPARATOR = " | "
BRAND_PREFIX = "brand: "
CATEGORY_PREFIX = "category: "
PRICE_PREFIX = "price: "
CATEGORY_SEPARATOR = " > "


def band_ranges() -> dict[str, tuple[float, float]]:
    """Each price band label (as :func:`price_bucket` writes it) → its [low, high) range."""
    bounds = [0.0, *(float(b) for b in PRICE_BANDS), math.inf]
    # price_bucket is the one owner of the labels: ask it for the label of each band's low end.
    return {price_bucket(low): (low, high) for low, high in itertools.pairwise(bounds)}


def clean(value: object) -> str | None:
    """A catalog string with HTML entities decoded (the Amazon data has ``L&#39;Oreal``), or None."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = html.unescape(str(value)).strip()
    return text or None


def parse_item_text(text: str) -> tuple[str, str | None, str | None, str | None]:
    """(title, brand, category path, price band label) of an item text; None where absent."""
    parts = text.split(TEXT_SEPARATOR)
    brand = category = band = None
    for part in parts[1:]:
        if brand is None and part.startswith(BRAND_PREFIX):
            brand = part[len(BRAND_PREFIX) :]
        elif category is None and part.startswith(CATEGORY_PREFIX):
            category = part[len(CATEGORY_PREFIX) :]
        elif band is None and part.startswith(PRICE_PREFIX):
            band = part[len(PRICE_PREFIX) :]
    return parts[0].strip(), clean(brand), clean(category), band


@dataclass(frozen=True)
class CatalogFacts:
    """Per-item facts, row-aligned with the item texts an index was built from.

    Attributes:
        item_ids: the item id of each row.
        titles: the title of each row.
        brands: the brand (entities decoded), None when unknown.
        categories: the category path ``A > B > C``, None when unknown.
        price_low: the lowest price the item may have (NaN when unknown).
        price_high: the highest (exclusive for a band; equal to ``price_low`` for an exact price;
            ``inf`` for the top band; NaN when unknown).
        price_bands: the band label of each row (None when unknown).
    """

    item_ids: list[str]
    titles: list[str]
    brands: list[str | None]
    categories: list[str | None]
    price_low: np.ndarray
    price_high: np.ndarray
    price_bands: list[str | None]

    def __len__(self) -> int:
        return len(self.item_ids)

    @property
    def exact_prices(self) -> bool:
        """Whether every known price is exact (from a catalog frame, not a band)."""
        known = ~np.isnan(self.price_low)
        return bool(np.all(self.price_low[known] == self.price_high[known]))

    def leaf(self, i: int) -> str | None:
        """The deepest category of row ``i``."""
        path = self.categories[i]
        return path.split(CATEGORY_SEPARATOR)[-1] if path else None

    @classmethod
    def from_texts(cls, item_ids: Sequence[str], texts: Sequence[str]) -> CatalogFacts:
        """Facts parsed from encoder item texts (what a model version keeps); prices are bands."""
        ranges = band_ranges()
        titles, brands, categories, bands = [], [], [], []
        low = np.full(len(texts), np.nan)
        high = np.full(len(texts), np.nan)
        for i, text in enumerate(texts):
            title, brand, category, band = parse_item_text(str(text))
            titles.append(title)
            brands.append(brand)
            categories.append(category)
            bands.append(band if band in ranges else None)
            if band in ranges:
                low[i], high[i] = ranges[band]
        return cls([str(i) for i in item_ids], titles, brands, categories, low, high, bands)

    @classmethod
    def from_frame(cls, items: pd.DataFrame) -> CatalogFacts:
        """Facts of a catalog frame (item_id, title, brand, categories as ``A > B``, price)."""
        price = pd.to_numeric(items["price"], errors="coerce").to_numpy(dtype=float)
        bands = [None if math.isnan(p) else price_bucket(p) for p in price]
        return cls(
            [str(i) for i in items["item_id"]],
            [clean(t) or f"item {i}" for t, i in zip(items["title"], items["item_id"], strict=True)],
            [clean(b) for b in items["brand"]],
            [clean(c) for c in items["categories"]],
            price.copy(),
            price.copy(),
            bands,
        )
