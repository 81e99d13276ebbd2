"""Pack the real datasets from ../shared/data into compressed Parquet under data/.

Run once by a maintainer when the upstream copies change; the result is committed. Columns keep
their upstream names and types (the replay step maps them onto ShopFlow's landing contracts).

    python scripts/pack_data.py --shared ../shared/data
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

PROJECT_DIR = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--shared",
        type=Path,
        default=PROJECT_DIR.parent / "shared" / "data",
        help="folder holding amazon_beauty_2014_5core/ and uci_online_retail_ii/",
    )
    parser.add_argument("--out", type=Path, default=PROJECT_DIR / "data", help="destination folder")
    args = parser.parse_args()

    beauty_in, beauty_out = args.shared / "amazon_beauty_2014_5core", args.out / "amazon_beauty_2014_5core"
    retail_in, retail_out = args.shared / "uci_online_retail_ii", args.out / "uci_online_retail_ii"
    beauty_out.mkdir(parents=True, exist_ok=True)
    retail_out.mkdir(parents=True, exist_ok=True)

    interactions = pd.read_csv(beauty_in / "interactions.csv", dtype={"user_id": str, "item_id": str})
    items = pd.read_csv(beauty_in / "items.csv", dtype={"item_id": str})
    retail = pd.read_parquet(retail_in / "online_retail_ii_2009-12_2011-12.parquet")

    for frame, path in [
        (interactions, beauty_out / "interactions.parquet"),
        (items, beauty_out / "items.parquet"),
        (retail, retail_out / "online_retail_ii.parquet"),
    ]:
        frame.to_parquet(path, compression="zstd", compression_level=19, index=False)
        print(f"{path.relative_to(PROJECT_DIR)}: {len(frame):,} rows, {path.stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
