"""What a training run is asked to do (:class:`TrainConfig`) and what it produced (:class:`TrainResult`)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ml.modeling.datasets import Protocol
from ml.modeling.model import ModelConfig, Recommender


class TrainConfig(BaseModel):
    """Hyperparameters of one training run (overrides by keyword: ``TrainConfig(epochs=5)``).

    The architecture is a :class:`ModelConfig` (declared once, saved beside the weights); its
    fields may also be given flat, as people write overrides (``TrainConfig(hidden=32)``,
    ``{"use_text": false}`` in a run's JSON), and land in ``model``.
    """

    # A mistyped override (``hiden=32``) is an error that names it, not a silently ignored key.
    model_config = ConfigDict(extra="forbid")

    model: ModelConfig = Field(
        default_factory=ModelConfig,
        description="Architecture of the recommender (text_dim and num_items are set from the data).",
    )

    mode: Literal["auto", "frozen", "lora", "full"] = Field(
        "auto",
        description="Encoder fine-tuning level: frozen (cached embeddings), lora (peft), full, or auto: "
        "on CUDA full for an encoder of at most auto_full_max_params parameters, else lora; on CPU "
        "frozen, then a LoRA phase within auto_lora_steps / auto_lora_seconds, kept only if it "
        "raises validation NDCG@10 by more than auto_min_gain.",
    )
    auto_lora_steps: int = Field(30, description="auto on CPU: most optimizer steps of the LoRA phase.")
    auto_lora_seconds: float = Field(
        60.0,
        description="auto on CPU: wall-clock budget of the LoRA phase, re-encoding the catalog "
        "included (the phase is skipped when that re-encoding alone would not fit).",
    )
    auto_min_gain: float = Field(
        0.0, description="auto on CPU: the LoRA phase is kept only if validation NDCG@10 rises by more."
    )
    auto_full_max_params: int = Field(
        50_000_000,
        description="auto on CUDA: fine-tune every encoder weight when the encoder has at most this many "
        "parameters (MiniLM-L6: 22.7M), LoRA above it.",
    )
    lr: float = Field(3e-3, description="AdamW learning rate of the recommender (not the encoder).")
    encoder_lr: float = Field(5e-5, description="AdamW learning rate of the encoder (lora / full modes).")
    weight_decay: float = Field(0.0, description="AdamW weight decay.")
    batch_size: int = Field(128, description="User sequences per step.")
    epochs: int = Field(20, description="Maximum passes over the training sequences.")
    max_steps_per_epoch: int | None = Field(None, description="Cap on steps per epoch (smoke runs).")
    max_seconds: float | None = Field(
        None,
        description="Wall-clock budget: no epoch after the first starts after this many seconds "
        "of training (the best validated weights are kept); None = no budget.",
    )
    patience: int = Field(3, description="Stop after this many validations without a better NDCG@10.")
    eval_every: int = Field(1, description="Validate every this many epochs.")
    val_max_cases: int | None = Field(
        5000, description="Validate on a fixed random subset of this many users (None: all)."
    )
    loss: Literal["auto", "full", "sampled"] = Field(
        "auto",
        description="Softmax over the full catalog, or each target against shared negatives "
        "drawn from q (negative_power) with logQ correction; auto = full on CUDA, sampled on CPU "
        "(about 10x less CPU per step on Beauty's 12k items at 256 negatives).",
    )
    negatives: int = Field(1024, description="Shared negatives per step of the sampled softmax.")
    negative_power: float = Field(
        0.0,
        description="Sampled softmax proposal q ∝ (training count + 1) ** power: 0 uniform, "
        "1 popularity (harder negatives); logits are corrected by log(negatives * q).",
    )
    logq_correction: bool = Field(
        True, description="Subtract log(negatives * q(item)) from sampled logits (Yi et al., RecSys'19)."
    )
    encoder_items_per_step: int = Field(
        256, description="lora/full: most items re-encoded with gradients per step (targets first)."
    )
    lora_r: int = Field(8, description="LoRA rank.")
    lora_alpha: int = Field(16, description="LoRA scaling numerator.")
    lora_dropout: float = Field(0.1, description="Dropout on the LoRA path.")
    lora_targets: list[str] = Field(
        default_factory=lambda: ["query", "value"], description="Encoder modules that get LoRA adapters."
    )
    protocol: Protocol = Field("loo", description="Split to train and validate on: loo or time.")
    seed: int = Field(42, description="Seed of python, numpy and torch.")
    device: str = Field("auto", description="auto (CUDA when present), cpu, cuda or cuda:N.")
    num_threads: int | None = Field(
        None, description="CPU threads; None = min(2, cores): more threads than cores is slower."
    )
    cache_dir: Path | None = Field(
        None, description="Where frozen item embeddings are cached; None = <out_dir>/../embedding_cache."
    )
    resume: bool = Field(True, description="Continue from out_dir's checkpoint when its config matches.")
    progress: bool = Field(True, description="Show tqdm progress bars (hidden when not a terminal).")

    @model_validator(mode="before")
    @classmethod
    def _architecture_given_flat(cls, values: Any) -> Any:
        if not isinstance(values, dict):
            return values
        flat = {k: values[k] for k in values if k in ModelConfig.model_fields and k not in cls.model_fields}
        if not flat:
            return values
        model = values.get("model") or {}
        if isinstance(model, ModelConfig):
            model = model.model_dump()
        rest = {k: v for k, v in values.items() if k not in flat}
        return {**rest, "model": {**model, **flat}}

    def override(self, **changes: Any) -> TrainConfig:
        """A validated copy with ``changes`` (architecture fields flat or under ``model``)."""
        return TrainConfig.model_validate({**self.model_dump(), **changes})

    def architecture(self, num_items: int, text_dim: int) -> ModelConfig:
        """The model's architecture for a catalog of ``num_items`` and an encoder of ``text_dim``."""
        return self.model.model_copy(update={"num_items": num_items, "text_dim": text_dim})

    def fingerprint(self) -> str:
        """A digest of what changes the result (not epochs, patience, progress or resume)."""
        skip = {"epochs", "patience", "progress", "resume", "cache_dir", "num_threads", "device"}
        skip.add("max_seconds")
        # How auto picks its phases changes no phase's weights: a phase's checkpoint still resumes.
        skip |= {"auto_lora_steps", "auto_lora_seconds", "auto_min_gain", "auto_full_max_params"}
        payload = json.dumps(self.model_dump(mode="json", exclude=skip), sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


@dataclass
class TrainResult:
    """What a training run produced."""

    model: Recommender
    model_dir: Path
    config: TrainConfig
    best_epoch: int
    best_metric: float
    """Validation NDCG@10 of the kept weights."""
    history: list[dict[str, float]] = field(default_factory=list)
    train_seconds: float = 0.0
    embedding_seconds: float = 0.0
    """Seconds spent encoding item texts (0 on a cache hit)."""
    device: str = "cpu"
    stop_reason: str = "epochs"
    """Why training ended: ``epochs`` (all run), ``patience`` (early stopping) or ``time budget``."""
    world_size: int = 1
    """Processes that trained it together (torchrun); 1 = a single process."""
    mode_ran: str = "frozen"
    """The fine-tuning level of the kept weights (``auto`` resolves to one of frozen, lora, full)."""
    phases: list[dict[str, Any]] = field(default_factory=list)
    """What each phase ran and cost (mode, epochs or steps, seconds, validation NDCG@10), in order;
    ``auto`` on CPU has a frozen phase then a LoRA phase that says whether it was kept and why."""
