"""Package a version's bundles and explanations (the warehouse side of ``ml.generation.bundles``).

Called by ``register_challenger`` on the package folder before registration, so the bundles
travel with the model version and the Bento serves them from the packaged copy:

- the catalog with exact prices and categories: ``marts.dim_items`` of the training source
  (the run's snapshot keeps only item texts, whose prices are bands);
- co-purchase pairs: ``marts.fct_copurchase_pairs`` for a basket source (Online Retail: same
  invoice); for a review source (Beauty), pairs of the run's snapshot reviewed by the same user
  within 30 days (``window_pairs``);
- the trained model's item table (cosine) for items without enough co-purchase partners;
- copy written by the generator within ``settings.bundle_copy_budget_s`` (most popular items
  first), the template for the rest and for every text that fails the grounding check.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from ml.core.settings import Settings
from ml.core.warehouse import Warehouse
from ml.generation import bundles as b


def catalog_frame(settings: Settings, source: str) -> pd.DataFrame:
    """``marts.dim_items`` of one source: item_id, title, brand, categories, price."""
    warehouse = Warehouse(settings)
    with warehouse.connect() as con:
        return warehouse.read(
            "select item_id, title, brand, categories, price from marts.dim_items "
            "where source = :source order by item_id",
            {"source": source},
            con,
        )


def mart_pairs(settings: Settings, source: str) -> pd.DataFrame:
    """``marts.fct_copurchase_pairs`` of one source (empty for sources without baskets, and when
    the mart was not built: a warehouse built for the training marts alone)."""
    empty = pd.DataFrame({"item_a": [], "item_b": [], "n_baskets": []})
    warehouse = Warehouse(settings)
    with warehouse.connect() as con:
        # information_schema answers the same on DuckDB and PostgreSQL.
        found = warehouse.read(
            "select count(*) as n from information_schema.tables "
            "where table_schema = 'marts' and table_name = 'fct_copurchase_pairs'",
            {},
            con,
        )
        if int(found["n"].iloc[0]) == 0:
            return empty
        return warehouse.read(
            "select item_a, item_b, n_baskets from marts.fct_copurchase_pairs where source = :source",
            {"source": source},
            con,
        )


def aligned_catalog(items: pd.DataFrame, item_ids: list[str], texts: list[str]) -> b.BundleCatalog:
    """The catalog row-aligned with a model's item table; items the marts lack keep their text's title."""
    from ml.retrieval.facts import parse_item_text

    by_id = items.assign(item_id=items["item_id"].astype(str)).set_index("item_id")
    rows: list[dict[str, Any]] = []
    for item, text in zip(item_ids, texts, strict=True):
        if item in by_id.index:
            row = by_id.loc[item]
            rows.append(
                {"item_id": item, **{c: row.get(c) for c in ("title", "brand", "categories", "price")}}
            )
        else:
            title, brand, category, _ = parse_item_text(text)
            rows.append(
                {"item_id": item, "title": title, "brand": brand, "categories": category, "price": None}
            )
    return b.BundleCatalog(pd.DataFrame(rows))


def package_bundles(
    package: Path,
    examples: pd.DataFrame,
    items: pd.DataFrame,
    pairs: pd.DataFrame | None = None,
    *,
    generator_name: str | None = None,
    settings: Settings | None = None,
    budget_s: float = 0.0,
) -> b.Packaged:
    """Write ``<package>/bundles/`` for the model in ``<package>/model``.

    Args:
        package: the version folder being packaged (holds ``model/``).
        examples: the run's interactions (user_id, item_id, event_ts): popularity, and the
            30-day pairs when ``pairs`` is None or empty.
        items: the catalog (item_id, title, brand, categories, price).
        pairs: co-purchase pairs (item_a, item_b, n_baskets) of a basket source.
        generator_name: the generator to write copy with (needs ``settings`` for its cache).
        settings: for the generator cache and the PII check's phone regions.
        budget_s: the generator's time budget (0: template copy only).
    """
    from ml.generation.grounding import BrandIndex
    from ml.modeling.model import load

    model = load(package / "model")
    table = model.cached_table().float().cpu().numpy()
    catalog = aligned_catalog(items, [str(i) for i in model.item_ids], list(model.item_texts))
    if pairs is None or pairs.empty:
        pairs = b.window_pairs(examples, b.WINDOW_DAYS)
    popularity = examples.groupby("item_id")["user_id"].nunique().sort_values(ascending=False, kind="stable")
    generator = None
    if budget_s > 0 and generator_name and settings is not None:
        from ml import registry
        from ml.generation.load import DEFAULT_GENERATOR, load_generator

        if generator_name == DEFAULT_GENERATOR and registry.generator_champion(settings):
            # finetune_generator's champion (its gated tuned weights on this base) writes the copy.
            generator = registry.load_served_generator(settings)
        else:
            generator = load_generator(generator_name, cache_dir=settings.generator_cache_dir)
    brands = BrandIndex(str(x) for x in items["brand"].dropna()) if "brand" in items.columns else None
    return b.package(
        package / b.BUNDLES_DIR,
        catalog,
        b.unit_rows(table),
        b.partners(pairs),
        [str(i) for i in popularity.index],
        generator,
        budget_s=budget_s,
        brands=brands,
        phone_regions=settings.pii_phone_regions if settings is not None else ("US", "GB"),
    )


def package_run_bundles(package: Path, examples: pd.DataFrame, settings: Settings) -> dict[str, Any]:
    """:func:`package_bundles` for a training run: catalog and pairs from the marts of
    ``settings.train_source``, copy within ``settings.bundle_copy_budget_s``."""
    source = settings.train_source
    packaged = package_bundles(
        package,
        examples,
        catalog_frame(settings, source),
        mart_pairs(settings, source),
        generator_name="smollm2",
        settings=settings,
        budget_s=settings.bundle_copy_budget_s,
    )
    return packaged.stats
