"""Batched chat generation: prompts in, texts with their token counts and speed out."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import torch
from transformers import GenerationMixin, LogitsProcessorList, RepetitionPenaltyLogitsProcessor

from ml.generation.load import Generator

Message = dict[str, str]


@dataclass(frozen=True)
class GenerationConfig:
    """How to generate.

    Attributes:
        max_new_tokens: the token budget of each text.
        min_new_tokens: suppress the end token before this many (benchmarks: a fixed length).
        do_sample: False = greedy (deterministic); True = sampling with ``temperature``/``top_p``.
        temperature: sampling temperature (sampling only).
        top_p: nucleus sampling mass (sampling only).
        seed: seeds the sampler, so a sampled batch repeats exactly; ignored when greedy.
        batch_size: prompts per forward batch (left-padded to the longest in the batch).
        system_prompt: a system message put before each prompt given as a plain string.
        repetition_penalty: > 1 discourages repeating tokens (the untuned model echoes its input).
        penalize_prompt: the penalty also counts the prompt's tokens (transformers' default).
            False counts only the answer's own tokens: a text may then copy a product name
            from its facts exactly, but not loop on what it already wrote.
    """

    max_new_tokens: int = 60
    min_new_tokens: int = 0
    do_sample: bool = False
    temperature: float = 0.7
    top_p: float = 0.9
    seed: int = 0
    batch_size: int = 8
    system_prompt: str | None = None
    repetition_penalty: float = 1.0
    penalize_prompt: bool = True

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1 or self.batch_size < 1:
            raise ValueError("max_new_tokens and batch_size must be at least 1")
        if not 0 <= self.min_new_tokens <= self.max_new_tokens:
            raise ValueError("min_new_tokens must be between 0 and max_new_tokens")
        if self.do_sample and not (self.temperature > 0 and 0 < self.top_p <= 1):
            raise ValueError("sampling needs temperature > 0 and 0 < top_p <= 1")


@dataclass(frozen=True)
class GenerationResult:
    """The texts in prompt order, the new tokens of each (up to and with its end token), speed."""

    texts: list[str]
    new_tokens: list[int]
    seconds: float
    batches: int = 0
    prompt_tokens: list[int] = field(default_factory=list)

    @property
    def total_new_tokens(self) -> int:
        return sum(self.new_tokens)

    @property
    def tokens_per_s(self) -> float:
        return self.total_new_tokens / self.seconds if self.seconds > 0 else 0.0


def chat_prompt(
    generator: Generator, prompt: str | Sequence[Message], system_prompt: str | None = None
) -> str:
    """One prompt through the model's chat template, ending where the assistant's answer starts.

    A string becomes one user message (after ``system_prompt`` when given); a list of
    ``{"role", "content"}`` messages is used as it is.
    """
    if isinstance(prompt, str):
        messages: list[Message] = [{"role": "system", "content": system_prompt}] if system_prompt else []
        messages.append({"role": "user", "content": prompt})
    else:
        messages = list(prompt)
    text = generator.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if not isinstance(text, str):
        raise TypeError("the chat template did not render to text")
    return text


def _count_new(row: torch.Tensor, stop_ids: set[int], pad_id: int | None) -> int:
    """New tokens up to and including the first end token; padding after it does not count."""
    count = 0
    for token in row.tolist():
        if token in stop_ids:
            return count + 1
        if pad_id is not None and token == pad_id:
            return count
        count += 1
    return count


def _stop_ids(generator: Generator) -> set[int]:
    eos = generator.model.generation_config.eos_token_id
    ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    if generator.tokenizer.eos_token_id is not None:
        ids.add(int(generator.tokenizer.eos_token_id))
    return ids


def _penalty(config: GenerationConfig, prompt_width: int) -> dict[str, Any]:
    """``generate``'s keyword for the repetition penalty; left padding makes the prompt part of
    every row ``prompt_width`` tokens wide, so the answer's tokens start there in each."""
    if config.penalize_prompt or config.repetition_penalty == 1.0:
        return {"repetition_penalty": config.repetition_penalty}
    processor = RepetitionPenaltyLogitsProcessor(
        float(config.repetition_penalty), prompt_ignore_length=prompt_width
    )
    return {"logits_processor": LogitsProcessorList([processor])}


def generate(
    generator: Generator,
    prompts: Sequence[str | Sequence[Message]],
    config: GenerationConfig | None = None,
) -> GenerationResult:
    """Generate one answer per prompt, in batches, under ``torch.inference_mode()``.

    Args:
        generator: a loaded model (``load_generator``).
        prompts: plain user prompts, or full chat message lists.
        config: budget, decoding and batching; the defaults are greedy with 60 new tokens.

    Returns:
        The answers (special tokens and surrounding blanks stripped) in prompt order, the new
        tokens of each and the wall time of the whole call.
    """
    config = config or GenerationConfig()
    tokenizer, model = generator.tokenizer, generator.model
    stop_ids = _stop_ids(generator)
    pad_id = tokenizer.pad_token_id
    texts: list[str] = []
    counts: list[int] = []
    prompt_lengths: list[int] = []
    batches = 0
    start = time.perf_counter()
    rng_devices = [generator.device] if generator.device.type == "cuda" else []
    with torch.inference_mode(), torch.random.fork_rng(devices=rng_devices, enabled=config.do_sample):
        if config.do_sample:
            torch.manual_seed(config.seed)
        for first in range(0, len(prompts), config.batch_size):
            chunk = [
                chat_prompt(generator, p, config.system_prompt)
                for p in prompts[first : first + config.batch_size]
            ]
            enc = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False).to(
                generator.device
            )
            sampling = {"temperature": config.temperature, "top_p": config.top_p} if config.do_sample else {}
            penalty = _penalty(config, prompt_width=int(enc["input_ids"].shape[1]))
            out = cast(GenerationMixin, model).generate(
                **enc,
                max_new_tokens=config.max_new_tokens,
                min_new_tokens=config.min_new_tokens,
                do_sample=config.do_sample,
                pad_token_id=pad_id,
                **penalty,
                **sampling,
            )
            # Without return_dict_in_generate, generate returns the token ids: prompt + new.
            new = cast(torch.Tensor, out)[:, enc["input_ids"].shape[1] :].cpu()
            texts.extend(t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True))
            counts.extend(
                _count_new(row, stop_ids, pad_id if pad_id not in stop_ids else None) for row in new
            )
            prompt_lengths.extend(int(n) for n in enc["attention_mask"].sum(dim=1).tolist())
            batches += 1
    return GenerationResult(
        texts=texts,
        new_tokens=counts,
        seconds=time.perf_counter() - start,
        batches=batches,
        prompt_tokens=prompt_lengths,
    )
