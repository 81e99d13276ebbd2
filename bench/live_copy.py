"""Benchmark: copy written on a serving cache miss (``ml.generation.live``), against the template.

``make bench-live-copy`` → ``bench/results/live_copy.json``. What a Bento's request waits for when
the package lacks a text: a bundle's name and description (one batch of 2), a /recommend's reasons
(one batch of k explanations), each through the grounding check, written by the generator
champion of the work dir (after ``make demo``; the base when none was promoted, and the result
says which) on one torch thread, as the Bento's worker runs it. Beside it, in the same run, the
baseline: the template the Bento serves without a generator, and a hit on the kept texts.

The cases are real: the champion recommender's packaged bundles and explanation pairs (Amazon
Beauty), taken in the package's order. Seconds depend on the machine's load: the result records it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results" / "live_copy.json"


def summary(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    return {
        "n": len(ordered),
        "median_s": round(statistics.median(ordered), 4),
        "p90_s": round(ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))], 4),
        "max_s": round(ordered[-1], 4),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bundles", type=int, default=12, help="bundle misses written (name + description)")
    parser.add_argument("--recommends", type=int, default=6, help="/recommend misses (k reasons each)")
    parser.add_argument("--k", type=int, default=5, help="reasons per /recommend")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the Bento's worker uses 1)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the JSON goes")
    args = parser.parse_args()

    import pandas as pd
    import torch

    from ml import registry
    from ml.core.settings import get_settings
    from ml.generation import bundles as b
    from ml.generation.grounding import template
    from ml.generation.live import CopyRequest, LiveCopy

    torch.set_num_threads(args.threads)
    settings = get_settings()
    champion = registry.champion(settings)
    if champion is None:
        parser.error(f"no champion recommender in {settings.bentoml_home}: run `make demo` first")
    folder = registry.get(champion, settings).path / b.BUNDLES_DIR
    catalog = b.BundleCatalog(pd.read_parquet(folder / b.CATALOG_FILE))
    packaged = list(b.read_bundles(pd.read_parquet(folder / b.BUNDLES_FILE)).values())[: args.bundles]
    pairs = pd.read_parquet(folder / b.EXPLANATIONS_FILE)[["item_id", "history_item_id"]]
    pairs = pairs.head(args.recommends * args.k).itertuples(index=False)
    generator_tag = registry.generator_champion(settings)
    load_average_start = [round(x, 2) for x in os.getloadavg()]

    def load(tag: str) -> Any:
        return registry.load_served_generator(settings, tag=None if tag == "base" else tag)

    live = LiveCopy(lambda: generator_tag or "base", load, budget_s=settings.serve_copy_budget_s)
    bundle_requests = [
        [
            CopyRequest((bundle.seed, kind), kind, b.bundle_facts(catalog, bundle))  # type: ignore[arg-type]
            for kind in ("bundle_name", "bundle_description")
        ]
        for bundle in packaged
    ]
    facts = {f.item_id: f for f in catalog.facts}
    reasons = [
        CopyRequest((item, seen), "explanation", b.explanation_facts(facts[item], facts[seen]))
        for item, seen in pairs
    ]
    recommend_requests = [reasons[i : i + args.k] for i in range(0, len(reasons), args.k)]

    # Baseline: the template, as the Bento serves it without a generator.
    mark = time.perf_counter()
    for requests in [*bundle_requests, *recommend_requests]:
        for r in requests:
            template(r.kind, r.facts)
    template_s = (time.perf_counter() - mark) / (len(bundle_requests) + len(recommend_requests))

    # The first miss after a promotion also loads the generator.
    mark = time.perf_counter()
    live.write(bundle_requests[0], wait_s=3600)
    first_s = time.perf_counter() - mark
    timings: dict[str, list[float]] = {"bundle": [], "recommend": []}
    statuses: dict[str, int] = {}
    for name, groups in (("bundle", bundle_requests[1:]), ("recommend", recommend_requests)):
        for requests in groups:
            mark = time.perf_counter()
            written = live.write(requests, wait_s=3600)
            timings[name].append(time.perf_counter() - mark)
            for _, status, _ in written.values():
                statuses[status] = statuses.get(status, 0) + 1
    mark = time.perf_counter()
    for requests in [*bundle_requests, *recommend_requests]:
        live.write(requests, wait_s=0)
    hit_s = (time.perf_counter() - mark) / (len(bundle_requests) + len(recommend_requests))

    budget = settings.serve_copy_budget_s
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "generator": live.stats()["generator"],
        "generator_is_tuned": generator_tag is not None,
        "recommender": champion,
        "torch_threads": args.threads,
        "budget_s": budget,
        "first_miss_with_generator_load_s": round(first_s, 2),
        "bundle_miss": {
            **summary(timings["bundle"]),
            "texts_each": 2,
            "within_budget": round(sum(s <= budget for s in timings["bundle"]) / len(timings["bundle"]), 3),
        },
        "recommend_miss": {
            **summary(timings["recommend"]),
            "texts_each": args.k,
            "within_budget": "never waited: /recommend serves the template and writes in the background",
        },
        "baseline_template_s_per_response": round(template_s, 6),
        "hit_s_per_response": round(hit_s, 6),
        "statuses": statuses,
        "raw_pass_rate": round(statuses.get("generated", 0) / max(1, sum(statuses.values())), 3),
        "load_average": {"start": load_average_start, "end": [round(x, 2) for x in os.getloadavg()]},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__},
        "note": "real packaged cases of the champion's Beauty catalog; seconds on a shared 2-core CPU",
    }
    live.close()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    kind = "tuned" if generator_tag else "base"
    print(f"generator {result['generator']} ({kind}), {args.threads} thread(s)")
    print(f"{'':<34}{'median s':>10}{'p90 s':>10}")
    print(f"{'template (baseline), a response':<34}{template_s:>10.5f}")
    for name in ("bundle", "recommend"):
        row = result[f"{name}_miss"]
        print(f"{name + ' miss written':<34}{row['median_s']:>10.3f}{row['p90_s']:>10.3f}")
    print(f"{'hit on kept texts, a response':<34}{hit_s:>10.6f}")
    print(
        f"first miss incl. generator load: {first_s:.1f} s; bundle misses within {budget:g} s: "
        f"{result['bundle_miss']['within_budget']:.0%}; raw_pass_rate {result['raw_pass_rate']}"
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
