"""Fine-tune the generator on labels the catalog really has (LoRA via peft, or full).

The first target is *understanding*: an item's title → its category path and brand, in a fixed
format (``target_text``) that a parser can read back. Pairs come from a catalog frame
(``item_id``, ``title``, ``categories`` as ``A > B > C``, ``brand``); the loss is on the answer
only (the prompt's tokens are masked), and training stops at a step budget or a time budget,
whichever comes first.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import pandas as pd
import torch
from peft import LoraConfig, get_peft_model

from ml.generation.generate import chat_prompt
from ml.generation.load import Generator

IGNORE = -100  # label of a token that carries no loss (prompt, padding)
UNDERSTANDING_PROMPT = "Product title: {title}\nGive its category path and its brand."
UNKNOWN_BRAND = "unknown"


@dataclass(frozen=True)
class FinetuneConfig:
    """How to fine-tune.

    Attributes:
        mode: ``lora`` (adapters on ``target_modules``; the base stays frozen) or ``full``.
        max_steps: the step budget.
        time_budget_s: stop after the step that crosses this many seconds (None: no limit).
        batch_size: pairs per step.
        learning_rate: AdamW learning rate.
        lora_r: adapter rank; lora_alpha: its scale; lora_dropout: dropout on the adapter input.
        target_modules: the projections that get adapters.
        max_length: prompt + answer tokens kept per pair (the answer is kept whole when it fits).
        seed: batch order and adapter initialisation.
    """

    mode: Literal["lora", "full"] = "lora"
    max_steps: int = 100
    time_budget_s: float | None = None
    batch_size: int = 8
    learning_rate: float = 2e-4
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")
    max_length: int = 160
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_steps < 1 or self.batch_size < 1:
            raise ValueError("max_steps and batch_size must be at least 1")


@dataclass
class FinetuneResult:
    """The tuned generator (same tokenizer) and how training went.

    ``adapted`` is the peft model in ``lora`` mode (``save_pretrained`` writes the adapter
    alone), the model itself in ``full`` mode.
    """

    generator: Generator
    adapted: torch.nn.Module
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    trainable_parameters: int = 0
    pairs: int = 0

    @property
    def steps(self) -> int:
        return len(self.losses)


def target_text(categories: str | None, brand: str | None) -> str:
    """The answer format of the understanding task: two lines, category path then brand."""
    path = categories.strip() if isinstance(categories, str) and categories.strip() else "unknown"
    name = brand.strip() if isinstance(brand, str) and brand.strip() else UNKNOWN_BRAND
    return f"Category: {path}\nBrand: {name}"


def parse_target(text: str) -> tuple[str | None, str | None]:
    """(category path, brand) read back from a generated answer; None where a line is missing."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if value.strip() and key.strip().lower() in {"category", "brand"}:
            found.setdefault(key.strip().lower(), value.strip())
    return found.get("category"), found.get("brand")


def understanding_pairs(items: pd.DataFrame) -> list[tuple[str, str]]:
    """(prompt, answer) per item with a title and a category path; the brand may be unknown."""
    pairs = []
    for row in items.itertuples(index=False):
        title, categories = getattr(row, "title", None), getattr(row, "categories", None)
        if not isinstance(title, str) or not title.strip() or not isinstance(categories, str):
            continue
        brand = getattr(row, "brand", None)
        pairs.append((UNDERSTANDING_PROMPT.format(title=title.strip()), target_text(categories, brand)))
    return pairs


def _encode(generator: Generator, prompt: str, answer: str, max_length: int) -> tuple[list[int], list[int]]:
    """Token ids of prompt + answer + end token, and labels that score only the answer."""
    tokenizer = generator.tokenizer
    prompt_ids: list[int] = tokenizer(chat_prompt(generator, prompt), add_special_tokens=False)["input_ids"]
    answer_ids: list[int] = tokenizer(answer + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
    keep_prompt = max(0, max_length - len(answer_ids))
    prompt_ids = prompt_ids[-keep_prompt:] if keep_prompt else []
    ids = (prompt_ids + answer_ids)[:max_length]
    labels = ([IGNORE] * len(prompt_ids) + answer_ids)[:max_length]
    return ids, labels


def _batch(encoded: Sequence[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded tensors (training scores every position; no generation here)."""
    width = max(len(ids) for ids, _ in encoded)
    ids = [i + [pad_id] * (width - len(i)) for i, _ in encoded]
    labels = [lab + [IGNORE] * (width - len(lab)) for _, lab in encoded]
    mask = [[1] * len(i) + [0] * (width - len(i)) for i, _ in encoded]
    return {
        "input_ids": torch.tensor(ids),
        "attention_mask": torch.tensor(mask),
        "labels": torch.tensor(labels),
    }


def finetune(
    generator: Generator, pairs: Sequence[tuple[str, str]], config: FinetuneConfig | None = None
) -> FinetuneResult:
    """Fine-tune ``generator`` on (prompt, answer) pairs within the step and time budgets.

    The model is tuned in place: in ``lora`` mode peft injects adapters into its attention
    projections (the base weights stay frozen; ``result.adapted.disable_adapter()`` gives the
    base back for a comparison), in ``full`` mode every weight trains. The returned generator
    holds the same, now tuned, model in eval mode.

    Raises:
        ValueError: no pairs.
    """
    config = config or FinetuneConfig()
    if not pairs:
        raise ValueError("no training pairs")
    torch.manual_seed(config.seed)
    model: torch.nn.Module = generator.model
    if config.mode == "lora":
        lora = LoraConfig(
            task_type="CAUSAL_LM",
            r=config.lora_r,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            target_modules=list(config.target_modules),
        )
        model = get_peft_model(generator.model, lora)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate)
    pad_id = int(generator.tokenizer.pad_token_id)
    encoded = [_encode(generator, p, a, config.max_length) for p, a in pairs]
    order = random.Random(config.seed)
    queue: list[int] = []
    losses: list[float] = []
    model.train()
    start = time.perf_counter()
    for _ in range(config.max_steps):
        if len(queue) < config.batch_size:
            refill = list(range(len(encoded)))
            order.shuffle(refill)
            queue.extend(refill)
        picked, queue = queue[: config.batch_size], queue[config.batch_size :]
        batch = {k: v.to(generator.device) for k, v in _batch([encoded[i] for i in picked], pad_id).items()}
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise FloatingPointError(f"loss is {value} at step {len(losses) + 1}")
        losses.append(value)
        if config.time_budget_s is not None and time.perf_counter() - start > config.time_budget_s:
            break
    model.eval()
    return FinetuneResult(
        generator=replace(generator, name=f"{generator.name}+{config.mode}"),
        adapted=model,
        losses=losses,
        seconds=time.perf_counter() - start,
        trainable_parameters=sum(p.numel() for p in trainable),
        pairs=len(pairs),
    )
