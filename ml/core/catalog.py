"""Catalog rules shared by the warehouse (dbt), the data-quality suites and the models.

* Price bands: ``PRICE_BANDS`` is the one list; ml.data.transform passes it to dbt as the var
  ``price_bands`` (dim_items.price_bucket) and the marts suite accepts exactly its labels.
* Item text: what the text encoder reads, assembled exactly as ``dim_items.item_text`` (a test feeds
  the same rows through both).
* Category paths as the landing contract writes them (``A > B > C``).
"""

from __future__ import annotations

import ast
import re

import pandas as pd

# Ascending upper bounds of the fixed price bands (dbt receives them as var price_bands).
PRICE_BANDS = (5, 10, 25, 50, 100)


# -- item text ---------------------------------------------------------------------------------
def price_bucket(price: float | None) -> str:
    """The price band of dim_items.price_bucket (closed lower, open upper bound)."""
    if price is None or pd.isna(price):
        return "unknown"
    lower: int | None = None
    for upper in PRICE_BANDS:
        if price < upper:
            return f"under {upper}" if lower is None else f"{lower}-{upper}"
        lower = upper
    return f"{PRICE_BANDS[-1]}+"


def price_bucket_labels() -> list[str]:
    """Every value ``price_bucket`` can take, in band order (``unknown`` first)."""
    lower = [None, *PRICE_BANDS]
    return ["unknown", *(price_bucket(float(b if b is not None else 0)) for b in lower)]


def item_text(
    item_id: str,
    title: str | None = None,
    brand: str | None = None,
    categories: str | None = None,
    price: float | None = None,
    description: str | None = None,
) -> str:
    """The encoder's text for an item, assembled exactly as dim_items.item_text."""

    def present(value: object) -> bool:
        return value is not None and not (isinstance(value, float) and pd.isna(value))

    band = f"price: {price_bucket(price)}" if present(price) else None
    # Without a title an item is named by its id: titleless items that share a brand or category
    # must still get distinct texts (and so distinct vectors).
    parts = [
        title if present(title) else f"item {item_id}",
        f"brand: {brand}" if present(brand) else None,
        f"category: {categories}" if present(categories) else None,
        band,
        str(description)[:500] if present(description) else None,
    ]
    return " | ".join(str(p) for p in parts if p is not None)


def item_texts(items: pd.DataFrame) -> pd.Series:
    """Each item's encoder text: its ``item_text`` column, else :func:`item_text` of its fields."""
    if "item_text" in items.columns:
        return items["item_text"].astype(str)
    return pd.Series(
        [
            item_text(
                str(row.item_id),
                getattr(row, "title", None),
                getattr(row, "brand", None),
                getattr(row, "categories", None),
                getattr(row, "price", None),
                getattr(row, "description", None),
            )
            for row in items.itertuples(index=False)
        ],
        index=items.index,
    )


def normalize_categories(values: pd.Series) -> pd.Series:
    """Category paths as 'A > B > C', from a quoted list ("'A', 'B'"), 'A|B' or 'A > B'."""

    def one(value: object) -> object:
        if value is None or (isinstance(value, float) and pd.isna(value)):
            return None
        text = str(value).strip()
        parts: list[str]
        if text[:1] in {"'", '"', "["}:
            try:
                parsed = ast.literal_eval(text if text.startswith("[") else f"[{text}]")
                parts = [str(p) for p in parsed]
            except (ValueError, SyntaxError):
                parts = [text]
        else:
            parts = re.split(r"\s*[|>]\s*", text)
        return " > ".join(p.strip() for p in parts if p.strip()) or None

    return values.map(one).astype("object")
