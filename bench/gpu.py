"""Benchmark on a lent GPU machine: CUDA training throughput (MFU) and the ranking table.

That machine is not a copy of this one: it runs its own Python 3.12 with torch, transformers,
peft, pandas and pyarrow, reaches no package registry, takes at most 64 MiB of files per call
and lends 15 minutes in all. So the work has two halves:

    make gpu-pack    # here: .gpu/ = the wheels it lacks + the default encoder as fp16 safetensors
    make bench-gpu   # there (the device tool's `run`, carry [".gpu"]), inside 10 minutes:
                     # installs the wheels into /tmp/site, runs bench/train_throughput.py
                     # (MFU sweep, torch.compile rows) and bench/ranking.py (file-order table,
                     # refit) on CUDA, writes bench/results/*_cuda.json and copies them to $OUT

``python bench/gpu.py run --smoke`` runs the second half on this machine's CPU with tiny
settings, to check the plumbing without a GPU. The Beauty Parquet travels with the checkout
(data/ is tracked); the encoder's fp32 file (87 MiB) would not fit, its fp16 copy (44 MiB) does:
both benches take it with ``--encoder .gpu/encoder`` and load it back as float32.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import shutil
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parents[1]
PACK = PROJECT_DIR / ".gpu"
RESULTS = PROJECT_DIR / "bench" / "results"
# What ml/ and the two benches import that the GPU machine's image lacks (its package list:
# /work/.library/device/KINDS.md); carried at the versions this checkout runs.
MISSING = [
    "pydantic",
    "pydantic-core",
    "pydantic-settings",
    "annotated-types",
    "typing-inspection",
    "python-dotenv",
]
ENCODER_FILES = [
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
]
LIMIT_MIB = 64
BENCHES = ("train_throughput", "ranking")
SITE = Path("/tmp/site")


def pack() -> int:
    """Write .gpu/: the missing wheels (CPython 3.12, manylinux x86-64) and the fp16 encoder."""
    from ml.modeling.model import resolve_encoder

    shutil.rmtree(PACK, ignore_errors=True)
    (PACK / "whl").mkdir(parents=True)
    platforms = [f"manylinux_2_{n}_x86_64" for n in (28, 27, 17)] + ["manylinux2014_x86_64"]
    for name in MISSING:
        version = importlib.metadata.version(name)
        command = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:"]
        command += ["--python-version", "3.12", "--implementation", "cp", "-d", str(PACK / "whl")]
        command += [arg for p in platforms for arg in ("--platform", p)] + [f"{name}=={version}"]
        print(f"wheel {name}=={version}", flush=True)
        subprocess.run(command, check=True)

    half_encoder(Path(resolve_encoder("default")), PACK / "encoder")

    tracked = subprocess.run(
        ["git", "ls-files", "-z"], cwd=PROJECT_DIR, capture_output=True, check=True
    ).stdout.split(b"\0")
    tree = sum(
        (PROJECT_DIR / p.decode()).stat().st_size
        for p in tracked
        if p and (PROJECT_DIR / p.decode()).is_file()
    )
    packed = sum(f.stat().st_size for f in PACK.rglob("*") if f.is_file())
    total = (tree + packed) / 2**20
    print(
        f".gpu/ {packed / 2**20:.1f} MiB + tracked tree {tree / 2**20:.1f} MiB = {total:.1f} MiB", flush=True
    )
    if total > LIMIT_MIB:
        print(f"over the {LIMIT_MIB} MiB of one device call (untracked files git keeps travel too)")
        return 1
    print('then, with the device tool: run(command="make bench-gpu", carry=[".gpu"], timeout_s=600)')
    return 0


def half_encoder(source: Path, dest: Path) -> None:
    """Copy a Hugging Face encoder with its floating weights in fp16 (half the bytes); TextEncoder
    loads them back as float32."""
    from safetensors.torch import load_file, save_file

    dest.mkdir(parents=True, exist_ok=True)
    for name in ENCODER_FILES:
        if (source / name).exists():
            shutil.copy2(source / name, dest / name)
    weights = load_file(source / "model.safetensors")
    half = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in weights.items()}
    save_file(half, dest / "model.safetensors")


def environment() -> dict[str, str]:
    """The benches' environment there: carried wheels first on the path, the carried encoder."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    env.setdefault("SHOPFLOW_WORK_DIR", "/tmp/shopflow-gpu")
    try:
        import pydantic_settings  # noqa: F401
    except ImportError:
        wheels = sorted(str(w) for w in (PACK / "whl").glob("*.whl"))
        if not wheels:
            sys.exit(f"{PACK / 'whl'}: no wheels; run `make gpu-pack` here first and carry .gpu")
        install = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile"]
        subprocess.run([*install, "--upgrade", "--target", str(SITE), *wheels], check=True)
        env["PYTHONPATH"] = os.pathsep.join([str(SITE), str(PROJECT_DIR), env.get("PYTHONPATH", "")])
    return env


def run(smoke: bool, budget_s: float, benches: list[str]) -> int:
    """Both benches on this machine's CUDA (or, with smoke, its CPU at toy sizes), in budget_s."""
    env = environment()
    started = time.monotonic()
    RESULTS.mkdir(parents=True, exist_ok=True)
    throughput = ["--out", str(RESULTS / "train_throughput_cuda.json"), "--compile", "--users", "0"]
    throughput += ["--steps", "30"]
    ranking = ["--ties", "file", "--no-ablation", "--refit", "--no-check", "--jobs", "2", "--threads", "4"]
    ranking += ["--out", str(RESULTS / "ranking_cuda.json"), "--eval-margin", "45"]
    if smoke:
        throughput = ["--out", "/tmp/train_throughput_smoke.json", "--modes", "frozen", "full"]
        throughput += ["--steps", "1", "--users", "40", "--threads", "1"]
        ranking = ["--ties", "file", "--no-ablation", "--refit", "--no-check", "--jobs", "2", "--epochs", "1"]
        ranking += ["--users", "300", "--out", "/tmp/ranking_smoke.json"]
    if (PACK / "encoder" / "model.safetensors").exists():  # the carried fp16 copy (make gpu-pack)
        throughput += ["--encoder", str(PACK / "encoder")]
        ranking += ["--encoder", str(PACK / "encoder")]
    # The throughput half gets 40% of the budget (its rows are saved as they finish); the ranking
    # half a deadline to the second, with time to test (on 2026-12-04 a deadline floored to the
    # minute cut ours' refit at 8 of its 12 epochs).
    share = 0.4 if "ranking" in benches else 1.0
    logs = []
    if "train_throughput" in benches:
        command = [sys.executable, "bench/train_throughput.py", *throughput]
        logs.append(_timed("train_throughput", command, env, share * budget_s - 10))
    if "ranking" in benches:
        left = budget_s - (time.monotonic() - started)
        if not smoke:
            deadline = datetime.now(UTC) + timedelta(seconds=left - 30)
            ranking += ["--deadline", deadline.strftime("%H:%M:%S")]
        logs.append(_timed("ranking", [sys.executable, "bench/ranking.py", *ranking], env, left - 10))

    out = os.environ.get("OUT")
    if out:  # the device tool returns what lands in $OUT
        for path in [*RESULTS.glob("*_cuda.json"), *logs]:
            shutil.copy2(path, Path(out) / path.name)
    print(f"bench-gpu done in {time.monotonic() - started:.0f} s", flush=True)
    return 0


def _timed(name: str, command: list[str], env: dict[str, str], limit: float) -> Path:
    """Run one bench with a time limit, its output shown and kept in /tmp/<name>_gpu.log."""
    log = Path(f"/tmp/{name}_gpu.log")
    print(f"== {name} (at most {limit:.0f} s): {' '.join(command[1:])}", flush=True)
    with log.open("w") as sink:
        process = subprocess.Popen(
            command, cwd=PROJECT_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert process.stdout is not None
        watchdog = threading.Timer(limit, process.kill)  # the next bench still gets its time
        watchdog.start()
        for line in process.stdout:
            sink.write(line)
            if "INFO" not in line or "epoch" in line:  # progress, without the per-batch chatter
                print(line, end="", flush=True)
        code = process.wait()
        watchdog.cancel()
    print(
        f"== {name}: exit {code}" + (f" (stopped at its limit, {limit:.0f} s)" if code == -9 else ""),
        flush=True,
    )
    return log


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("pack", help="here: write .gpu/ (wheels + fp16 encoder) and check the 64 MiB limit")
    runner = sub.add_parser("run", help="there: both benches on CUDA, results in bench/results/*_cuda.json")
    runner.add_argument(
        "--smoke", action="store_true", help="this machine's CPU, toy sizes (checks the plumbing)"
    )
    runner.add_argument(
        "--benches",
        nargs="+",
        choices=BENCHES,
        default=list(BENCHES),
        help="which to run (one alone gets the whole budget)",
    )
    runner.add_argument(
        "--budget", type=float, default=540, help="seconds for both benches (the call's limit is 600)"
    )
    args = parser.parse_args()
    return pack() if args.command == "pack" else run(args.smoke, args.budget, args.benches)


if __name__ == "__main__":
    sys.exit(main())
