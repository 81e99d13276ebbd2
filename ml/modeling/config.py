"""What a training run is asked to do (:class:`TrainConfig`) and what it produced (:class:`TrainResult`)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from ml.modeling.datasets import Protocol
from ml.modeling.model import DEFAULT_ENCODER, ModelConfig, Recommender


class TrainConfig(BaseModel):
    """Hyperparameters of one training run (overrides by keyword: ``TrainConfig(epochs=5)``)."""

    mode: Literal["frozen", "lora", "full"] = Field(
        "frozen", description="Encoder fine-tuning level: frozen (cached embeddings), lora (peft), full."
    )
    encoder: str = Field(
        DEFAULT_ENCODER, description="Hugging Face checkpoint name or local path of the text encoder."
    )
    use_text: bool = Field(True, description="Represent items by their text; False trains SASRec (ID-only).")
    use_id_embedding: bool = Field(True, description="Add a learned ID embedding for items seen in training.")
    max_text_tokens: int = Field(64, description="Item texts are truncated to this many tokens.")
    max_len: int = Field(50, description="Most recent history items the user encoder reads.")
    hidden: int = Field(64, description="Width of item and user representations.")
    layers: int = Field(2, description="Transformer blocks of the user encoder.")
    heads: int = Field(2, description="Attention heads per block.")
    ff_mult: int = Field(1, description="Feed-forward width as a multiple of hidden (SASRec: 1).")
    dropout: float = Field(0.5, description="Dropout on embeddings, attention and feed-forward.")
    lr: float = Field(3e-3, description="AdamW learning rate of the recommender (not the encoder).")
    encoder_lr: float = Field(5e-5, description="AdamW learning rate of the encoder (lora / full modes).")
    weight_decay: float = Field(0.0, description="AdamW weight decay.")
    batch_size: int = Field(128, description="User sequences per step.")
    epochs: int = Field(20, description="Maximum passes over the training sequences.")
    max_steps_per_epoch: int | None = Field(None, description="Cap on steps per epoch (smoke runs).")
    patience: int = Field(3, description="Stop after this many validations without a better NDCG@10.")
    eval_every: int = Field(1, description="Validate every this many epochs.")
    val_max_cases: int | None = Field(
        5000, description="Validate on a fixed random subset of this many users (None: all)."
    )
    loss: Literal["auto", "full", "sampled"] = Field(
        "auto",
        description="Softmax over the full catalog, or over the batch's items plus shared "
        "negatives; auto = full on CUDA, sampled on CPU (3x faster per step on Beauty).",
    )
    negatives: int = Field(1024, description="Shared uniform negatives per step of the sampled softmax.")
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

    def architecture(self, num_items: int, text_dim: int) -> ModelConfig:
        """The architecture part of this config."""
        return ModelConfig(
            encoder=self.encoder,
            use_text=self.use_text,
            use_id_embedding=self.use_id_embedding,
            text_dim=text_dim,
            max_text_tokens=self.max_text_tokens,
            max_len=self.max_len,
            hidden=self.hidden,
            layers=self.layers,
            heads=self.heads,
            ff_mult=self.ff_mult,
            dropout=self.dropout,
            num_items=num_items,
        )

    def fingerprint(self) -> str:
        """A digest of what changes the result (not epochs, patience, progress or resume)."""
        skip = {"epochs", "patience", "progress", "resume", "cache_dir", "num_threads", "device"}
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
    world_size: int = 1
    """Processes that trained it together (torchrun); 1 = a single process."""
