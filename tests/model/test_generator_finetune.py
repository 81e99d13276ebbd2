"""The generator's fine-tuning run: targets, metrics, the gate, registration and serving's loader.

Metrics are checked on hand-made cases with figures worked out by hand. The run's stages go end to
end on a tiny random Llama saved with the real SmolLM2 tokenizer (a local checkpoint folder, so
``load_generator`` treats it like any base): the mechanics of prepare → fine-tune → evaluate →
register → gate → ``load_served_generator`` without the real weights' minutes of CPU. The real
SmolLM2 run is ``make bench-generation`` (and the slow test below).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from ml import registry
from ml.core.settings import Settings
from ml.generation import load as load_module
from ml.generation.evaluate import (
    GATED_METRICS,
    EvaluationSet,
    GroundedCase,
    compare,
    evaluate_generator,
    grounded_cases,
    grounded_prompt,
    is_heldout,
    pass_rates,
    related_pairs,
    root_depth,
    rouge_l,
    split_items,
    theme_metrics,
    understanding_metrics,
)
from ml.generation.finetune import (
    FinetuneConfig,
    common_path,
    copy_pairs,
    finetune,
    item_sets,
    load_tuned,
    save_tuned,
    theme_pairs,
    training_pairs,
    tuned_record,
)
from ml.generation.generate import GenerationConfig
from ml.generation.grounding import Facts, ItemFacts
from ml.generation.load import load_generator
from ml.training import generator as stages

CATALOG = pd.DataFrame(
    {
        "item_id": ["a", "b", "c", "d", "e", "f"],
        "title": [
            "OPI Nail Envy, 0.5 oz",
            "Essie Nail Polish, Ballet Slippers",
            "Dove Body Wash",
            "Olay Regenerist Cream",
            None,
            "Sally Hansen Top Coat",
        ],
        "categories": [
            "Beauty > Makeup > Nails > Nail Treatments",
            "Beauty > Makeup > Nails > Nail Polish",
            "Beauty > Bath & Body > Cleansers",
            "Beauty > Skin Care > Face > Creams",
            "Beauty > Makeup",
            "Beauty > Makeup > Nails > Top Coats",
        ],
        "brand": ["OPI", "Essie", "Dove", "Olay", None, None],
        "price": [9.5, 8.0, 4.99, 23.0, 3.0, float("nan")],
    }
)


# -- targets ------------------------------------------------------------------------------------------
def test_copy_pairs_give_the_facts_and_want_the_sellers_title() -> None:
    pairs = copy_pairs(CATALOG)
    assert len(pairs) == 5  # e has no title
    assert pairs[0] == (
        "Write the shop's product title for an item of brand OPI in the category "
        "Beauty > Makeup > Nails > Nail Treatments, price band 5-10.",
        "OPI Nail Envy, 0.5 oz",
    )
    assert "brand unknown" in pairs[4][0] and "price band unknown" in pairs[4][0]


def test_theme_pairs_answer_the_deepest_common_category() -> None:
    assert common_path(["A > B > C", "a > b > D", "A > B"]) == "A > B"
    assert common_path(["A > B", "X"]) is None
    assert common_path([]) is None
    pairs = theme_pairs(CATALOG, [[0, 1, 5], [0, 2]])
    assert pairs[0] == (
        "Products:\n- OPI Nail Envy, 0.5 oz\n- Essie Nail Polish, Ballet Slippers\n"
        "- Sally Hansen Top Coat\nWhat is the deepest category they all share?",
        "Category: Beauty > Makeup > Nails",
    )
    assert pairs[1][1] == "Category: Beauty"
    sets = item_sets(CATALOG, 20, size=3, seed=1)
    assert len(sets) == 20 and all(len(set(s)) == 3 and 4 not in s for s in sets)  # e: no title
    assert sets == item_sets(CATALOG, 20, size=3, seed=1)
    mixed = training_pairs(CATALOG, theme_sets=4)
    assert len(mixed) == 5 + 5 + 4  # understanding (titled), copy, theme
    capped = training_pairs(CATALOG, theme_sets=4, per_task=2)
    assert len(capped) == 2 + 2 + 2 and set(capped) <= set(mixed)
    with pytest.raises(ValueError, match="unknown fine-tuning task"):
        training_pairs(CATALOG, ["summaries"])


# -- held-out items and related pairs -----------------------------------------------------------------
def test_held_out_items_are_a_stable_disjoint_share() -> None:
    items = pd.DataFrame({"item_id": [f"i{n}" for n in range(2000)], "title": "t", "categories": "A"})
    train, heldout = split_items(items, 0.1)
    assert len(train) + len(heldout) == 2000 and 150 < len(heldout) < 250
    assert not set(train["item_id"]) & set(heldout["item_id"])
    again = split_items(items.sample(frac=1.0, random_state=3), 0.1)[1]
    assert set(again["item_id"]) == set(heldout["item_id"])  # by id, not by row order
    assert all(is_heldout(i, 0.1) for i in heldout["item_id"])
    with pytest.raises(ValueError, match="between 0 and 1"):
        split_items(items, 1.0)


def test_related_pairs_are_one_users_items_within_the_window() -> None:
    day = 86_400
    interactions = pd.DataFrame(
        {
            "user_id": ["u1", "u1", "u1", "u1", "u2", "u2"],
            "item_id": ["a", "b", "b", "c", "a", "b"],
            "timestamp": [0, 10 * day, 11 * day, 40 * day, 0, 31 * day],
        }
    )
    assert related_pairs(interactions) == [("b", "a"), ("c", "b")]  # u2's are 31 days apart
    as_dates = interactions.assign(timestamp=pd.to_datetime(interactions["timestamp"], unit="s", utc=True))
    assert related_pairs(as_dates) == [("b", "a"), ("c", "b")]
    assert related_pairs(interactions, window_days=40) == [("b", "a"), ("c", "b"), ("c", "a")]
    with pytest.raises(KeyError, match="timestamp"):
        related_pairs(interactions.drop(columns="timestamp"))


def test_grounded_cases_are_built_from_the_pairs_facts() -> None:
    cases = grounded_cases(CATALOG, [("b", "a"), ("f", "b"), ("zz", "a")], per_kind=2)
    assert [c.kind for c in cases] == ["bundle_name"] * 2 + ["bundle_description"] * 2 + ["explanation"] * 2
    explanation = cases[-1]
    assert [i.item_id for i in explanation.facts.items] in (["b", "a"], ["f", "b"])
    assert explanation.prompt.startswith("A shopper liked: ")  # serving's prompt (ml.generation.bundles)
    assert "Nails" in explanation.facts.extra  # what the pair shares, as serving's facts hold it
    facts = Facts(
        items=(
            ItemFacts.from_record(CATALOG.iloc[0].to_dict()),
            ItemFacts.from_record(CATALOG.iloc[1].to_dict()),
        )
    )
    assert "The set costs $17.50 in all." in grounded_prompt("bundle_description", facts)
    with pytest.raises(ValueError, match="history item"):
        grounded_prompt("explanation", Facts(items=facts.items[:1]))


# -- the metrics, on hand-made answers ----------------------------------------------------------------
def test_understanding_metrics_by_hand() -> None:
    paths = ["Beauty > Makeup > Nails > Nail Polish", "Beauty > Skin Care > Face", "Beauty > Makeup > Lips"]
    assert root_depth(paths) == 1  # "Beauty" says nothing: the top level is the one below it
    truth = [(paths[0], "Essie"), (paths[1], None), (paths[2], "L'Oréal")]
    answers = [
        "Category: Beauty > Makeup > Nails > Nail Polish\nBrand: essie",  # all right
        "Category: Beauty > Makeup > Face\nBrand: unknown",  # leaf right, top level wrong
        "The category is lipstick, by L'Oreal.",  # not in the format: nothing parsed
    ]
    metrics = understanding_metrics(truth, answers, root=1)
    assert metrics == {
        "leaf_exact": pytest.approx(2 / 3),
        "top_level_accuracy": pytest.approx(1 / 3),
        "brand_accuracy": pytest.approx(1 / 2),  # two items have a brand; one answered right
        "parsed_rate": pytest.approx(2 / 3),
        "cases": 3.0,
    }
    assert (
        understanding_metrics(truth, ["Category: Beauty\nBrand: x"] * 3, root=1)["top_level_accuracy"] == 0.0
    )
    with pytest.raises(ValueError, match="3 truths but 1 answers"):
        understanding_metrics(truth, answers[:1])


def test_rouge_l_and_theme_by_hand() -> None:
    assert rouge_l(["Dove Body Wash"], ["Dove Body Wash"]) == pytest.approx(1.0)
    assert rouge_l(["Dove Body Wash"], ["Olay cream"]) == 0.0
    # LCS "dove wash" = 2 of 3 reference and 2 of 4 predicted words: F1 = 2PR/(P+R) = 4/7.
    assert rouge_l(["Dove Body Wash"], ["Dove gentle wash bar"]) == pytest.approx(4 / 7)
    assert rouge_l(["a b", "Dove Body Wash"], ["a b", "Olay"]) == pytest.approx(0.5)
    assert theme_metrics(
        ["Beauty > Makeup > Nails", "Beauty > Skin Care"],
        ["Category: Beauty > Makeup > Nails", "They all share skin care products."],
    ) == {"theme_leaf_exact": 0.5}


def test_pass_rates_count_the_generators_own_texts() -> None:
    a = ItemFacts("a", "OPI Nail Envy, 0.5 oz", "OPI", ("Beauty", "Nails"), 9.5)
    b = ItemFacts("b", "Essie Nail Polish", "Essie", ("Beauty", "Nails"), 8.0)
    facts = Facts(items=(a, b))
    cases = [
        GroundedCase("bundle_name", facts, ""),
        GroundedCase("bundle_description", facts, ""),
        GroundedCase("bundle_description", facts, ""),
        GroundedCase("explanation", facts, ""),
    ]
    texts = [
        "Nail Care Duo",  # passes
        "OPI Nail Envy and Essie Nail Polish for $17.50 in all.",  # passes: the total is a fact
        "OPI Nail Envy with Revlon polish for $12.00.",  # an unknown name and a price not in facts
        "Like the OPI Nail Envy you bought, it is",  # cut off by the token budget
    ]
    rates = pass_rates(texts, cases)
    assert rates["raw_pass_rate"] == 0.5 and rates["fallback_rate"] == 0.5 and rates["texts"] == 4
    assert rates["by_kind"] == {"bundle_name": 1.0, "bundle_description": 0.5, "explanation": 0.0}
    assert set(rates["failure_reasons"]) == {"name not in facts", "price not in facts", "length"}


def test_the_gate_wants_nothing_worse_and_something_better() -> None:
    reference = dict.fromkeys(GATED_METRICS, 0.5)
    assert compare({**reference, "rouge_l": 0.6}, reference)["beats"] is True
    worse = compare({**reference, "rouge_l": 0.9, "raw_pass_rate": 0.4}, reference)
    assert worse["beats"] is False and worse["worse"] == ["raw_pass_rate"] and worse["better"] == ["rouge_l"]
    assert worse["metrics"]["raw_pass_rate"]["delta"] == pytest.approx(-0.1)
    tie = compare(dict(reference), reference)
    assert tie["beats"] is False and tie["better"] == [] and tie["worse"] == []
    # A win on too few grounded texts decides nothing, and says so.
    few = {**reference, "rouge_l": 0.6, "cases": {"grounded": 6}}
    small = compare(few, reference, min_grounded=18)
    assert small["beats"] is False and small["better"] == ["rouge_l"]
    assert small["too_few"] == "6 grounded texts < the gate's minimum 18"
    assert compare({**few, "cases": {"grounded": 18}}, reference, min_grounded=18)["beats"] is True


# -- the run's stages on a tiny model ---------------------------------------------------------------------
# tiny_base: tests/conftest.py (a tiny random Llama with the real SmolLM2 tokenizer).
def test_a_saved_adapter_merges_back_to_the_same_model(tiny_base: Path, tmp_path: Path) -> None:
    generator = load_generator(tiny_base, device="cpu")
    result = finetune(
        generator,
        training_pairs(CATALOG, theme_sets=4),
        FinetuneConfig(max_steps=2, batch_size=4, learning_rate=0.05),
    )
    save_tuned(result, tmp_path / "tuned", base=str(tiny_base))
    assert tuned_record(tmp_path / "tuned")["mode"] == "lora"
    assert (tmp_path / "tuned" / "adapter_model.safetensors").stat().st_size < 1_000_000
    ids = generator.tokenizer("Dove Body Wash", return_tensors="pt")
    with torch.inference_mode():
        expected = result.adapted(**ids).logits
        merged = load_tuned(load_generator(tiny_base, device="cpu"), tmp_path / "tuned")
        got = merged.model(**ids).logits
        base = load_generator(tiny_base, device="cpu").model(**ids).logits
    assert merged.name.endswith("+lora")
    assert torch.allclose(got, expected, atol=1e-5)
    assert not torch.allclose(got, base, atol=1e-5)  # the adapter changed something
    with pytest.raises(FileNotFoundError, match="not a tuned generator folder"):
        tuned_record(tmp_path)


def test_the_runs_stages_register_gate_and_serve_the_champion(tiny_base: Path, tmp_path: Path) -> None:
    settings = Settings(work_dir=tmp_path, generator_cache_dir=tmp_path / "cache")
    rows = []
    for n in range(60):
        leaf = ["Nail Polish", "Shampoos", "Lipstick"][n % 3]
        rows.append(
            {
                "item_id": f"i{n:03d}",
                "title": f"{leaf} number {n}",
                "categories": f"Beauty > Group {n % 2} > {leaf}",
                "brand": f"Brand{n % 4}",
                "price": 5.0 + n,
            }
        )
    items = pd.DataFrame(rows)
    interactions = pd.DataFrame(
        {
            "user_id": [f"u{n // 3}" for n in range(60)],
            "item_id": items["item_id"],
            "timestamp": list(range(60)),
        }
    )
    overrides = {
        "generator": str(tiny_base),
        "max_steps": 2,
        "batch_size": 4,
        "eval_items": 3,
        "eval_sets": 2,
        "eval_per_kind": 2,
        "max_new_tokens": 6,
        "heldout_fraction": 0.2,
    }
    prepared = stages.prepare_generator_data("r1", settings, items=items, interactions=interactions)
    assert prepared["labelled_items"] == 60 and prepared["related_pairs"] > 0
    tuned = stages.finetune_generator("r1", settings, overrides)
    assert tuned["steps"] == 2 and tuned["mode"] == "lora"
    summary = stages.evaluate_generators("r1", settings, overrides)
    assert summary["reference"] == "base" and set(summary["metrics"]) == {"base", "tuned"}
    assert summary["cases"]["grounded"] == 6
    registered = stages.register_generator_version("r1", settings, overrides=overrides)
    assert registered["tag"].startswith("shopflow_generator:")
    version = registry.get(registered["tag"], settings)
    assert version.metrics["reference"] == "base" and "raw_pass_rate" in version.metrics["tuned"]

    # The gate decides on the recorded comparison; a win makes the champion, which serving loads.
    evaluation_file = stages.generator_dir("r1", settings) / "evaluation.json"
    evaluation = json.loads(evaluation_file.read_text())
    forced = {**evaluation, "comparison": {**evaluation["comparison"], "beats": True, "better": ["rouge_l"]}}
    evaluation_file.write_text(json.dumps(forced))
    decision = stages.gate_generator_version(registered["tag"], "r1", settings)
    assert decision["promoted"] is True and registry.generator_champion(settings) == registered["tag"]
    served = registry.load_served_generator(settings, device="cpu")
    assert served.name == f"{tiny_base}+lora"
    # Against a champion the reference must be that champion: a stale comparison is refused.
    with pytest.raises(registry.RegistryError, match="evaluate again"):
        registry.gate_generator(registered["tag"], forced["comparison"], reference="base", settings=settings)
    lost = compare(dict.fromkeys(GATED_METRICS, 0.1), dict.fromkeys(GATED_METRICS, 0.2))
    rejected = registry.gate_generator(
        registered["tag"], lost, reference=registered["tag"], settings=settings
    )
    assert rejected["promoted"] is False and rejected["reason"].startswith("below")
    won_on_few = compare(
        {**dict.fromkeys(GATED_METRICS, 0.3), "cases": {"grounded": 6}},
        dict.fromkeys(GATED_METRICS, 0.2),
        min_grounded=18,
    )
    unsure = registry.gate_generator(
        registered["tag"], won_on_few, reference=registered["tag"], settings=settings
    )
    assert unsure["promoted"] is False and unsure["reason"].startswith("too few cases to decide: 6 grounded")
    assert [d["event"] for d in registry.generator_decisions(settings)] == ["gate", "promote", "gate", "gate"]
    assert registry.decisions(settings) == []  # the recommender's ledger is untouched
    with pytest.raises(stages.GeneratorRunError, match="unknown generator override"):
        stages.resolve_overrides({"max_step": 3})


def test_the_dag_runs_the_stages_in_order() -> None:
    """The DAG file's tasks call the stages in the documented order (parsed, not run)."""
    import ast

    from ml.core.settings import PROJECT_DIR

    source = (PROJECT_DIR / "dags" / "finetune_generator.py").read_text()
    tree = ast.parse(source)
    called = [
        node.names[0].name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module == "ml.training.generator"
    ]
    assert called == [
        "prepare_generator_data",
        "finetune_generator",
        "evaluate_generators",
        "register_generator_version",
        "gate_generator_version",
    ]
    assert "gate(register(evaluate(finetune(prepare()))))" in source


@pytest.mark.slow
def test_the_real_generator_evaluates_on_held_out_beauty_items() -> None:
    """SmolLM2 (the shared cache) answers real held-out cases; every figure is a share in [0, 1]."""
    torch.set_num_threads(1)
    from ml.core.catalog import normalize_categories
    from ml.core.settings import PROJECT_DIR

    beauty = PROJECT_DIR / "data" / "amazon_beauty_2014_5core"
    items = pd.read_parquet(
        beauty / "items.parquet", columns=["item_id", "title", "brand", "categories", "price"]
    )
    items["categories"] = normalize_categories(items["categories"])
    interactions = pd.read_parquet(
        beauty / "interactions.parquet", columns=["user_id", "item_id", "timestamp"]
    )
    _, heldout = split_items(items)
    from ml.generation.evaluate import evaluation_set

    cases: EvaluationSet = evaluation_set(
        heldout, items, related_pairs(interactions, max_pairs=2000), n_items=2, n_sets=1, per_kind=1
    )
    generator = load_generator(cache_dir=Settings().generator_cache_dir, device="cpu")
    metrics = evaluate_generator(generator, cases, config=GenerationConfig(max_new_tokens=32))
    assert all(0.0 <= metrics[m] <= 1.0 for m in GATED_METRICS)
    assert metrics["grounding"]["texts"] == 3 and metrics["speed"]["new_tokens"] > 0
    assert load_module.DEFAULT_GENERATOR == "smollm2"
