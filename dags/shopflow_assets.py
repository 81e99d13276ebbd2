"""The Airflow Assets ShopFlow's DAGs produce and consume, defined once.

A producer's ``outlets`` and a consumer's ``schedule`` must name the same asset; importing it from
here (the DAG folder is on ``sys.path`` while Airflow parses and runs DAGs) keeps them identical.
"""

from __future__ import annotations

from airflow.sdk import Asset

MARTS = Asset(
    name="shopflow_marts",
    uri="shopflow://warehouse/marts",
    group="shopflow",
    extra={"description": "dbt marts of the ShopFlow warehouse, validated by Great Expectations."},
)
"""The warehouse marts, published by ``ingest_transform_validate`` after a run's marts pass
validation. Each event's ``extra`` carries the interval, row counts and the dbt/GX run ids."""

MODEL = Asset(
    name="shopflow_model",
    uri="shopflow://registry/shopflow_recommender",
    group="shopflow",
    extra={"description": "The recommender versions in the BentoML model store, with gate decisions."},
)
"""Emitted by ``train_recommender`` after each gate decision; ``extra`` carries the challenger's tag,
both metric values and whether it was promoted."""

BENTO = Asset(
    name="shopflow_bento",
    uri="shopflow://bentoml/shopflow",
    group="shopflow",
    extra={"description": "The Bento serving the champion recommender, smoke-queried before promotion."},
)
"""Emitted by ``train_recommender`` when a challenger's Bento answered its smoke queries and the
challenger became the champion; ``extra`` names the Bento and model tags and the smoke timings."""
