"""Training data for the recommender: item vocabulary, item texts, per-user sequences, splits.

Built from the published marts (``marts.fct_training_examples`` and ``marts.dim_items``) through
:func:`load_training_data`, or from DataFrames with the same columns through :func:`from_frames`
(tests and benchmarks). :func:`shipped_frames` builds those frames straight from the Parquet
files under ``data/`` so a benchmark needs no pipeline run.

Two protocols live side by side:

* ``loo`` (leave-one-out, the published Beauty tables): per user the last event is the test
  target, the one before the validation target, the rest is the training prefix.
* ``time`` (the production view): one global cut per source; the model trains on events before
  the validation start; a user's first event inside a period is that period's target.

Item index 0 is padding. Every catalog item has an index, including items that never occur in an
interaction (cold start: their text makes them recommendable).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from ml.core.catalog import item_texts, normalize_categories
from ml.modeling.review_text import ReviewProtocol, Summary, with_review_text
from ml.modeling.splits import loo_labels, time_labels

Protocol = Literal["loo", "time"]
Split = Literal["validation", "test"]

PAD = 0
PAD_ID = "<pad>"
SPLIT_CODES = {"train": 0, "validation": 1, "test": 2}
EXAMPLE_COLUMNS = ("user_id", "item_id", "position", "loo_split", "time_split")
ITEM_COLUMNS = ("item_id", "item_text")


class TrainingDataError(ValueError):
    """A frame handed to :func:`from_frames` breaks the expected schema."""

    def __init__(self, frame: str, column: str, message: str) -> None:
        super().__init__(f"{frame}.{column}: {message}")
        self.frame = frame
        self.column = column


@dataclass(frozen=True)
class EvalCases:
    """Next-item prediction cases: one (history, target) pair per user."""

    users: np.ndarray
    """User indices into :attr:`TrainingData.user_ids`."""
    histories: list[np.ndarray]
    """Item indices the user saw before the target, oldest first."""
    targets: np.ndarray
    """The item index to predict."""

    def __len__(self) -> int:
        return len(self.targets)

    def subset(self, mask: np.ndarray) -> EvalCases:
        """The cases where ``mask`` is true."""
        keep = np.flatnonzero(mask)
        return EvalCases(self.users[keep], [self.histories[i] for i in keep], self.targets[keep])


@dataclass
class TrainingData:
    """Everything a recommender trains and evaluates on, for one source."""

    source: str
    item_ids: np.ndarray
    """Item id per index; ``item_ids[0]`` is the padding token."""
    item_texts: list[str]
    """Encoder input per index (``''`` for padding)."""
    user_ids: np.ndarray
    sequences: list[np.ndarray]
    """Per user, item indices ordered by position (oldest first)."""
    loo_split: list[np.ndarray]
    """Per user and event: 0 train, 1 validation, 2 test (leave-one-out)."""
    time_split: list[np.ndarray]
    """Per user and event: 0 train, 1 validation, 2 test (global time cut)."""
    item_index: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.item_index = {str(item): i for i, item in enumerate(self.item_ids)}

    @property
    def num_items(self) -> int:
        """Size of the item vocabulary, padding included."""
        return len(self.item_ids)

    @property
    def num_users(self) -> int:
        return len(self.user_ids)

    @property
    def num_interactions(self) -> int:
        return int(sum(len(s) for s in self.sequences))

    def texts_hash(self) -> str:
        """A digest of the item vocabulary and texts (cache key for item embeddings)."""
        digest = hashlib.sha256()
        for item, text in zip(self.item_ids, self.item_texts, strict=True):
            digest.update(f"{item}\x1f{text}\x1e".encode())
        return digest.hexdigest()[:16]

    def _codes(self, protocol: Protocol) -> list[np.ndarray]:
        if protocol == "loo":
            return self.loo_split
        if protocol == "time":
            return self.time_split
        raise ValueError(f"unknown protocol {protocol!r} (loo or time)")

    def train_sequences(self, protocol: Protocol = "loo") -> list[np.ndarray]:
        """Per user, the events the model may learn from (empty arrays dropped)."""
        out = []
        for seq, codes in zip(self.sequences, self._codes(protocol), strict=True):
            part = seq[codes == 0]
            if len(part):
                out.append(part)
        return out

    def cases(self, split: Split, protocol: Protocol = "loo") -> EvalCases:
        """The evaluation cases of a split.

        Leave-one-out: validation predicts the validation item from the training prefix; test
        predicts the test item from everything before it (the validation item included).
        Time: a user's first event inside the period is the target, everything before it the
        history; users with no earlier event are skipped.
        """
        code = SPLIT_CODES[split]
        users, histories, targets = [], [], []
        for u, (seq, codes) in enumerate(zip(self.sequences, self._codes(protocol), strict=True)):
            hits = np.flatnonzero(codes == code)
            if len(hits) == 0 or hits[0] == 0:
                continue
            p = int(hits[0])
            users.append(u)
            histories.append(seq[:p])
            targets.append(int(seq[p]))
        return EvalCases(np.asarray(users, dtype=np.int64), histories, np.asarray(targets, dtype=np.int64))

    def item_counts(self, protocol: Protocol = "loo") -> np.ndarray:
        """Occurrences of each item in the training events (index 0 is always 0)."""
        counts = np.zeros(self.num_items, dtype=np.int64)
        for seq in self.train_sequences(protocol):
            np.add.at(counts, seq, 1)
        counts[PAD] = 0
        return counts

    def subset_users(self, n: int, seed: int = 0) -> TrainingData:
        """The same catalog with ``n`` users drawn at random (small runs, tests)."""
        rng = np.random.default_rng(seed)
        keep = np.sort(rng.choice(self.num_users, size=min(n, self.num_users), replace=False))
        return TrainingData(
            source=self.source,
            item_ids=self.item_ids,
            item_texts=self.item_texts,
            user_ids=self.user_ids[keep],
            sequences=[self.sequences[i] for i in keep],
            loo_split=[self.loo_split[i] for i in keep],
            time_split=[self.time_split[i] for i in keep],
        )

    def validation_trained(self) -> TrainingData:
        """The same data with each user's leave-one-out validation event moved into training.

        For a refit after the settings (the epoch count among them) were chosen on validation: the
        model then learns from every event before the test target, as the test histories already
        hold it. Nothing is left to validate on (``cases("validation")`` is empty).
        """
        return TrainingData(
            source=self.source,
            item_ids=self.item_ids,
            item_texts=self.item_texts,
            user_ids=self.user_ids,
            sequences=self.sequences,
            loo_split=[np.where(codes == SPLIT_CODES["validation"], 0, codes) for codes in self.loo_split],
            time_split=list(self.time_split),
        )

    def used_catalog(self) -> TrainingData:
        """The same users with the catalog cut to the items they interacted with.

        A small slice then also has a small catalog: what makes fine-tuning the text encoder on
        CPU affordable (every epoch re-encodes the catalog). Metrics on it rank against that
        smaller catalog, so they compare only with other runs on the same slice.
        """
        used = np.unique(np.concatenate([np.zeros(1, dtype=np.int64), *self.sequences]))
        remap = np.zeros(self.num_items, dtype=np.int64)
        remap[used] = np.arange(len(used))
        return TrainingData(
            source=self.source,
            item_ids=self.item_ids[used],
            item_texts=[self.item_texts[i] for i in used],
            user_ids=self.user_ids,
            sequences=[remap[s] for s in self.sequences],
            loo_split=list(self.loo_split),
            time_split=list(self.time_split),
        )


# -- constructors ------------------------------------------------------------------------------
def from_frames(
    examples: pd.DataFrame,
    items: pd.DataFrame,
    source: str | None = None,
    review_text: Literal["off", "titleless", "always"] = "titleless",
    review_summary: Summary = "terms",
    review_rating_weight: bool = False,
    review_protocol: ReviewProtocol = "both",
) -> TrainingData:
    """Build :class:`TrainingData` from frames shaped like the marts.

    Args:
        examples: one row per interaction with ``user_id``, ``item_id`` and either ``position``
            (1-based order in the user's history) or ``event_ts`` (+ optional ``sequence_number``)
            to order by; ``loo_split`` / ``time_split`` are derived the mart's way when absent.
        items: one row per catalog item with ``item_id`` and ``item_text`` (or ``title``,
            ``brand``, ``categories``, ``price``, ``description`` to assemble it from).
        source: keep only rows of this source when the frames have a ``source`` column.
        review_text: when ``examples`` has a ``review_text`` column, items whose catalog text
            has no title (``titleless``) or every item (``always``) get text summarised from
            their training-period reviews (:mod:`ml.modeling.review_text`); ``off`` ignores it.
        review_summary: ``terms`` (top TF-IDF words) or ``sentences``.
        review_rating_weight: weight each review's words by its ``rating`` / 5.
        review_protocol: which training events' reviews are read: ``both`` splits' (safe for
            either protocol), ``loo`` or ``time`` (more text; evaluate only under that one).

    Raises:
        TrainingDataError: a required column is missing or empty.
    """
    if source is not None:
        if "source" in examples.columns:
            examples = examples[examples["source"] == source]
        if "source" in items.columns:
            items = items[items["source"] == source]
    for frame_name, frame, required in (
        ("examples", examples, ("user_id", "item_id")),
        ("items", items, ("item_id",)),
    ):
        for column in required:
            if column not in frame.columns:
                raise TrainingDataError(frame_name, column, f"missing; found {list(frame.columns)}")
            if frame[column].isna().any():
                raise TrainingDataError(frame_name, column, "has nulls")
    if "position" not in examples.columns and "event_ts" not in examples.columns:
        raise TrainingDataError("examples", "position", "need position or event_ts to order histories")

    ex = examples.copy()
    ex["user_id"] = ex["user_id"].astype(str)
    ex["item_id"] = ex["item_id"].astype(str)
    if "position" not in ex.columns:
        keys = ["user_id", "event_ts"] + (["sequence_number"] if "sequence_number" in ex.columns else [])
        ex = ex.sort_values(keys, kind="stable")
        ex["position"] = ex.groupby("user_id").cumcount() + 1
    if "loo_split" not in ex.columns:
        n_events = ex.groupby("user_id")["position"].transform("size")
        ex["loo_split"] = loo_labels(ex["position"], n_events)
    if "time_split" not in ex.columns:
        ex["time_split"] = time_labels(ex["event_ts"]) if "event_ts" in ex.columns else "train"

    catalog = items.drop_duplicates("item_id", keep="last").copy()
    catalog["item_id"] = catalog["item_id"].astype(str)
    catalog["item_text"] = item_texts(catalog)
    text_of = dict(zip(catalog["item_id"], catalog["item_text"], strict=True))
    # Interactions with an item missing from the catalog still resolve (as dim_items does).
    for item in ex["item_id"].unique():
        text_of.setdefault(item, f"item {item}")
    if review_text != "off" and "review_text" in ex.columns:
        text_of = with_review_text(
            ex,
            text_of,
            when=review_text,
            method=review_summary,
            rating_weight=review_rating_weight,
            protocol=review_protocol,
        )
    ordered_ids = sorted(text_of)
    item_ids = np.asarray([PAD_ID, *ordered_ids], dtype=object)
    texts = ["", *(text_of[i] for i in ordered_ids)]
    index = {item: i + 1 for i, item in enumerate(ordered_ids)}

    ex = ex.sort_values(["user_id", "position"], kind="stable")
    users = ex["user_id"].to_numpy()
    items_idx = ex["item_id"].map(index).to_numpy(dtype=np.int64)
    loo_codes = ex["loo_split"].map(SPLIT_CODES).fillna(0).to_numpy(dtype=np.int8)
    time_codes = ex["time_split"].map(SPLIT_CODES).fillna(0).to_numpy(dtype=np.int8)
    # One slice per user of the sorted arrays (a Python groupby loop is 10x slower).
    cuts = np.flatnonzero(users[1:] != users[:-1]) + 1
    user_ids = users[np.r_[0, cuts]] if len(users) else users
    sequences = np.split(items_idx, cuts) if len(users) else []
    loo = np.split(loo_codes, cuts) if len(users) else []
    time = np.split(time_codes, cuts) if len(users) else []
    src = source or (
        str(examples["source"].iloc[0]) if "source" in examples.columns and len(examples) else ""
    )
    return TrainingData(
        source=src,
        item_ids=item_ids,
        item_texts=texts,
        user_ids=np.asarray(user_ids, dtype=object),
        sequences=list(sequences),
        loo_split=list(loo),
        time_split=list(time),
    )


TieOrder = Literal["file", "shuffled"]


def shipped_frames(
    data_dir: Path, dataset: str = "amazon_beauty_2014_5core", ties: TieOrder = "file", seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Mart-shaped (examples, items) frames straight from the shipped Parquet files.

    Histories are ordered by (timestamp, seq_pos): the order of the published S3-Rec split, so
    the leave-one-out targets are the ones the published tables were measured on.

    Args:
        data_dir: the folder holding ``dataset``.
        dataset: the shipped dataset's folder name.
        ties: ``file`` orders a user's events with the same timestamp (Beauty's timestamps are
            days: many ties) by their position in the file, as the published tables do;
            ``shuffled`` orders them at random with ``seed`` instead, so a model cannot profit
            from how the file happened to list a day's purchases (the last of them is the test
            target). The splits follow the chosen order.
        seed: the seed of the shuffled tie order.
    """
    if ties not in ("file", "shuffled"):
        raise ValueError(f"ties={ties!r}: use 'file' or 'shuffled'")
    folder = Path(data_dir) / dataset
    raw = pd.read_parquet(
        folder / "interactions.parquet", columns=["user_id", "item_id", "timestamp", "seq_pos"]
    )
    if ties == "shuffled":
        # A random key replaces the file position inside each (user, timestamp) tie; seq_pos
        # is renumbered to the new order so that sorting by it (here and in from_frames) keeps it.
        raw["_key"] = np.random.default_rng(seed).random(len(raw))
        raw = raw.sort_values(["user_id", "timestamp", "_key"], kind="stable").drop(columns="_key")
        raw["seq_pos"] = raw.groupby("user_id").cumcount() + 1
    raw = raw.sort_values(["user_id", "timestamp", "seq_pos"], kind="stable")
    examples = pd.DataFrame(
        {
            "user_id": raw["user_id"].astype(str).to_numpy(),
            "item_id": raw["item_id"].astype(str).to_numpy(),
            "event_ts": pd.to_datetime(raw["timestamp"].to_numpy(), unit="s"),
            "sequence_number": raw["seq_pos"].to_numpy(),
        }
    )
    examples["position"] = examples.groupby("user_id").cumcount() + 1
    examples["n_user_events"] = examples.groupby("user_id")["position"].transform("size")
    examples["loo_split"] = loo_labels(examples["position"], examples["n_user_events"])
    examples["time_split"] = time_labels(examples["event_ts"])
    items = pd.read_parquet(
        folder / "items.parquet", columns=["item_id", "title", "categories", "brand", "price"]
    )
    items["categories"] = normalize_categories(items["categories"])
    items["item_text"] = item_texts(items)
    return examples, items
