"""The training run's data: the marts read once into the run folder, so every stage sees the same rows."""

from __future__ import annotations

from typing import Any

import pandas as pd

from ml.core.artifacts import DATASET, run_dir
from ml.core.settings import Settings, get_settings
from ml.core.warehouse import Warehouse
from ml.modeling.datasets import TrainingData, from_frames


def read_training_frames(
    settings: Settings | None = None, source: str = "beauty"
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The (examples, items) frames of one source, from the training marts.

    ``marts.fct_training_examples`` gives the examples, ``marts.dim_items`` the items. Each
    event's review text comes from staging (the marts keep no free text; it was PII-scrubbed at
    ingest): ``from_frames`` builds titleless items' text from the training events' reviews
    (ml.modeling.review_text). A source without any review text gets no such column, so its
    snapshot is what it was before reviews were read.
    """

    warehouse = Warehouse(settings)
    with warehouse.connect() as con:
        # Marts written without dbt (tests, a warehouse built before reviews were read) may lack
        # the staging view or the interaction id: then there is no review text to read.
        joinable = warehouse.read(
            "select count(*) as n from information_schema.columns where "
            "(table_schema = 'staging' and table_name = 'stg_shop__interactions' "
            "and column_name = 'review_text') or (table_schema = 'marts' "
            "and table_name = 'fct_training_examples' and column_name = 'interaction_id')",
            {},
            con,
        )
        reviews = int(joinable["n"].iloc[0]) == 2
        columns = "e.user_id, e.item_id, e.position, e.event_ts, e.sequence_number, e.loo_split, e.time_split"
        examples = warehouse.read(
            f"select {columns}{', e.rating, s.review_text' if reviews else ''} "
            "from marts.fct_training_examples e "
            + (
                "left join staging.stg_shop__interactions s on s.interaction_id = e.interaction_id "
                if reviews
                else ""
            )
            + "where e.source = :source order by e.user_id, e.position",
            {"source": source},
            con,
        )
        if reviews and examples["review_text"].isna().all():
            examples = examples.drop(columns=["rating", "review_text"])
        items = warehouse.read(
            "select item_id, item_text from marts.dim_items where source = :source order by item_id",
            {"source": source},
            con,
        )
    return examples, items


def load_training_data(settings: Settings | None = None, source: str = "beauty") -> TrainingData:
    """Read the training marts of one source (see :func:`read_training_frames`)."""
    examples, items = read_training_frames(settings, source)
    return from_frames(examples, items, source=source)


def load_snapshot(run_id: str, settings: Settings) -> Any:
    import pandas as pd

    folder = run_dir(run_id, settings) / DATASET
    return from_frames(
        pd.read_parquet(folder / "examples.parquet"), pd.read_parquet(folder / "items.parquet")
    )


def build_dataset(run_id: str, settings: Settings | None = None) -> dict[str, Any]:
    """Snapshot the training marts of ``settings.train_source`` (optionally a user slice)."""

    settings = settings or get_settings()
    examples, items = read_training_frames(settings, settings.train_source)
    if settings.train_max_users is not None:
        users = examples["user_id"].drop_duplicates().sort_values()
        keep = users.sample(min(settings.train_max_users, len(users)), random_state=0)
        examples = examples[examples["user_id"].isin(set(keep))]
    folder = run_dir(run_id, settings) / DATASET
    folder.mkdir(parents=True, exist_ok=True)
    examples.to_parquet(folder / "examples.parquet", index=False)
    items.to_parquet(folder / "items.parquet", index=False)
    data = load_snapshot(run_id, settings)
    return {
        "source": settings.train_source,
        "users": data.num_users,
        "items": data.num_items,
        "interactions": data.num_interactions,
        "dataset_dir": str(folder),
    }
