"""Fine-tuning the recommender on next-item prediction.

Three levels, one loop (``TrainConfig.mode``):

* ``frozen``: item text embeddings are computed once and cached on disk (keyed by encoder and
  texts); only the projection, ID embeddings and user transformer learn. The CPU default.
* ``lora``: LoRA adapters (peft) on the encoder's attention query/value; each step re-encodes the
  batch's items with gradients, the rest of the catalog comes from a cache refreshed every epoch.
* ``full``: the same with every encoder weight trainable (a GPU job).
* ``auto`` (the default): on CUDA ``full`` for an encoder of at most ``auto_full_max_params``
  parameters (a small encoder fits and learns most that way), else ``lora``; on CPU ``frozen``,
  then a short LoRA phase from the frozen weights within ``auto_lora_steps`` steps and
  ``auto_lora_seconds`` seconds (re-encoding the catalog included), kept only if it raises
  validation NDCG@10 by more than ``auto_min_gain`` (:func:`keep_lora`); otherwise the frozen
  weights stay. What each phase ran and cost is in ``phases.json`` and :attr:`TrainResult.phases`.

The loss is a softmax over the catalog at every position of the training prefix (SASRec's
sequence-to-sequence objective with cross-entropy instead of one sampled negative): the full
catalog, or the target against negatives shared by the step, drawn from a uniform or
popularity-shaped proposal and logQ-corrected (sampled softmax; :mod:`ml.modeling.losses`),
where the full one costs too much. Early stopping watches validation NDCG@10; checkpoints allow resuming.

Under ``torchrun`` (``WORLD_SIZE`` > 1) the same :func:`train` runs in every process as
DistributedDataParallel: each rank takes its share of the same shuffled batches, gradients are
averaged, rank 0 validates and every rank follows its early-stopping verdict, and only rank 0
writes the checkpoint, history and model.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ml.modeling.batches import Batch, make_batches, windows
from ml.modeling.config import TrainConfig, TrainResult
from ml.modeling.datasets import PAD, TrainingData
from ml.modeling.distributed import Distributed, process_group, resolve_device
from ml.modeling.embeddings import item_embeddings
from ml.modeling.evaluate import evaluate
from ml.modeling.losses import full_softmax_loss, proposal, sampled_softmax_loss
from ml.modeling.model import Recommender, TextEncoder, resolve_encoder

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pt"
HISTORY_FILE = "history.json"
PHASES_FILE = "phases.json"
MODEL_DIR = "model"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class StepStats:
    loss: float
    sequences: int
    positions: int
    encoder_tokens: int


class Trainer:
    """Holds a model, its optimizer and the encoder; :meth:`step` does one update."""

    def __init__(
        self,
        data: TrainingData,
        config: TrainConfig,
        cache_dir: Path | None = None,
        text_embeddings: torch.Tensor | None = None,
        dist: Distributed | None = None,
    ) -> None:
        """Set up model, encoder and optimizer.

        Args:
            data: the training data.
            config: hyperparameters.
            cache_dir: the item embedding cache (frozen encoders; the start point otherwise).
            text_embeddings: item text embeddings computed elsewhere (skips encoding the catalog).
            dist: this process's place in a torchrun job (default: a single process); call
                :meth:`distribute` on every rank before training.
        """
        self.data = data
        self.config = config
        self.dist = dist or Distributed()
        self.device = resolve_device(config.device)
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
        if self.device.type == "cpu":
            cores = min(2, os.cpu_count() or 1)
            # Ranks on one CPU node share its cores: more threads than cores is slower.
            torch.set_num_threads(config.num_threads or max(1, cores // self.dist.local_world_size))
        seed_everything(config.seed)
        self.rng = np.random.default_rng(config.seed)
        self.embedding_seconds = 0.0
        self.mode = trainer_mode(config, self.device)

        encoder: TextEncoder | None = None
        text_emb: torch.Tensor | None = None
        text_dim = 0
        if config.model.use_text:
            encoder = TextEncoder(config.model.encoder, config.model.max_text_tokens)
            if text_embeddings is not None:
                text_emb = text_embeddings
            else:
                text_emb, self.embedding_seconds = item_embeddings(data, encoder, cache_dir, config.progress)
            text_dim = encoder.dim
        elif self.mode != "frozen":
            raise ValueError(f"mode={self.mode!r} fine-tunes the text encoder; it needs use_text=True")
        warm = torch.as_tensor(data.item_counts(config.protocol) > 0)
        self.model = Recommender(
            config.architecture(data.num_items, text_dim or 1),
            data.item_ids,
            data.item_texts,
            text_embeddings=text_emb,
            warm=warm,
        ).to(self.device)

        self.tune_encoder = self.mode != "frozen"
        self.encoder = encoder
        if encoder is not None and self.tune_encoder:
            if self.mode == "lora":
                from peft import LoraConfig, get_peft_model

                lora = LoraConfig(
                    r=config.lora_r,
                    lora_alpha=config.lora_alpha,
                    lora_dropout=config.lora_dropout,
                    target_modules=list(config.lora_targets),
                )
                encoder.model = get_peft_model(encoder.model, lora)
            encoder.to(self.device).train()
            self.model.encoder = encoder
            self.item_tokens, self.token_counts = encoder.tokenize_catalog(data.item_texts)
        elif encoder is not None:
            # Frozen: keep the encoder for search/new items but off the autograd path.
            encoder.requires_grad_(False)
            self.model.encoder = encoder

        self.full_softmax = config.loss == "full" or (config.loss == "auto" and self.device.type == "cuda")
        # The sampled softmax draws its shared negatives from q ∝ (training count + 1) ** power.
        self.proposal = proposal(data.item_counts(config.protocol), config.negative_power).to(self.device)

        own = [p for n, p in self.model.named_parameters() if not n.startswith("encoder.")]
        groups: list[dict[str, Any]] = [{"params": own, "lr": config.lr}]
        if encoder is not None and self.tune_encoder:
            tuned = [p for p in encoder.parameters() if p.requires_grad]
            groups.append({"params": tuned, "lr": config.encoder_lr})
        fused = self.device.type == "cuda"
        self.optimizer = torch.optim.AdamW(
            groups, lr=config.lr, weight_decay=config.weight_decay, fused=fused
        )
        self.autocast = self.device.type == "cuda"
        # Long histories are cut into windows once; every window has at least one target.
        self.sequences = list(windows(data.train_sequences(config.protocol), config.model.max_len))
        self._ddp: nn.Module | None = None

    def distribute(self) -> None:
        """Wrap the trained modules in DistributedDataParallel (every rank, after any resume).

        DDP starts every rank from rank 0's weights and averages gradients in ``backward``.
        Buffers (the item text cache) are equal on all ranks and not re-sent every step.
        """
        if not self.dist.enabled or self._ddp is not None:
            return
        from torch.nn.parallel import DistributedDataParallel

        # Dropout masks and sampled negatives should differ between ranks (the weights do not).
        torch.manual_seed(self.config.seed + self.dist.rank)
        ids = [self.device.index] if self.device.type == "cuda" else None
        self._ddp = DistributedDataParallel(_Objective(self), device_ids=ids, forward_sync_buffers=False)

    def _batch_count(self) -> int:
        """Batches of one epoch for this process: all of them, or a rank's equal share."""
        n = math.ceil(len(self.sequences) / self.config.batch_size)
        if not self.dist.enabled:
            return n
        if n < self.dist.world_size:
            raise ValueError(
                f"{n} batches of {self.config.batch_size} sequences cannot feed {self.dist.world_size} "
                "ranks: lower batch_size or use fewer processes"
            )
        return n // self.dist.world_size

    def batches(self) -> Iterator[Batch]:
        """One epoch of batches (this rank's share of them under torchrun)."""
        it = make_batches(self.sequences, self.config.batch_size, self.config.model.max_len, self.rng)
        if self.dist.enabled:
            # Every rank draws the same shuffled batches (same seed, same epoch) and takes every
            # world_size-th, like DistributedSampler; equal counts keep DDP's all-reduces paired.
            world = self.dist.world_size
            it = itertools.islice(it, self.dist.rank, self._batch_count() * world, world)
        for n, batch in enumerate(it):
            if self.config.max_steps_per_epoch is not None and n >= self.config.max_steps_per_epoch:
                return
            yield batch

    def steps_per_epoch(self) -> int:
        n = self._batch_count()
        cap = self.config.max_steps_per_epoch
        return n if cap is None else min(n, cap)

    def _fresh_text(
        self, items: torch.Tensor, targets: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Differentiable text embeddings for some of ``items`` (targets first)."""
        assert self.encoder is not None
        limit = self.config.encoder_items_per_step
        target_set = torch.unique(targets[targets != PAD])
        others = items[~torch.isin(items, target_set) & (items != PAD)]
        others = others[torch.randperm(len(others), device=others.device)]
        chosen = torch.cat([target_set, others])[:limit]
        counts = self.token_counts[chosen.cpu().numpy()]
        tokens = self.encoder.rows(self.item_tokens, chosen, int(counts.max()))
        return chosen, self.encoder.pool(tokens), int(counts.sum())

    def step(self, batch: Batch) -> StepStats:
        """One optimizer update on a batch."""
        self.model.train()
        inputs = batch.inputs.to(self.device)
        targets = batch.targets.to(self.device)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            objective = self._ddp if self._ddp is not None else self.loss
            loss, where, tokens = objective(inputs, targets)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(
            [p for g in self.optimizer.param_groups for p in g["params"]], max_norm=5.0
        )
        self.optimizer.step()
        return StepStats(float(loss.detach()), batch.size, int(where.sum()), tokens)

    def loss(self, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Next-item cross-entropy of a batch at every position (on the device, under autocast).

        Full softmax over the catalog, or the target against shared negatives drawn from
        ``self.proposal`` with logQ correction (see :mod:`ml.modeling.losses`).

        Returns:
            The loss, the mask of target positions, and the encoder tokens read.
        """
        model = self.model
        n_items = self.data.num_items
        negatives = None
        # Padding is never a candidate, but it is looked up (as a zero vector) for inputs.
        if self.full_softmax:
            candidates = torch.arange(n_items, device=self.device)
        else:
            negatives = torch.multinomial(self.proposal, self.config.negatives, replacement=True)
            pool = torch.cat([torch.zeros(1, dtype=torch.long, device=self.device), inputs.flatten()])
            candidates = torch.unique(torch.cat([pool, targets.flatten(), negatives]))
        tokens = 0
        text = None
        if self.tune_encoder:
            chosen, fresh, tokens = self._fresh_text(candidates, targets)
            base = model.text_embeddings[candidates].to(fresh.dtype)
            slot = torch.searchsorted(candidates, chosen)
            text = base.index_copy(0, slot, fresh)
        reps = model.item_table(text_embeddings=text, items=candidates)
        lookup = torch.full((n_items,), -1, dtype=torch.long, device=self.device)
        lookup[candidates] = torch.arange(len(candidates), device=self.device)
        hidden = model.encode_sequences(reps[lookup[inputs]], inputs == PAD)
        where = targets != PAD
        goal = targets[where]
        if negatives is None:
            # candidates is the whole vocabulary in index order: reps is the item table.
            return full_softmax_loss(hidden[where], reps, goal), where, tokens
        log_q = torch.log(self.proposal * self.config.negatives)
        loss = sampled_softmax_loss(
            hidden[where],
            reps[lookup[goal]],
            reps[lookup[negatives]],
            goal,
            negatives,
            log_q[goal] if self.config.logq_correction else None,
            log_q[negatives] if self.config.logq_correction else None,
        )
        return loss, where, tokens

    def refresh_item_cache(self) -> None:
        """Re-encode every item with the current encoder (lora / full, once per epoch)."""
        if self.encoder is None or not self.tune_encoder:
            return
        emb = self.encoder.encode_catalog(
            self.item_tokens, self.token_counts, progress=self.config.progress
        ).to(self.device)
        emb[PAD] = 0.0
        self.model.text_embeddings.copy_(emb)
        self.encoder.train()
        self.model._table = None

    def snapshot(self) -> dict[str, Any]:
        """A CPU copy of the learned weights (the encoder's too when it is tuned)."""
        state = {"model": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}}
        if self.tune_encoder and self.encoder is not None:
            state["encoder"] = {
                k: v.detach().cpu().clone() for k, v in self.encoder.model.state_dict().items()
            }
        return state

    def restore(self, snapshot: dict[str, Any]) -> None:
        """Put back weights taken by :meth:`snapshot`."""
        self.model.load_state_dict(snapshot["model"])
        if "encoder" in snapshot and self.encoder is not None:
            self.encoder.model.load_state_dict(snapshot["encoder"])
        self.model._table = None


class _Objective(nn.Module):
    """The modules a step trains, with the step's loss as ``forward``: what DDP wraps.

    DDP averages the gradients of a ``forward`` it ran itself; the recommender's own methods
    (``item_table``, ``encode_sequences``) are not its forward, and a tuned encoder is not its
    submodule, hence this thin module around :meth:`Trainer.loss`.
    """

    def __init__(self, trainer: Trainer) -> None:
        super().__init__()
        self.model = trainer.model
        if trainer.tune_encoder and trainer.encoder is not None:
            self.encoder = trainer.encoder
        self._loss = trainer.loss

    def forward(self, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
        return self._loss(inputs, targets)


def _validate(trainer: Trainer) -> dict[str, float]:
    config = trainer.config
    return evaluate(
        trainer.model,
        trainer.data,
        "validation",
        config.protocol,
        max_cases=config.val_max_cases,
        seed=config.seed,
        coverage=False,
    )


def train(
    data: TrainingData, config: TrainConfig | None = None, out_dir: Path | str = "model-run"
) -> TrainResult:
    """Train a recommender on ``data`` and save the best weights under ``out_dir/model``.

    Under ``torchrun`` every process calls this with the same arguments (see the module
    docstring); they all return the same model, written once by rank 0.

    Args:
        data: items, sequences and splits (see :mod:`ml.modeling.datasets`).
        config: hyperparameters; defaults to ``TrainConfig()``.
        out_dir: run folder: ``checkpoint.pt`` (resume), ``history.json`` and ``model/``.

    Returns:
        The trained model (best validation NDCG@10, in eval mode) and its history.
    """
    config = config or TrainConfig()
    out = Path(out_dir)
    with process_group(config.device) as dist:
        if config.mode != "auto":
            result = _train(data, config, out, dist)
        elif not config.model.use_text:
            result = _train(data, config.override(mode="frozen"), out, dist)
        elif resolve_device(config.device).type == "cuda":
            result = _train(data, config.override(mode=auto_mode_on_cuda(config)), out, dist)
        else:
            result = _train(data, config.override(mode="frozen"), out, dist)
            result = _lora_phase(data, config, out, result, dist)
        if dist.is_main:
            ran = {"mode": config.mode, "ran": result.mode_ran, "phases": result.phases}
            (out / PHASES_FILE).write_text(json.dumps(ran, indent=2))
        return result


def trainer_mode(config: TrainConfig, device: torch.device) -> str:
    """The level one :class:`Trainer` runs: ``auto`` is frozen on CPU (its first phase)."""
    if config.mode != "auto":
        return config.mode
    if not config.model.use_text or device.type != "cuda":
        return "frozen"
    return auto_mode_on_cuda(config)


def auto_mode_on_cuda(config: TrainConfig) -> str:
    """``full`` for an encoder of at most ``auto_full_max_params`` parameters, else ``lora``.

    The count is read from the encoder's config (embeddings + 12 h^2 per layer: 22.3M for
    MiniLM-L6, whose true count is 22.7M) without loading its weights.
    """
    from transformers import AutoConfig

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    cfg = AutoConfig.from_pretrained(resolve_encoder(config.model.encoder), local_files_only=True)
    hidden = int(getattr(cfg, "hidden_size", 0))
    layers = int(getattr(cfg, "num_hidden_layers", 0))
    params = int(getattr(cfg, "vocab_size", 0)) * hidden + layers * 12 * hidden * hidden
    return "full" if 0 < params <= config.auto_full_max_params else "lora"


def keep_lora(before: float, after: float, min_gain: float = 0.0) -> bool:
    """Whether the LoRA phase's weights replace the frozen ones: validation NDCG@10 rose by more
    than ``min_gain`` (a tie keeps the frozen weights: cheaper to serve, nothing lost)."""
    return math.isfinite(after) and after > before + min_gain


def _lora_phase(
    data: TrainingData, config: TrainConfig, out: Path, frozen: TrainResult, dist: Distributed
) -> TrainResult:
    """auto on CPU: a LoRA phase from the frozen phase's weights, kept only if it helps.

    Its budget covers the steps and re-encoding the whole catalog with the tuned encoder (the
    kept weights need every item's new embedding). That re-encoding is estimated first (the
    frozen phase's own encoding time, or the frozen encoder timed on 64 items when the catalog
    came from the cache); when it alone would not fit, the phase is skipped and says so.
    The head continues at a tenth of its learning rate: a fresh optimizer at full rate would
    first undo what it learned.
    """
    from dataclasses import replace

    frozen_phase = {
        "mode": "frozen",
        "epochs": len(frozen.history),
        "seconds": round(frozen.train_seconds, 2),
        "val_ndcg@10": frozen.best_metric,
        "stop_reason": frozen.stop_reason,
    }
    phase: dict[str, Any] = {"mode": "lora", "steps": 0, "seconds": 0.0, "kept": False}
    done = replace(frozen, mode_ran="frozen", phases=[frozen_phase, phase])
    if config.auto_lora_steps <= 0 or config.auto_lora_seconds <= 0:
        phase["reason"] = "no budget (auto_lora_steps or auto_lora_seconds is 0)"
        return done
    if dist.enabled:
        # Every rank would re-encode the catalog and validate; a torchrun job is a GPU job's place.
        phase["reason"] = "not run under torchrun"
        return done

    started = time.perf_counter()
    encode_estimate = frozen.embedding_seconds
    if encode_estimate <= 0:
        # The catalog's embeddings came from the cache: time the frozen encoder on a sample.
        encoder = frozen.model.encoder
        assert encoder is not None
        sample = np.random.default_rng(config.seed).permutation(np.arange(1, data.num_items))[:64]
        encoder.encode([data.item_texts[i] for i in sample])
        encode_estimate = (time.perf_counter() - started) * (data.num_items - 1) / max(len(sample), 1)
    phase["encode_estimate_seconds"] = round(encode_estimate, 2)
    if encode_estimate >= config.auto_lora_seconds:
        phase["seconds"] = round(time.perf_counter() - started, 2)
        phase["reason"] = (
            f"re-encoding {data.num_items - 1} items would take ~{encode_estimate:.0f} s of the "
            f"{config.auto_lora_seconds:.0f} s budget"
        )
        return done

    trainer = Trainer(
        data,
        config.override(mode="lora"),
        text_embeddings=frozen.model.text_embeddings.detach().cpu().clone(),
    )
    trainer.model.load_state_dict(frozen.model.state_dict())
    trainer.optimizer.param_groups[0]["lr"] = config.lr * 0.1
    step_budget = config.auto_lora_seconds - (time.perf_counter() - started) - encode_estimate

    t0 = time.perf_counter()
    losses: list[float] = []

    def room() -> bool:
        # Another step must fit: the slowest step so far is the guess for the next one.
        spent = time.perf_counter() - t0
        return len(losses) < config.auto_lora_steps and spent + slowest <= step_budget

    slowest = 0.0
    while room():
        before = len(losses)
        for batch in trainer.batches():
            mark = time.perf_counter()
            losses.append(trainer.step(batch).loss)
            slowest = max(slowest, time.perf_counter() - mark)
            if not room():
                break
        if len(losses) == before:  # no training sequence at all
            break
    step_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    trainer.refresh_item_cache()
    encode_seconds = time.perf_counter() - t0
    after = _validate(trainer)["ndcg@10"]
    kept = keep_lora(frozen.best_metric, after, config.auto_min_gain)
    phase.update(
        steps=len(losses),
        loss=float(np.mean(losses)) if losses else float("nan"),
        step_seconds=round(step_seconds, 2),
        encode_seconds=round(encode_seconds, 2),
        seconds=round(time.perf_counter() - started, 2),
        val_ndcg_before=frozen.best_metric,
        val_ndcg_after=after,
        kept=kept,
        reason=f"validation NDCG@10 {frozen.best_metric:.4f} -> {after:.4f} "
        f"({'kept' if kept else 'not above'} + min gain {config.auto_min_gain})",
    )
    log.info("auto: LoRA phase %s", phase)
    # The phase is one more record in the history (its loss.png point and its seconds in the
    # report's training time); it is the best epoch only when its weights are kept.
    epoch = len(frozen.history) + 1
    record = {
        "epoch": float(epoch),
        "loss": phase["loss"],
        "seconds": phase["seconds"],
        "val_ndcg@10": after,
        "lora_steps": float(len(losses)),
    }
    history = [*frozen.history, record]
    (out / HISTORY_FILE).write_text(json.dumps(history, indent=2))
    done = replace(done, history=history, train_seconds=frozen.train_seconds + phase["seconds"])
    if not kept:
        return done
    _finish_encoder(trainer)
    model = trainer.model
    model.eval()
    model_dir = model.save(
        out / MODEL_DIR,
        extra={
            "train_config": config.model_dump(mode="json"),
            "best_epoch": epoch,
            "best_val_ndcg@10": after,
            "encoder_path": resolve_encoder(config.model.encoder),
            "mode_ran": "lora",
        },
    )
    return replace(
        done, model=model, model_dir=model_dir, best_metric=after, best_epoch=epoch, mode_ran="lora"
    )


def _train(data: TrainingData, config: TrainConfig, out: Path, dist: Distributed) -> TrainResult:
    from tqdm.auto import tqdm

    out.mkdir(parents=True, exist_ok=True)
    cache_dir = config.cache_dir or out.parent / "embedding_cache"
    started = time.perf_counter()
    if not dist.is_main:
        dist.barrier()  # rank 0 encodes the catalog into the shared cache first; the others read it
    trainer = Trainer(data, config, cache_dir=cache_dir if config.model.use_text else None, dist=dist)
    if dist.is_main:
        dist.barrier()
    model = trainer.model

    history: list[dict[str, float]] = []
    best_metric, best_epoch, stale, first_epoch = -1.0, 0, 0, 1
    best_state: dict[str, Any] | None = None
    ckpt_path = out / CHECKPOINT_FILE
    data_key = f"{data.source}:{data.texts_hash()}:{data.num_users}:{data.num_interactions}"
    ckpt = _load_checkpoint(ckpt_path, trainer.device) if config.resume else None
    if ckpt is not None:
        if ckpt.get("fingerprint") == config.fingerprint() and ckpt.get("data") == data_key:
            trainer.restore(ckpt["weights"])
            trainer.optimizer.load_state_dict(ckpt["optimizer"])
            history, best_metric, best_epoch = ckpt["history"], ckpt["best_metric"], ckpt["best_epoch"]
            best_state, stale, first_epoch = ckpt["best_state"], ckpt["stale"], ckpt["epoch"] + 1
            _restore_rng(trainer, ckpt)
            log.info("resuming %s after epoch %d", out, ckpt["epoch"])
        else:
            log.info("checkpoint in %s is for another config or data; starting afresh", out)
    trainer.distribute()  # a collective: no rank writes a checkpoint before all have read it

    stop_reason = "epochs"
    for epoch in range(first_epoch, config.epochs + 1):
        if stale >= config.patience:
            stop_reason = "patience"
            break
        if config.max_seconds is not None and epoch > first_epoch:
            # At least one epoch runs. Every rank sees its own clock; rank 0's verdict keeps
            # them stopping together.
            late = time.perf_counter() - started > config.max_seconds
            if dist.broadcast({"stop": late} if dist.is_main else {})["stop"]:
                stop_reason = "time budget"
                break
        t0 = time.perf_counter()
        losses = []
        bar = tqdm(
            trainer.batches(),
            total=trainer.steps_per_epoch(),
            desc=f"epoch {epoch}",
            disable=None if config.progress and dist.is_main else True,
            leave=False,
        )
        for batch in bar:
            stats = trainer.step(batch)
            losses.append(stats.loss)
            bar.set_postfix(loss=f"{stats.loss:.3f}", refresh=False)
        trainer.refresh_item_cache()
        record: dict[str, float] = {
            "epoch": float(epoch),
            "loss": dist.mean(losses),
            "seconds": time.perf_counter() - t0,
        }
        if epoch % config.eval_every == 0 or epoch == config.epochs:
            # The weights are equal on every rank: rank 0 validates, all follow its verdict
            # (and so stop early together).
            metrics = dist.broadcast(_validate(trainer) if dist.is_main else {})
            record.update({f"val_{k}": v for k, v in metrics.items() if "/" not in k})
            if metrics["ndcg@10"] > best_metric:
                best_metric, best_epoch, stale = metrics["ndcg@10"], epoch, 0
                best_state = trainer.snapshot()
            else:
                stale += 1
        history.append(record)
        if not dist.is_main:
            continue
        log.info("epoch %d %s", epoch, {k: round(v, 4) for k, v in record.items()})
        _save_checkpoint(
            {
                "weights": trainer.snapshot(),
                "optimizer": trainer.optimizer.state_dict(),
                "fingerprint": config.fingerprint(),
                "data": data_key,
                "epoch": epoch,
                "history": history,
                "best_metric": best_metric,
                "best_epoch": best_epoch,
                "best_state": best_state,
                "stale": stale,
                "rng": _rng_state(trainer),
            },
            ckpt_path,
        )
        log.info("checkpoint after epoch %d saved in %s", epoch, ckpt_path)

    if best_state is not None:
        trainer.restore(best_state)
    if trainer.tune_encoder and trainer.encoder is not None:
        _finish_encoder(trainer)
    model.eval()
    train_seconds = time.perf_counter() - started
    model_dir = out / MODEL_DIR
    if dist.is_main:
        (out / HISTORY_FILE).write_text(json.dumps(history, indent=2))
        model_dir = model.save(
            model_dir,
            extra={
                "train_config": config.model_dump(mode="json"),
                "best_epoch": best_epoch,
                "best_val_ndcg@10": best_metric,
                "encoder_path": resolve_encoder(config.model.encoder) if config.model.use_text else None,
                **({"world_size": dist.world_size} if dist.enabled else {}),
            },
        )
    dist.barrier()  # every rank returns once the model is on disk
    return TrainResult(
        model=model,
        model_dir=model_dir,
        config=config,
        best_epoch=best_epoch,
        best_metric=best_metric,
        history=history,
        train_seconds=train_seconds,
        embedding_seconds=trainer.embedding_seconds,
        device=str(trainer.device),
        stop_reason=stop_reason,
        world_size=dist.world_size,
        mode_ran=trainer.mode,
        phases=[
            {
                "mode": trainer.mode,
                "epochs": len(history),
                "seconds": round(train_seconds, 2),
                "val_ndcg@10": best_metric,
                "stop_reason": stop_reason,
            }
        ],
    )


def _rng_state(trainer: Trainer) -> dict[str, Any]:
    """Every random state the next epoch draws from: batch order (numpy), dropout and sampled
    negatives (torch), so a resumed run continues exactly as the uninterrupted one would."""
    state: dict[str, Any] = {"numpy": trainer.rng.bit_generator.state, "torch": torch.get_rng_state()}
    if trainer.device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(trainer.device)
    return state


def _restore_rng(trainer: Trainer, ckpt: dict[str, Any]) -> None:
    state = ckpt.get("rng")
    if state is None:  # a checkpoint written before the states were kept
        trainer.rng = np.random.default_rng(trainer.config.seed + ckpt["epoch"])
        return
    trainer.rng.bit_generator.state = state["numpy"]
    torch.set_rng_state(state["torch"])
    if "cuda" in state and trainer.device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], trainer.device)


def _save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Write the checkpoint beside its place, then rename it there.

    A process killed while writing (an Airflow task's SIGKILL, an OOM kill, a lost node) would
    otherwise leave a truncated ``checkpoint.pt`` that its retry cannot load; a rename is atomic,
    so the retry finds the previous epoch's checkpoint or this one, whole.
    """
    partial = path.with_name(f".{path.name}.partial")
    torch.save(state, partial)
    os.replace(partial, path)


def _load_checkpoint(path: Path, device: torch.device) -> dict[str, Any] | None:
    """The run's checkpoint, or None when there is none or it cannot be read (start afresh)."""
    if not path.exists():
        return None
    try:
        ckpt: dict[str, Any] = torch.load(path, map_location=device, weights_only=False)
    except Exception as error:  # torch raises many types for a damaged file
        log.warning("checkpoint %s cannot be read (%s); starting afresh", path, error)
        return None
    return ckpt


def _finish_encoder(trainer: Trainer) -> None:
    """Fold LoRA into the encoder weights so serving loads a plain checkpoint.

    The kept text embeddings were encoded (in eval mode) by the kept encoder weights at the end
    of their epoch, so the catalog need not be encoded again.
    """
    encoder = trainer.encoder
    assert encoder is not None
    if trainer.mode == "lora":
        encoder.model = encoder.model.merge_and_unload()
    encoder.fine_tuned = True
    encoder.requires_grad_(False)
    encoder.eval()
