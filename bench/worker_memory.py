"""Benchmark: one serving worker's start-up and peak memory by catalog size (issue 14, item 8).

A Bento worker holds what ``serving.engine.ServingModel`` loads, then its warm-up (exactly what
``Recommender.__init__`` in serving/service.py does). Each catalog size is measured in a fresh
child process: seconds to load and to warm up, peak resident memory (the kernel's ``VmHWM``) and
resident memory when ready, beside the same figures for the real catalog in the same run.

Catalogs:
- the real one: the served version's own items (the configured champion, else the newest version
  of a benchmark store, else bench/serving.py's sample champion; see bench/ann.py find_version);
- larger ones (default 100k and 1M): that version's model with SYNTHETIC items appended, seeded.
  Each copies a real item drawn uniformly: its ID embedding and its text embedding are the
  parent's plus Gaussian noise rescaled to the parent's norm (bench/ann.py's ``around``), its text is
  the parent's text (so BM25 indexes real words), its id ``SYN-<n>``, warm if the parent is.

Each catalog is first prepared by ``serving.index.prepare_version``, as the Bento build does
(timed: ``build_s``): the known users' vectors precomputed, and from ``--ann-min-items`` items the
HNSW indexes (exact faiss IndexFlatIP below it).
Building three HNSW indexes at 1M items takes this 2-core machine well over half an hour (see
bench/results/ann.json: 509 s for the 64-wide table alone), so by default catalogs above
``--hnsw-max-items`` are measured with exact indexes, and the row says so; ann.json has HNSW's own
memory per item to add.

Writes bench/results/worker_memory.json (figures, machine, load average, date).

    make bench-worker-memory
    python bench/worker_memory.py --sizes 100000          # one synthetic size
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

PROJECT_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_DIR))
from bench.ann import around, find_version, load_average  # noqa: E402
from ml.modeling.model import CONFIG_FILE, ITEMS_FILE, WEIGHTS_FILE  # noqa: E402

RESULTS = PROJECT_DIR / "bench" / "results" / "worker_memory.json"
NEVER_ANN = 10**12
"""An ANN threshold no catalog reaches: exact indexes."""
SKIPPED_IN_COPY = ("model", "precomputed", "ann")


def memory_mb() -> dict[str, float]:
    """This process's peak and current resident memory (MiB)."""
    fields = dict(
        line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line
    )
    return {
        "peak_rss_mb": round(int(fields["VmHWM"].split()[0]) / 1024, 1),
        "rss_mb": round(int(fields["VmRSS"].split()[0]) / 1024, 1),
    }


def copied_version(version: Path, out: Path) -> Path:
    """A copy of ``version`` without what the Bento build adds (the source store is only read)."""
    if not (out / "model").is_dir():
        shutil.rmtree(out, ignore_errors=True)
        shutil.copytree(version, out, ignore=shutil.ignore_patterns("precomputed", "ann"))
    return out


def grown_version(version: Path, items: int, out: Path, seed: int = 0) -> Path:
    """A copy of ``version`` whose model has ``items`` catalog items (SYNTHETIC beyond the real)."""
    import torch
    from safetensors.torch import load_file, save_file

    if (out / "model" / CONFIG_FILE).exists():
        return out
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(version, out, ignore=shutil.ignore_patterns(*SKIPPED_IN_COPY))
    source = version / "model"
    state = load_file(str(source / WEIGHTS_FILE))
    meta = json.loads((source / CONFIG_FILE).read_text())
    listed = json.loads((source / ITEMS_FILE).read_text())
    real = len(listed["item_ids"])  # the padding row included
    extra = items + 1 - real
    if extra <= 0:
        raise ValueError(f"{items} items is not more than the real catalog's {real - 1}")
    rng = np.random.default_rng(seed)
    parents = rng.integers(1, real, extra)
    chunk = 100_000
    for name in ("id_embedding.weight", "text_embeddings"):
        if name not in state:
            continue
        matrix = state[name].float().numpy()
        parts = [around(matrix, parents[s : s + chunk], rng) for s in range(0, extra, chunk)]
        state[name] = torch.from_numpy(np.concatenate([matrix, *parts]))
    state["warm"] = torch.cat([state["warm"], state["warm"][torch.from_numpy(parents)]])
    folder = out / "model"
    folder.mkdir(parents=True, exist_ok=True)
    for extra_file in source.iterdir():  # a fine-tuned encoder's folder, if any
        if extra_file.is_dir():
            shutil.copytree(extra_file, folder / extra_file.name)
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / WEIGHTS_FILE))
    texts = listed["item_texts"]
    (folder / ITEMS_FILE).write_text(
        json.dumps(
            {
                "item_ids": listed["item_ids"] + [f"SYN-{n}" for n in range(extra)],
                "item_texts": texts + [texts[int(p)] for p in parents],
            }
        )
    )
    meta["model"]["num_items"] = items + 1
    (folder / CONFIG_FILE).write_text(json.dumps(meta, indent=2))
    return out


def child(version: Path, ann_min_items: int, work: Path) -> dict[str, Any]:
    """In this (fresh) process: load and warm a ServingModel as a Bento worker does; figures."""
    import faiss
    import torch

    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    from serving.engine import ServingModel

    before = memory_mb()
    t = time.perf_counter()
    engine = ServingModel(
        version, tag="bench", log_dir=work / "serving_logs", work_dir=work, ann_min_items=ann_min_items
    )
    loaded = time.perf_counter() - t
    t = time.perf_counter()
    users = engine.warm_up()
    warmed = time.perf_counter() - t
    return {
        "items": len(engine.item_ids) - 1,
        "indexes": engine.index_kinds,
        "load_s": round(loaded, 2),
        "warm_up_s": round(warmed, 2),
        "ready_s": round(loaded + warmed, 2),
        "users_warmed": users,
        "python_and_imports_rss_mb": before["rss_mb"],
        **memory_mb(),
    }


def measure(version: Path, ann_min_items: int, work: Path, timeout_s: float) -> dict[str, Any]:
    command = [
        sys.executable,
        __file__,
        "--child",
        str(version),
        "--ann-min-items",
        str(ann_min_items),
        "--work-dir",
        str(work),
    ]
    load = load_average()
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("WORKER_JSON ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"worker measurement failed ({done.returncode}): {done.stderr[-3000:]}")
    return {**json.loads(line.removeprefix("WORKER_JSON ")), "load_average_at_start": load}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[100_000, 1_000_000], help="synthetic catalog sizes"
    )
    parser.add_argument(
        "--ann-min-items", type=int, default=None, help="HNSW from this many items (default: the setting)"
    )
    parser.add_argument(
        "--hnsw-max-items",
        type=int,
        default=100_000,
        help="above this, measure with exact indexes (see above)",
    )
    parser.add_argument("--timeout", type=float, default=1800, help="seconds allowed per worker measurement")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where to write the JSON")
    parser.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--work-dir", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    from ml.core.settings import get_settings

    settings = get_settings()
    work = args.work_dir or settings.work_dir / "bench" / "worker_memory"
    ann_min = args.ann_min_items or settings.serving_ann_min_items
    if args.child is not None:
        print("WORKER_JSON " + json.dumps(child(args.child, ann_min, work)), flush=True)
        return 0

    import torch

    from serving.index import prepare_version

    started = time.perf_counter()
    info = {
        "cpus": os.cpu_count(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "load_average_at_start": load_average(),
    }
    version, source = find_version()
    print(f"version {version.name} ({source})", flush=True)
    rows: list[dict[str, Any]] = []
    for size in [None, *args.sizes]:
        # Every catalog as the Bento build leaves it (serving.index.prepare_version): the known
        # users' vectors precomputed, and HNSW indexes where the catalog is at least ann_min large.
        if size is None:
            folder = copied_version(version, work / "real")
        else:
            folder = grown_version(version, size, work / f"v{size}")
        items = len(json.loads((folder / "model" / ITEMS_FILE).read_text())["item_ids"]) - 1
        hnsw = ann_min <= items <= args.hnsw_max_items
        min_items = ann_min if hnsw else NEVER_ANN  # exact above --hnsw-max-items
        t = time.perf_counter()
        manifest = prepare_version(folder, min_items)
        build = {
            "build_s": round(time.perf_counter() - t, 1),
            "hnsw_indexes": sorted(manifest.get("indexes", {})),
            "user_vectors": manifest.get("user_vectors"),
        }
        row = measure(folder, min_items, work, args.timeout)
        rows.append(
            {
                **row,
                "catalog": "real"
                if size is None
                else "real + SYNTHETIC (seeded copies of real items, noise on their vectors)",
                "synthetic_items": items - rows[0]["items"] if rows else 0,
                "build": build,
                "note": f"exact indexes: HNSW not built above {args.hnsw_max_items:,} items (build time)"
                if items >= ann_min and not hnsw
                else None,
            }
        )
        print(f"  {items:>9,} items: {row} (build {build})", flush=True)

    print(
        f"\n{'items':>10}{'indexes':>10}{'load s':>9}{'warm s':>9}{'ready s':>9}"
        f"{'peak MiB':>10}{'ready MiB':>11}"
    )
    for r in rows:
        kinds = "hnsw" if "hnsw" in r["indexes"].values() else "exact"
        print(
            f"{r['items']:>10,}{kinds:>10}{r['load_s']:>9.1f}{r['warm_up_s']:>9.1f}{r['ready_s']:>9.1f}"
            f"{r['peak_rss_mb']:>10.0f}{r['rss_mb']:>11.0f}"
        )
    info["load_average_at_end"] = load_average()
    result = {
        "benchmark": "worker_memory",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "what": "one serving worker: serving.engine.ServingModel loaded and warmed as Recommender.__init__ "
        "does, in a fresh process per catalog (one torch/faiss thread); peak = VmHWM, ready = VmRSS after "
        "warm-up; the Bento's own framework adds a fixed amount on top (bench/results/serving.json servers)",
        "version": {"name": version.name, "source": source},
        "ann_min_items": ann_min,
        "machine": info,
        "results": rows,
        "total_seconds": round(time.perf_counter() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
