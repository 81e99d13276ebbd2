"""mode auto (issue 11, item 4): on CPU a frozen phase, then a budgeted LoRA phase kept only if it
raises validation NDCG@10; the run says which mode ran and what each phase cost."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ml.modeling.config import TrainConfig
from ml.modeling.datasets import TrainingData
from ml.modeling.fit import PHASES_FILE, auto_mode_on_cuda, keep_lora, train
from ml.training.report import training_section

TINY = {
    "hidden": 32,
    "layers": 1,
    "heads": 2,
    "dropout": 0.1,
    "max_len": 10,
    "batch_size": 16,
    "lr": 1e-2,
    "progress": False,
    "num_threads": 1,
    "epochs": 2,
    "encoder_items_per_step": 16,
}

pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")


def test_auto_is_the_default() -> None:
    assert TrainConfig().mode == "auto"


def test_keep_lora_only_when_it_raises_the_metric() -> None:
    assert keep_lora(0.20, 0.21)
    assert not keep_lora(0.20, 0.20)  # a tie keeps the frozen weights
    assert not keep_lora(0.20, 0.19)
    assert not keep_lora(0.20, 0.21, min_gain=0.02)
    assert not keep_lora(0.20, float("nan"))


def test_auto_on_cuda_picks_full_for_a_small_encoder_lora_for_a_large_one() -> None:
    # MiniLM-L6 has 22.7M parameters (estimated 22.3M from its config).
    assert auto_mode_on_cuda(TrainConfig()) == "full"
    assert auto_mode_on_cuda(TrainConfig(auto_full_max_params=10_000_000)) == "lora"


def test_auto_on_cpu_runs_frozen_then_lora_and_reports_both(
    planted_data: TrainingData, tmp_path: Path, tmp_cache: Path
) -> None:
    small = planted_data.subset_users(80)
    # A generous seconds budget: the 3-step cap is what ends the phase, even on a loaded machine.
    config = TrainConfig(**TINY, auto_lora_steps=3, auto_lora_seconds=300, device="cpu", cache_dir=tmp_cache)
    result = train(small, config, tmp_path / "run")
    frozen, lora = result.phases
    assert frozen["mode"] == "frozen" and frozen["epochs"] == 2 and frozen["seconds"] > 0
    assert lora["mode"] == "lora" and lora["steps"] == 3
    assert lora["step_seconds"] > 0 and lora["encode_seconds"] > 0
    assert lora["seconds"] >= lora["step_seconds"] + lora["encode_seconds"]
    assert lora["val_ndcg_before"] == frozen["val_ndcg@10"]
    assert lora["kept"] == keep_lora(lora["val_ndcg_before"], lora["val_ndcg_after"])
    assert result.mode_ran == ("lora" if lora["kept"] else "frozen")
    best = max(lora["val_ndcg_before"], lora["val_ndcg_after"])
    assert result.best_metric == pytest.approx(best)
    # The phase is the history's third record, the best epoch only when kept.
    assert len(result.history) == 3 and result.history[-1]["lora_steps"] == 3
    assert result.history[-1]["val_ndcg@10"] == lora["val_ndcg_after"]
    assert result.best_epoch == (3 if lora["kept"] else result.best_epoch)
    assert result.history[result.best_epoch - 1]["val_ndcg@10"] == pytest.approx(result.best_metric)
    assert len(json.loads((tmp_path / "run" / "history.json").read_text())) == 3
    # A kept LoRA phase ships its merged encoder; a dropped one leaves the frozen model.
    assert (result.model_dir / "encoder" / "config.json").exists() == lora["kept"]
    record = json.loads((tmp_path / "run" / PHASES_FILE).read_text())
    assert record["mode"] == "auto" and record["ran"] == result.mode_ran
    assert [p["mode"] for p in record["phases"]] == ["frozen", "lora"]
    section = training_section(record)
    assert f"mode auto ran {result.mode_ran}" in section and "3 steps" in section


def test_a_lora_phase_that_does_not_help_is_dropped(
    planted_data: TrainingData, tmp_path: Path, tmp_cache: Path
) -> None:
    small = planted_data.subset_users(80)
    # No NDCG@10 can rise by 1.0: the phase runs and is dropped, the frozen weights stay.
    config = TrainConfig(
        **TINY, auto_lora_steps=2, auto_lora_seconds=300, auto_min_gain=1.0, device="cpu", cache_dir=tmp_cache
    )
    result = train(small, config, tmp_path / "run")
    lora = result.phases[1]
    assert lora["steps"] == 2 and not lora["kept"]
    assert result.mode_ran == "frozen"
    assert result.best_metric == lora["val_ndcg_before"]
    assert not (result.model_dir / "encoder").exists()
    assert result.best_epoch <= 2 and len(result.history) == 3


def test_zero_budget_or_a_catalog_too_slow_to_re_encode_skips_the_lora_phase(
    planted_data: TrainingData, tmp_path: Path, tmp_cache: Path
) -> None:
    small = planted_data.subset_users(40)
    none = train(
        small, TrainConfig(**TINY, auto_lora_steps=0, device="cpu", cache_dir=tmp_cache), tmp_path / "a"
    )
    assert none.mode_ran == "frozen" and none.phases[1]["steps"] == 0
    assert "no budget" in none.phases[1]["reason"]
    # A budget smaller than re-encoding the catalog (timed on a sample) runs no step.
    tight = train(
        small, TrainConfig(**TINY, auto_lora_seconds=1e-6, device="cpu", cache_dir=tmp_cache), tmp_path / "b"
    )
    assert tight.mode_ran == "frozen" and tight.phases[1]["steps"] == 0
    assert "re-encoding" in tight.phases[1]["reason"]
