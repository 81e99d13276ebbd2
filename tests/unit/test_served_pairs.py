"""The fine-tuning task "served": serving's own prompts with targets that pass the grounding check."""

from __future__ import annotations

import pandas as pd

from ml.generation.bundles import SYSTEM_PROMPT
from ml.generation.finetune import served_pairs, training_pairs


def _items() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item_id": ["a", "b", "c", "d"],
            "title": [
                "Velvet Matte Lipstick, Red",
                "Lip Liner Pencil",
                "Nail Polish Remover",
                "Lip Gloss Clear",
            ],
            "brand": ["Revlon", "Revlon", "Cutex", "NYX"],
            "categories": [
                "Beauty > Makeup > Lips > Lipstick",
                "Beauty > Makeup > Lips > Lip Liners",
                "Beauty > Makeup > Nails > Nail Polish Remover",
                "Beauty > Makeup > Lips > Lip Gloss",
            ],
            "price": [8.5, 4.0, 3.25, 6.0],
        }
    )


def test_served_pairs_use_the_served_prompt_and_grounded_short_targets() -> None:
    related = [("b", "a"), ("c", "a"), ("d", "b"), ("a", "zz")]  # zz: not a training item
    pairs = served_pairs(_items(), related, n=3, seed=1)
    kinds = [m[1]["content"].splitlines()[-1] for m, _ in pairs]
    assert len(pairs) == 9  # three of each kind
    assert sum("catchy name" in k for k in kinds) == 3
    assert all(m[0] == {"role": "system", "content": SYSTEM_PROMPT} for m, _ in pairs)
    assert all("zz" not in m[1]["content"] for m, _ in pairs)
    assert all(0 < len(t.split()) <= 35 for _, t in pairs)
    # opt-in: the default tasks do not include it, the named task does
    assert len(training_pairs(_items(), ["served"], related=related, served_per_kind=2)) == 6
    assert not any(isinstance(p, list) for p, _ in training_pairs(_items(), ["copy"], related=related))


def test_grounded_texts_are_evaluated_as_serving_writes_them(monkeypatch) -> None:
    """raw_pass_rate is gated, so it is measured with serving's config (budget, penalty, system
    prompt), not with the understanding tasks' shorter budget."""
    from ml.generation import evaluate as evaluate_module
    from ml.generation.bundles import served_config
    from ml.generation.generate import GenerationConfig, GenerationResult

    seen: list[GenerationConfig] = []

    def recording_generate(generator, prompts, config):  # type: ignore[no-untyped-def]
        seen.append(config)
        return GenerationResult(texts=["" for _ in prompts], new_tokens=[0 for _ in prompts], seconds=0.0)

    monkeypatch.setattr(evaluate_module, "generate", recording_generate)
    cases = evaluate_module.EvaluationSet(understanding=[], copy=[], theme=[], grounded=[])
    tasks = GenerationConfig(max_new_tokens=40, batch_size=4)
    generator = type("Named", (), {"name": "g"})()  # evaluate reads only its name here
    evaluate_module.evaluate_generator(generator, cases, config=tasks)
    assert seen[:3] == [tasks] * 3  # understanding, copy, theme
    assert seen[3] == served_config(batch_size=4)
    assert seen[3].system_prompt == SYSTEM_PROMPT and seen[3].repetition_penalty > 1
    assert seen[3].max_new_tokens > tasks.max_new_tokens
    assert not seen[3].penalize_prompt  # names are copied from the prompt exactly


def test_the_served_penalty_counts_the_answer_not_the_prompt() -> None:
    """With ``penalize_prompt=False`` a token of the prompt keeps its score (a name is copied
    exactly) and a token the answer already wrote is penalised (no loops)."""
    import torch

    from ml.generation.generate import GenerationConfig, _penalty

    config = GenerationConfig(repetition_penalty=2.0, penalize_prompt=False)
    (processor,) = _penalty(config, prompt_width=3)["logits_processor"]
    ids = torch.tensor([[0, 5, 6, 7]])  # prompt (left-padded): 0 5 6; answer so far: 7
    scores = processor(ids, torch.ones(1, 10))
    assert scores[0, 5] == scores[0, 6] == scores[0, 8] == 1.0
    assert scores[0, 7] == 0.5
    assert _penalty(GenerationConfig(repetition_penalty=2.0), prompt_width=3) == {"repetition_penalty": 2.0}


def test_served_targets_name_sets_after_the_theme_the_prompt_gives() -> None:
    """A set is named after the category its items share below the root, else after its first
    item's leaf; serving's prompt gives that theme, so the model copies it instead of listing."""
    from ml.generation.bundles import prompt
    from ml.generation.finetune import _served_targets
    from ml.generation.grounding import Facts, ItemFacts

    records = _items().to_dict("records")
    lipstick, liner = (ItemFacts.from_record(records[i]) for i in range(2))
    remover = ItemFacts("e", "Nail Polish Remover", "Cutex", ("Beauty", "Nail Care", "Removers"), 3.25)
    lips = Facts(items=(lipstick, liner))
    assert "Its theme: Lips." in prompt("bundle_name", lips)
    assert _served_targets("bundle_name", lips) == [
        "Lips Set",
        "Lips Essentials",
        "The Lips Kit",
        "Revlon Favorites",
    ]
    mixed = Facts(items=(remover, lipstick))  # they share only the root
    assert "Its theme: Removers." in prompt("bundle_name", mixed)
    assert _served_targets("bundle_name", mixed) == [
        "Removers Set",
        "Removers Essentials",
        "The Removers Kit",
    ]
    bare = Facts(items=(ItemFacts("x", "Mug", None, (), 2.0), ItemFacts("y", "Tea", None, (), 3.0)))
    assert "theme" not in prompt("bundle_name", bare) and _served_targets("bundle_name", bare) == []
    # The texts name items exactly as the prompt lists them.
    description = _served_targets("bundle_description", lips)[0]
    assert description == "Velvet Matte Lipstick and Lip Liner Pencil go well together."
    assert "- Velvet Matte Lipstick by Revlon" in prompt("bundle_description", lips)
