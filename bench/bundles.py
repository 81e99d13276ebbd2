"""Benchmark: bundle hit rate on a later period than the bundles were mined from, both datasets.

``make bench-bundles`` → ``bench/results/bundles.json``. For each dataset, bundles are mined from
the earlier period only and judged on the later one:

- **Online Retail II**: purchase lines as the ``int_retail_purchases_filtered`` model keeps them
  (no cancellations, product codes only, quantity and price > 0); mined before 2011-09-01,
  judged on 2011-09-01..2011-12-09. "Bought together" = on the same invoice.
- **Amazon Beauty 2014 5-core**: reviews; mined before 2014-01-01, judged on 2014-01-01..2014-07-23.
  "Bought together" = reviewed by the same user within 30 days.

Seeds: the ``--seeds`` items most bought in the mining period (priced, with a title), the same
seeds for every method. A bundle is a **hit** when at least two of its items were bought together
in the later period; the hit rate is hits / seeds (a method that cannot make a bundle of two items
for a seed scores a miss there, and its coverage says how often that happened).

Methods, all of ``--size`` items with the seed:

- ``shopflow``: co-purchase partners that are not substitutes (different leaf category; Online
  Retail: the product-type rule of ``ml.generation.bundles``), topped up from the item embeddings;
- ``copurchase_top``: baseline 1, the seed's top co-purchase partners alone (no rule, no top-up);
- ``category_popularity``: baseline 2, the most bought items of the seed's own category (Beauty:
  leaf category; Online Retail: the items the type rule calls the same product type);
- ``shopflow_no_rule``: ablation, shopflow without the complementarity rule.

The embeddings are the packaged MiniLM's vectors of the item texts (the text side the recommender
uses for items it has no interactions for), cached under ``<work_dir>/cache``.

What it can show: whether the mined bundles keep being bought together later, and how the
complementarity rule and the embedding top-up trade hit rate against variety. What it cannot: a
later co-purchase is observed without the bundle ever having been offered (no exposure, no
causal uplift), Beauty's "bought" is "reviewed" (5-core users only, so the later period is
shoppers already seen), and Online Retail is a wholesaler's invoices (big baskets make any pair
likelier to co-occur than in a consumer shop).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results" / "bundles.json"
RETAIL = ROOT / "data" / "uci_online_retail_ii" / "online_retail_ii.parquet"
BEAUTY = ROOT / "data" / "amazon_beauty_2014_5core"
RETAIL_CUTOFF, BEAUTY_CUTOFF = "2011-09-01", "2014-01-01"
PRODUCT_CODE = r"^(?:[0-9]{5}|DCGS[0-9])"  # dbt var retail_product_code_pattern

Together = Callable[[Sequence[str]], bool]


def retail_frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    """(purchase lines: invoice, item_id, ts, price; items: item_id, title, price)."""
    lines = pd.read_parquet(RETAIL)
    keep = (
        ~lines["Invoice"].astype(str).str.startswith("C")
        & lines["StockCode"].astype(str).str.match(PRODUCT_CODE)
        & (lines["Quantity"] > 0)
        & (lines["Price"] > 0)
    )
    lines = lines[keep]
    purchases = pd.DataFrame(
        {
            "invoice": lines["Invoice"].astype(str).to_numpy(),
            "item_id": lines["StockCode"].astype(str).to_numpy(),
            "ts": lines["InvoiceDate"].to_numpy(),
            "price": lines["Price"].astype(float).to_numpy(),
            "title": lines["Description"].to_numpy(),
        }
    )
    # As int_retail_items_derived: the most frequent description names a code, the median price.
    titles = (
        purchases.dropna(subset=["title"])
        .groupby(["item_id", "title"])
        .size()
        .reset_index(name="n")
        .sort_values(["item_id", "n", "title"], ascending=[True, False, True])
        .drop_duplicates("item_id")[["item_id", "title"]]
    )
    prices = purchases.groupby("item_id")["price"].median().rename("price").reset_index()
    items = titles.merge(prices, on="item_id", how="inner")
    items["title"] = items["title"].str.strip()
    return purchases[["invoice", "item_id", "ts"]], items


def beauty_frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    """(reviews: user_id, item_id, ts; items: item_id, title, brand, categories, price)."""
    from ml.core.catalog import normalize_categories

    raw = pd.read_parquet(BEAUTY / "interactions.parquet", columns=["user_id", "item_id", "timestamp"])
    events = pd.DataFrame(
        {
            "user_id": raw["user_id"].astype(str),
            "item_id": raw["item_id"].astype(str),
            "ts": pd.to_datetime(raw["timestamp"], unit="s"),
        }
    )
    items = pd.read_parquet(
        BEAUTY / "items.parquet", columns=["item_id", "title", "brand", "categories", "price"]
    )
    items["categories"] = normalize_categories(items["categories"])
    items["item_id"] = items["item_id"].astype(str)
    return events, items


def embeddings(items: pd.DataFrame, cache_dir: Path) -> np.ndarray:
    """Normalised MiniLM vectors of the items' texts (cached by the texts' hash)."""
    from ml.core.catalog import item_texts
    from ml.generation.bundles import unit_rows

    texts = item_texts(items).tolist()
    key = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]
    path = cache_dir / f"bundle-bench-{key}.npy"
    if path.exists():
        return np.load(path)
    from ml.modeling.model import TextEncoder

    vectors = unit_rows(TextEncoder().encode(texts).numpy())
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)
    return vectors


def basket_judge(purchases: pd.DataFrame) -> Together:
    """Later period, Online Retail: do two of the items share an invoice?"""
    baskets = purchases.groupby("item_id")["invoice"].agg(lambda s: frozenset(s)).to_dict()

    def together(items: Sequence[str]) -> bool:
        sets = [baskets.get(i, frozenset()) for i in items]
        return any(sets[a] & sets[b] for a in range(len(sets)) for b in range(a + 1, len(sets)))

    return together


def window_judge(events: pd.DataFrame, window_days: float) -> Together:
    """Later period, Beauty: did one user review two of the items within ``window_days``?"""
    days = events.assign(day=events["ts"].astype("datetime64[s]").astype(np.int64) / 86_400.0)
    by_item: dict[str, dict[str, list[float]]] = {}
    for user, item, day in zip(days["user_id"], days["item_id"], days["day"], strict=True):
        by_item.setdefault(item, {}).setdefault(user, []).append(day)

    def close(x: dict[str, list[float]], y: dict[str, list[float]]) -> bool:
        if len(x) > len(y):
            x, y = y, x
        return any(
            abs(a - b) <= window_days for user, da in x.items() if user in y for a in da for b in y[user]
        )

    def together(items: Sequence[str]) -> bool:
        maps = [by_item.get(i, {}) for i in items]
        return any(close(maps[a], maps[b]) for a in range(len(maps)) for b in range(a + 1, len(maps)))

    return together


def _score(
    name: str,
    set_name: str,
    seeds: Sequence[str],
    methods: Mapping[str, Callable[[Any], Sequence[tuple[int, str]]]],
    catalog: Any,
    together: Together,
    co: dict[str, list[tuple[str, int]]],
) -> dict[str, Any]:
    """Hit rate, coverage and variety of each method's bundles for one seed set."""
    from ml.generation import bundles as b

    out: dict[str, Any] = {}
    examples: list[dict[str, Any]] = []
    for method, build in methods.items():
        hits = offered = 0
        sizes: list[int] = []
        sources: dict[str, int] = {}
        distinct: list[float] = []
        for n, item in enumerate(seeds):
            chosen = build(catalog.seed(item))
            if len(chosen) < b.MIN_SIZE:
                continue
            offered += 1
            ids = [catalog.item_ids[j] for j, _ in chosen]
            sizes.append(len(ids))
            for _, source in chosen[1:]:
                sources[source] = sources.get(source, 0) + 1
            # Distinct leaf categories (Online Retail: distinct first two type words) per item.
            groups = {catalog.folded_leaves[j] or " ".join(catalog.types[j][:2]) for j, _ in chosen}
            distinct.append(len(groups) / len(chosen))
            hit = together(ids)
            hits += hit
            if method == "shopflow" and n < 3:
                examples.append(
                    {
                        "items": [f"{catalog.facts[j].title} ({catalog.facts[j].price})" for j, _ in chosen],
                        "sources": [s for _, s in chosen],
                        "hit": bool(hit),
                    }
                )
        out[method] = {
            "hit_rate": round(hits / len(seeds), 4) if seeds else None,
            "hits": hits,
            "offered": offered,
            "coverage": round(offered / len(seeds), 4) if seeds else None,
            "hit_rate_of_offered": round(hits / offered, 4) if offered else None,
            "mean_size": round(float(np.mean(sizes)), 3) if sizes else None,
            "added_items_by_source": sources,
            "distinct_category_share": round(float(np.mean(distinct)), 4) if distinct else None,
        }
    ours = out["shopflow"]["hit_rate"] or 0.0
    for baseline in ("copurchase_top", "category_popularity"):
        theirs = out[baseline]["hit_rate"]
        out[f"lift_over_{baseline}"] = round(ours / theirs, 3) if theirs else None
    out["seeds"] = len(seeds)
    out["seeds_with_copurchase_partner"] = sum(1 for s in seeds if co.get(s))
    out["examples"] = examples
    print(f"\n{name}, {set_name}: {len(seeds)} seeds")
    print(f"  {'method':22} {'hit rate':>9} {'coverage':>9} {'distinct cat.':>14}")
    for method in methods:
        row = out[method]
        share = row["distinct_category_share"]
        print(f"  {method:22} {row['hit_rate']!s:>9} {row['coverage']!s:>9} {share!s:>14}")
    print(
        f"  lift over copurchase_top {out['lift_over_copurchase_top']}, "
        f"over category_popularity {out['lift_over_category_popularity']}",
        flush=True,
    )
    return out


def evaluate(
    name: str,
    catalog_items: pd.DataFrame,
    mined_pairs: pd.DataFrame,
    popularity: pd.Series,
    together: Together,
    unit: np.ndarray,
    n_seeds: int,
    size: int,
) -> dict[str, Any]:
    from ml.generation import bundles as b

    started = time.perf_counter()
    catalog = b.BundleCatalog(catalog_items)
    co = b.partners(mined_pairs, min_baskets=2)
    ranked = [i for i in popularity.index if i in catalog.index and catalog.priced(catalog.index[i])]
    ranked = [i for i in ranked if catalog.facts[catalog.index[i]].title]
    # Two seed sets, same for every method: the most bought items, and a seeded random sample of
    # all items bought in the mining period (most of which have few or no co-purchase partners).
    rng = np.random.default_rng(0)
    seed_sets = {
        "popular_seeds": ranked[:n_seeds],
        "random_seeds": [
            ranked[i] for i in sorted(rng.choice(len(ranked), min(n_seeds, len(ranked)), replace=False))
        ],
    }

    # Baseline 2's candidates: the most bought items of the seed's own category (or type).
    by_leaf: dict[str, list[int]] = {}
    for item in ranked:
        j = catalog.index[item]
        leaf = catalog.folded_leaves[j]
        if leaf is not None:
            by_leaf.setdefault(leaf, []).append(j)
    typed = [catalog.index[item] for item in ranked]

    def same_category(seed: b.Seed) -> list[tuple[int, b.Source]]:
        assert seed.index is not None
        leaf = catalog.folded_leaves[seed.index]
        if leaf is not None:
            return [(j, "embedding") for j in by_leaf.get(leaf, [])]
        return [(j, "embedding") for j in typed if catalog.substitutes(j, seed.index)]

    methods: dict[str, Callable[[b.Seed], list[tuple[int, b.Source]]]] = {
        "shopflow": lambda s: b.choose(catalog, s, b.candidates(catalog, s, co, unit, n_neighbours=60), size),
        "copurchase_top": lambda s: b.choose(
            catalog, s, b.candidates(catalog, s, co, None), size, complementary=False
        ),
        "category_popularity": lambda s: b.choose(catalog, s, same_category(s), size, complementary=False),
        "shopflow_no_rule": lambda s: b.choose(
            catalog, s, b.candidates(catalog, s, co, unit, n_neighbours=60), size, complementary=False
        ),
    }
    out: dict[str, Any] = {"items_bought_in_mining_period": len(ranked), "mined_pairs": len(mined_pairs)}
    for set_name, seeds in seed_sets.items():
        out[set_name] = _score(name, set_name, seeds, methods, catalog, together, co)
    out["seconds"] = round(time.perf_counter() - started, 1)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Bundle hit rate on a later period than the bundles were mined from "
        "(Online Retail II and Amazon Beauty), ShopFlow vs two baselines; writes bench/results/bundles.json."
    )
    parser.add_argument("--seeds", type=int, default=1000, help="seed items per dataset (most bought first)")
    parser.add_argument("--size", type=int, default=3, help="items per bundle, seed included (2-4)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the JSON goes")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from ml.core.settings import Settings
    from ml.generation import bundles as b

    cache = Settings().work_dir / "cache"
    started = time.perf_counter()
    results: dict[str, Any] = {}

    purchases, retail_items = retail_frames()
    early = purchases[purchases["ts"] < pd.Timestamp(RETAIL_CUTOFF)]
    late = purchases[purchases["ts"] >= pd.Timestamp(RETAIL_CUTOFF)]
    retail_items = retail_items[retail_items["item_id"].isin(set(early["item_id"]))].reset_index(drop=True)
    t = time.perf_counter()
    pairs = b.basket_pairs(early, basket="invoice")
    mine_s = time.perf_counter() - t
    popularity = early.groupby("item_id")["invoice"].nunique().sort_values(ascending=False, kind="stable")
    results["online_retail_ii"] = {
        "mined": f"{purchases['ts'].min():%Y-%m-%d}..{RETAIL_CUTOFF} (exclusive), "
        f"{early['invoice'].nunique()} invoices",
        "judged": f"{RETAIL_CUTOFF}..{purchases['ts'].max():%Y-%m-%d}, {late['invoice'].nunique()} invoices",
        "together": "on the same invoice",
        "mining_seconds": round(mine_s, 1),
        **evaluate(
            "Online Retail II",
            retail_items,
            pairs,
            popularity,
            basket_judge(late),
            embeddings(retail_items, cache),
            args.seeds,
            args.size,
        ),
    }

    events, beauty_items = beauty_frames()
    early = events[events["ts"] < pd.Timestamp(BEAUTY_CUTOFF)]
    late = events[events["ts"] >= pd.Timestamp(BEAUTY_CUTOFF)]
    t = time.perf_counter()
    pairs = b.window_pairs(early.rename(columns={"ts": "event_ts"}), b.WINDOW_DAYS)
    mine_s = time.perf_counter() - t
    popularity = early.groupby("item_id")["user_id"].nunique().sort_values(ascending=False, kind="stable")
    results["amazon_beauty"] = {
        "mined": f"{events['ts'].min():%Y-%m-%d}..{BEAUTY_CUTOFF} (exclusive), {len(early)} reviews",
        "judged": f"{BEAUTY_CUTOFF}..{events['ts'].max():%Y-%m-%d}, {len(late)} reviews",
        "together": f"reviewed by the same user within {b.WINDOW_DAYS:.0f} days",
        "mining_seconds": round(mine_s, 1),
        **evaluate(
            "Amazon Beauty",
            beauty_items,
            pairs,
            popularity,
            window_judge(late, b.WINDOW_DAYS),
            embeddings(beauty_items, cache),
            args.seeds,
            args.size,
        ),
    }
    results["evaluation_set"] = (__doc__ or "").split("What it can show:")[0].strip().split("\n\n", 1)[1]
    results["can_and_cannot_show"] = (
        "What it can show:" + (__doc__ or "").split("What it can show:")[1].strip()
    )
    results["machine"] = {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "note": "shared machine: other jobs ran at the same time",
    }
    results["seconds"] = round(time.perf_counter() - started, 1)
    results["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    load = results["machine"]["load_average_1_5_15"]
    print(f"\nwrote {args.out} in {results['seconds']} s (load average {load})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
