"""Fine-tune the generator on labels the catalog really has (LoRA via peft, or full).

Three targets, each a label the catalog really has (nothing here is written by a person for
the model):

- *understanding* (``understanding_pairs``): an item's title → its category path and brand, in a
  fixed format (``target_text``) that a parser can read back;
- *copy* (``copy_pairs``): an item's facts (brand, category path, price band) → its real,
  seller-written title — the shop's own voice;
- *theme* (``theme_pairs``): a set of items (their titles) → their deepest common category path,
  the theme a bundle is named after.

Pairs come from a catalog frame (``item_id``, ``title``, ``categories`` as ``A > B > C``,
``brand``, ``price``); ``training_pairs`` mixes the three. The loss is on the answer only (the
prompt's tokens are masked), and training stops at a step budget or a time budget, whichever
comes first. ``save_tuned``/``load_tuned`` write and read what training changed: the LoRA adapter
alone (~2 MB) or, in ``full`` mode, the whole model.
"""

from __future__ import annotations

import html
import json
import math
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import torch
from peft import LoraConfig, PeftModel, get_peft_model

from ml.core.catalog import price_bucket
from ml.generation.generate import chat_prompt
from ml.generation.load import Generator

IGNORE = -100  # label of a token that carries no loss (prompt, padding)
UNDERSTANDING_PROMPT = "Product title: {title}\nGive its category path and its brand."
UNKNOWN_BRAND = "unknown"
COPY_PROMPT = (
    "Write the shop's product title for an item of brand {brand} in the category {categories}, "
    "price band {band}."
)
THEME_PROMPT = "Products:\n{titles}\nWhat is the deepest category they all share?"
TASKS = ("understanding", "copy", "theme", "served")
# Written beside a saved tuned model: its mode and base, so it is loaded the way it was saved.
TUNED_FILE = "shopflow_tuned.json"


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


def _encode(generator: Generator, prompt: Any, answer: str, max_length: int) -> tuple[list[int], list[int]]:
    """Token ids of prompt + answer + end token, and labels that score only the answer.

    ``prompt``: a user message, or the messages themselves (the served task's carry serving's
    system prompt, so the model learns the formats under the prompt it is served with)."""
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


# -- copy and theme targets ------------------------------------------------------------------------
def _text(value: object) -> str | None:
    """A present, non-blank string field (HTML entities undone: the catalog has ``&amp;``), else None."""
    if not isinstance(value, str) or not value.strip():
        return None
    return html.unescape(value).strip()


def _price(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and value == value else None  # NaN != NaN


def copy_prompt(brand: str | None, categories: str | None, price: float | None) -> str:
    """The copy task's prompt: an item's facts, in words (no ``label:`` layout to copy back)."""
    return COPY_PROMPT.format(
        brand=brand or UNKNOWN_BRAND, categories=categories or "unknown", band=price_bucket(price)
    )


def copy_pairs(items: pd.DataFrame) -> list[tuple[str, str]]:
    """(facts prompt, the seller's title) per item with a title and a category path."""
    pairs = []
    for row in items.itertuples(index=False):
        title, categories = _text(getattr(row, "title", None)), _text(getattr(row, "categories", None))
        if title is None or categories is None:
            continue
        brand, price = _text(getattr(row, "brand", None)), _price(getattr(row, "price", None))
        pairs.append((copy_prompt(brand, categories, price), title))
    return pairs


def common_path(paths: Sequence[str]) -> str | None:
    """The deepest category path every ``A > B > C`` path shares (compared case-blind), else None."""
    split = [[c.strip() for c in p.split(">") if c.strip()] for p in paths]
    if not split or any(not s for s in split):
        return None
    shared: list[str] = []
    for level in zip(*split, strict=False):
        if len({c.lower() for c in level}) != 1:
            break
        shared.append(level[0])
    return " > ".join(shared) or None


def theme_prompt(titles: Sequence[str]) -> str:
    return THEME_PROMPT.format(titles="\n".join(f"- {t}" for t in titles))


def item_sets(items: pd.DataFrame, n_sets: int, *, size: int = 3, seed: int = 0) -> list[list[int]]:
    """``n_sets`` sets of ``size`` row positions of ``items`` that share a category at a random depth.

    An anchor item and a depth are drawn; the others share the anchor's path down to that depth
    (their deepest common category may be deeper). Unrelated random items would almost always
    share only the root ("Beauty"), a target too easy to teach anything.
    """
    paths = [_text(c) for c in items["categories"]] if "categories" in items else []
    titled = [_text(t) is not None for t in items["title"]] if "title" in items else []
    usable = [i for i, (p, t) in enumerate(zip(paths, titled, strict=True)) if p is not None and t]
    if len(usable) < size:
        return []
    prefixes: dict[str, list[int]] = {}
    for i in usable:
        parts = [c.strip() for c in str(paths[i]).split(">")]
        for depth in range(1, len(parts) + 1):
            prefixes.setdefault(" > ".join(parts[:depth]).lower(), []).append(i)
    rng = random.Random(seed)
    sets: list[list[int]] = []
    for _ in range(n_sets * 4):  # a few anchors have no partners at their drawn depth
        if len(sets) == n_sets:
            break
        anchor = rng.choice(usable)
        parts = [c.strip() for c in str(paths[anchor]).split(">")]
        depth = rng.randint(1, len(parts))
        group = [i for i in prefixes[" > ".join(parts[:depth]).lower()] if i != anchor]
        if len(group) >= size - 1:
            sets.append([anchor, *rng.sample(group, size - 1)])
    return sets


def theme_pairs(items: pd.DataFrame, sets: Sequence[Sequence[int]]) -> list[tuple[str, str]]:
    """(titles prompt, ``Category: <deepest common path>``) per set of row positions of ``items``."""
    pairs = []
    for chosen in sets:
        rows = items.iloc[list(chosen)]
        titles = [_text(t) for t in rows["title"]]
        path = common_path([str(c) for c in rows["categories"]])
        if path is None or any(t is None for t in titles):
            continue
        pairs.append((theme_prompt([t for t in titles if t]), f"Category: {path}"))
    return pairs


def _served_targets(kind: str, facts: Any, currency: str = "$") -> list[str]:
    """Short texts of ``kind`` built from the facts alone, in a few phrasings (the model learns
    the format and brevity, not one sentence; the template stays the fallback's)."""
    from ml.generation.grounding import item_name, set_theme, shared_leaf

    items = facts.items
    titles = [item_name(i) for i in items]
    if kind == "bundle_name":
        theme = set_theme(items)  # serving's prompt gives it ("Its theme: ...")
        names = [f"{theme} Set", f"{theme} Essentials", f"The {theme} Kit"] if theme else []
        brands = {i.brand for i in items if i.brand}
        if len(brands) == 1 and all(i.brand for i in items):
            names.append(f"{next(iter(brands))} Favorites")
        return names
    if kind == "bundle_description":
        total = facts.total_price
        joined = titles[0] if len(titles) == 1 else ", ".join(titles[:-1]) + " and " + titles[-1]
        out = [f"{joined} go well together."]
        if total is not None:
            out += [
                f"Get {joined} together for {currency}{total:.2f}.",
                f"A set of {joined}, {currency}{total:.2f} in all.",
            ]
        return out
    if kind == "explanation":
        item, seen = titles[0], titles[1]
        it, hist = items[0], items[1]
        out = [f"Picked for you after {seen}."]
        if it.brand and hist.brand and it.brand.casefold() == hist.brand.casefold():
            out += [
                f"You liked {seen}, and {item} is also by {it.brand}.",
                f"More from {it.brand}, like {seen}.",
            ]
        leaf = shared_leaf([it, hist])
        if leaf:
            out += [f"Like {seen}, {item} is in {leaf}.", f"Since you liked {seen}, try {item}."]
        return out
    raise ValueError(f"unknown kind {kind!r}")


def served_pairs(
    items: pd.DataFrame, related: Sequence[tuple[str, str]], n: int, *, seed: int = 0
) -> list[tuple[Any, str]]:
    """Up to ``n`` pairs of each served kind (bundle name, bundle description, explanation):
    serving's own prompt (``bundles.prompt`` under its system prompt) from related training
    items' facts, and a short target built from those facts that passes the grounding check.

    The base fails mostly on length (it runs past the token budget or the word limit); these
    targets teach the served formats on the catalog's real items. Held-out items must not be in
    ``items`` (the evaluation's cases come from the held-out side).
    """
    from ml.generation.bundles import SYSTEM_PROMPT, explanation_facts, prompt
    from ml.generation.grounding import BrandIndex, Facts, ItemFacts, check

    records = {str(r["item_id"]): r for r in items.to_dict("records")}
    usable = [(a, b) for a, b in related if a in records and b in records]
    if not usable:
        return []
    brands = BrandIndex([str(r["brand"]) for r in records.values() if isinstance(r.get("brand"), str)])
    partners: dict[str, list[str]] = {}
    for a, b in usable:
        partners.setdefault(a, []).append(b)
    rng = random.Random(seed)
    out: list[tuple[Any, str]] = []
    for kind in ("bundle_name", "bundle_description", "explanation"):
        made = 0
        for a, b in rng.sample(usable, min(len(usable), 3 * n)):
            if made >= n:
                break
            ids = [a, b]
            if kind != "explanation":
                more = [c for c in partners.get(a, []) if c not in ids]
                if more and rng.random() < 0.5:
                    ids.append(rng.choice(more))
            facts_items = [ItemFacts.from_record(records[i]) for i in ids]
            facts = (
                explanation_facts(*facts_items) if kind == "explanation" else Facts(items=tuple(facts_items))
            )
            targets = [t for t in _served_targets(kind, facts) if check(t, facts, kind=kind, brands=brands)]
            if not targets:
                continue
            messages = [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": prompt(kind, facts)},
            ]
            out.append((messages, rng.choice(targets)))
            made += 1
    return out


def training_pairs(
    items: pd.DataFrame,
    tasks: Sequence[str] = TASKS,
    *,
    theme_sets: int | None = None,
    seed: int = 0,
    related: Sequence[tuple[str, str]] = (),
    served_per_kind: int | None = None,
    per_task: int | None = None,
) -> list[tuple[Any, str]]:
    """The pairs of the chosen tasks over ``items``, shuffled together (one mixed training set).

    Args:
        items: the training items (held-out items must not be in it).
        tasks: any of ``understanding``, ``copy``, ``theme``, ``served``.
        theme_sets: sets for the theme task; None = one per item.
        related: (item, earlier item) pairs of one user (the served task's bundles and
            explanations); served_per_kind: its pairs per kind (None: one per training item / 3).
        per_task: at most this many pairs of understanding, copy and theme each (a random
            sample; None: all). A step budget sees a few hundred pairs: uncapped, the ~10k copy
            and understanding pairs would drown the served formats (measured: 60 steps with
            served at 7% of the mix taught explanations to answer with a product title).
        seed: set sampling and the shuffle.

    Raises:
        ValueError: an unknown task.
    """
    unknown = set(tasks) - set(TASKS)
    if unknown:
        raise ValueError(f"unknown fine-tuning task(s) {sorted(unknown)}; expected some of {TASKS}")
    rng = random.Random(seed)

    def capped(task_pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
        if per_task is None or len(task_pairs) <= per_task:
            return task_pairs
        return rng.sample(task_pairs, per_task)

    pairs: list[tuple[Any, str]] = []
    if "served" in tasks:
        n = len(items) // 3 if served_per_kind is None else served_per_kind
        pairs += served_pairs(items, related, n, seed=seed)
    if "understanding" in tasks:
        pairs += capped(understanding_pairs(items))
    if "copy" in tasks:
        pairs += capped(copy_pairs(items))
    if "theme" in tasks:
        n = len(items) if theme_sets is None else theme_sets
        pairs += capped(theme_pairs(items, item_sets(items, n, seed=seed)))
    rng.shuffle(pairs)
    return pairs


# -- saving and loading what training changed ------------------------------------------------------
def save_tuned(
    result: FinetuneResult, folder: Path, *, base: str, extra: Mapping[str, Any] | None = None
) -> Path:
    """Write the tuned weights into ``folder``: the adapter alone (lora) or the model and tokenizer (full).

    ``base`` is the generator name the adapter belongs to (``load_tuned`` loads it under it).
    """
    folder.mkdir(parents=True, exist_ok=True)
    adapted: Any = result.adapted
    adapted.save_pretrained(folder)
    mode = "lora" if isinstance(result.adapted, PeftModel) else "full"
    if mode == "full":
        result.generator.tokenizer.save_pretrained(folder)
    record = {
        "mode": mode,
        "base": base,
        "steps": result.steps,
        "pairs": result.pairs,
        "trainable_parameters": result.trainable_parameters,
        "seconds": round(result.seconds, 2),
        "losses": [round(x, 4) for x in result.losses],
        **dict(extra or {}),
    }
    (folder / TUNED_FILE).write_text(json.dumps(record, indent=2))
    return folder


def tuned_record(folder: Path) -> dict[str, Any]:
    """What ``save_tuned`` wrote beside the weights (mode, base, steps, losses)."""
    path = folder / TUNED_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not a tuned generator folder (save_tuned writes {TUNED_FILE})")
    record: dict[str, Any] = json.loads(path.read_text())
    return record


def load_tuned(base: Generator, folder: Path) -> Generator:
    """The tuned generator saved in ``folder``, on top of ``base`` (loaded by the caller).

    A LoRA adapter is merged into the base weights (``merge_and_unload``): generation then costs
    what the base costs. ``base`` is changed in place; load a fresh one to keep the untuned model.
    """
    record = tuned_record(folder)
    if record["mode"] == "full":
        from ml.generation.load import load_generator

        full = load_generator(folder, device=str(base.device), dtype=base.model.dtype)
        return replace(full, name=f"{base.name}+full")
    start = time.perf_counter()
    peft_model: Any = PeftModel.from_pretrained(base.model, str(folder))
    merged = peft_model.merge_and_unload()
    merged.eval()
    return replace(
        base,
        model=merged,
        name=f"{base.name}+lora",
        path=folder,
        load_seconds=base.load_seconds + time.perf_counter() - start,
    )
