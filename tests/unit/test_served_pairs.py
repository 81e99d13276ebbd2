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
