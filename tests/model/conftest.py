"""Small real models for the model tests: the packaged MiniLM encoder, tiny catalogs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ml.core.settings import PROJECT_DIR
from ml.modeling.datasets import TrainingData, from_frames

BEAUTY = PROJECT_DIR / "data" / "amazon_beauty_2014_5core"


def successor(item: int, n_items: int) -> int:
    """The planted pattern: item i is always followed by this item (a permutation of 1..n)."""
    return (item * 7 + 3) % n_items + 1


def planted_frames(
    n_items: int = 30, n_users: int = 240, length: int = 8, seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Users walking the planted successor chain from random starts."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        item = int(rng.integers(1, n_items + 1))
        for position in range(1, length + 1):
            rows.append({"user_id": f"u{u:04d}", "item_id": f"i{item:03d}", "position": position})
            item = successor(item, n_items)
    examples = pd.DataFrame(rows)
    colours = ["red", "blue", "green", "black", "white", "pink"]
    kinds = ["lipstick", "shampoo", "mascara", "perfume", "nail polish"]
    items = pd.DataFrame(
        {
            "item_id": [f"i{i:03d}" for i in range(1, n_items + 1)],
            "item_text": [
                f"{colours[i % len(colours)]} {kinds[i % len(kinds)]} number {i}"
                for i in range(1, n_items + 1)
            ],
        }
    )
    return examples, items


@pytest.fixture(scope="session")
def planted_successor() -> Callable[[int, int], int]:
    """The planted successor function (tests cannot import conftest)."""
    return successor


@pytest.fixture(scope="session")
def planted_data() -> TrainingData:
    examples, items = planted_frames()
    return from_frames(examples, items, source="toy")


@pytest.fixture(scope="session")
def beauty_items() -> pd.DataFrame:
    """A few real Beauty items from five leaf categories (lipsticks among them)."""
    from ml.core.catalog import item_text, normalize_categories

    items = pd.read_parquet(
        BEAUTY / "items.parquet", columns=["item_id", "title", "categories", "brand", "price"]
    )
    items["categories"] = normalize_categories(items["categories"])
    leaves = ["Lipstick", "Mascara", "Shampoos", "Nail Polish", "Eau de Parfum"]
    picked = []
    for leaf in leaves:
        rows = items[items["categories"].fillna("").str.endswith(f"> {leaf}")]
        picked.append(rows.sort_values("item_id").head(16).assign(leaf=leaf))
    out = pd.concat(picked, ignore_index=True)
    out["item_text"] = [
        item_text(r.item_id, r.title, r.brand, r.categories, r.price) for r in out.itertuples(index=False)
    ]
    return out


@pytest.fixture(scope="session")
def tmp_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One embedding cache for the whole session (the catalogs are tiny)."""
    return tmp_path_factory.mktemp("embedding_cache")
