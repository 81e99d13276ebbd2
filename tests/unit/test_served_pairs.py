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
