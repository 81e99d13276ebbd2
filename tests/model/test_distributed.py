"""``ml.modeling.fit.train`` under torchrun: two processes (gloo, CPU) train one model with DDP on a slice
of the shipped Beauty data. The ranks split every epoch's batches between them, end with the
same weights, history and verdict, and the model rank 0 saved loads and scores like theirs.

This file is also the worker that torchrun starts (``python tests/model/test_distributed.py``).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

PROJECT = Path(__file__).resolve().parents[2]
WORLD = 2
USERS = 120
HISTORIES = [[1, 2, 3], [5], [8, 13, 21, 34]]
CONFIG = {
    "mode": "frozen",  # DDP's epoch loop is under test; mode auto skips its LoRA phase under torchrun only
    "hidden": 32,
    "layers": 1,
    "heads": 2,
    "dropout": 0.1,
    "max_len": 10,
    "batch_size": 16,
    "lr": 1e-2,
    "epochs": 3,
    "patience": 3,
    "val_max_cases": None,
    "device": "cpu",
    "progress": False,
    "num_threads": 1,
}


def write_beauty_slice(folder: Path, users: int = USERS) -> None:
    """The first ``users`` users of the shipped Beauty 5-core and the items they touched, as the
    (examples, items) Parquet pair every rank reads."""
    from ml.modeling.datasets import shipped_frames

    examples, items = shipped_frames(PROJECT / "data")
    keep = set(examples["user_id"].drop_duplicates().sort_values().head(users))
    examples = examples[examples["user_id"].isin(keep)]
    items = items[items["item_id"].isin(set(examples["item_id"]))]
    folder.mkdir(parents=True, exist_ok=True)
    examples.to_parquet(folder / "examples.parquet", index=False)
    items[["item_id", "item_text"]].to_parquet(folder / "items.parquet", index=False)


def read_slice(folder: Path) -> Any:
    import pandas as pd

    from ml.modeling.datasets import from_frames

    examples, items = pd.read_parquet(folder / "examples.parquet"), pd.read_parquet(folder / "items.parquet")
    return from_frames(examples, items, source="beauty")


def _digest(tensors: dict[str, Any]) -> str:
    digest = hashlib.sha256()
    for name, value in sorted(tensors.items()):
        digest.update(name.encode())
        digest.update(value.detach().cpu().float().numpy().tobytes())
    return digest.hexdigest()


def _batch_keys(trainer: Any) -> list[str]:
    """One epoch of this trainer's batches, each as a digest of its inputs and targets."""
    return [
        hashlib.sha256(b.inputs.numpy().tobytes() + b.targets.numpy().tobytes()).hexdigest()
        for b in trainer.batches()
    ]


def worker(out: Path) -> None:
    """One rank: train, then record what this rank ended with."""
    from ml.modeling.config import TrainConfig
    from ml.modeling.distributed import Distributed
    from ml.modeling.fit import Trainer, train

    data = read_slice(out / "data")
    config = TrainConfig(**CONFIG, cache_dir=out / "cache")
    result = train(data, config, out / "run")
    dist = Distributed.from_env()
    # The first epoch's batches this rank trained on (a fresh trainer draws the same ones).
    shard = _batch_keys(Trainer(data, config, cache_dir=out / "cache", dist=dist))
    record = {
        "rank": dist.rank,
        "world_size": result.world_size,
        "weights": _digest(result.model.state_dict()),
        "best_metric": result.best_metric,
        "best_epoch": result.best_epoch,
        "history": [{k: v for k, v in h.items() if k != "seconds"} for h in result.history],
        "scores": result.model.score(HISTORIES).tolist(),
        "model_dir": str(result.model_dir),
        "batches": shard,
    }
    (out / f"rank{dist.rank}.json").write_text(json.dumps(record))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.timeout(600)
def test_two_ranks_train_one_model(tmp_path: Path) -> None:
    from ml.modeling.config import TrainConfig
    from ml.modeling.fit import Trainer
    from ml.modeling.model import Recommender

    torchrun = Path(sys.executable).parent / "torchrun"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(PROJECT), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
        "CUDA_VISIBLE_DEVICES": "",
    }
    command = [
        str(torchrun),
        "--nproc-per-node",
        str(WORLD),
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(_free_port()),
        __file__,
        str(tmp_path),
    ]
    # What one process would do, first: it also fills the item-embedding cache the ranks share.
    write_beauty_slice(tmp_path / "data")
    data = read_slice(tmp_path / "data")
    alone = _batch_keys(Trainer(data, TrainConfig(**CONFIG, cache_dir=tmp_path / "cache")))

    started = time.monotonic()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=540, check=False)
    seconds = time.monotonic() - started
    assert done.returncode == 0, (done.stdout + done.stderr)[-5000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(WORLD)]
    first, second = ranks
    assert [r["rank"] for r in ranks] == [0, 1] and {r["world_size"] for r in ranks} == {WORLD}

    # One model: same weights, same validation verdicts, same history on both ranks.
    assert first["weights"] == second["weights"]
    assert first["best_metric"] == second["best_metric"] > 0.0
    assert first["best_epoch"] == second["best_epoch"]
    assert first["history"] == second["history"] and len(first["history"]) == CONFIG["epochs"]
    losses = [h["loss"] for h in first["history"]]
    assert losses[-1] < losses[0], losses

    # The ranks split the epoch: disjoint halves of exactly the batches one process would draw.
    mine, theirs = first["batches"], second["batches"]
    assert len(mine) == len(theirs) == len(alone) // WORLD > 0
    assert not set(mine) & set(theirs)
    assert sorted(mine + theirs) == sorted(alone[: len(mine) * WORLD])

    # Rank 0 wrote the model once; it loads and scores exactly as the ranks' models did.
    model_dir = Path(first["model_dir"])
    assert second["model_dir"] == first["model_dir"]
    meta = json.loads((model_dir / "config.json").read_text())
    assert meta["world_size"] == WORLD and meta["best_epoch"] == first["best_epoch"]
    assert json.loads((model_dir.parent / "history.json").read_text())[-1]["epoch"] == CONFIG["epochs"]
    loaded = Recommender.load(model_dir)
    scores = loaded.score(HISTORIES)
    assert scores.shape == (len(HISTORIES), data.num_items)
    assert np.isfinite(scores[:, 1:]).all()
    np.testing.assert_allclose(scores, np.asarray(first["scores"]), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(scores, np.asarray(second["scores"]), rtol=1e-5, atol=1e-5)
    print(f"torchrun x{WORLD}: {seconds:.1f} s, best val ndcg@10 {first['best_metric']:.4f}")


def test_the_job_is_read_from_torchruns_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from ml.modeling.distributed import Distributed, continue_alone

    assert Distributed.from_env({}) == Distributed() and not Distributed().enabled
    assert not Distributed.from_env({"WORLD_SIZE": "1", "RANK": "0"}).enabled
    with pytest.raises(RuntimeError, match="RANK, LOCAL_RANK, MASTER_ADDR, MASTER_PORT not set"):
        Distributed.from_env({"WORLD_SIZE": "4"})
    job = {"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}
    job |= {"MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29500"}
    assert Distributed.from_env(job) == Distributed(rank=3, local_rank=1, world_size=4, local_world_size=2)
    assert not Distributed.from_env(job).is_main
    for key, value in job.items():
        monkeypatch.setenv(key, value)
    assert Distributed.from_env().world_size == 4
    continue_alone()  # rank 0 of `shopflow train` after the others exit
    assert Distributed.from_env() == Distributed()


if __name__ == "__main__":
    worker(Path(sys.argv[1]))
