"""Fixtures of the fault tests (issue 16, item 3); the helpers are in faultkit.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from faultkit import ThrowawayPostgres, land_reviews, shop_settings

from ml.core.settings import Settings


@pytest.fixture
def reviews_shop(tmp_path: Path) -> Settings:
    """A DuckDB shop with the All_Beauty 2018 reviews landed by ``shopflow land`` (101 partitions)."""
    settings = shop_settings(tmp_path / "work")
    land_reviews(settings)
    return settings


@pytest.fixture
def own_pg_server() -> Iterator[ThrowawayPostgres]:
    """A PostgreSQL server for this test alone (it may restart it), removed afterwards."""
    server = ThrowawayPostgres()
    try:
        server.start()
        yield server
    finally:
        server.stop()
