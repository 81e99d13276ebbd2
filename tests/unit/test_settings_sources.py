"""SHOPFLOW_EXTRA_SOURCES adds sources beside the defaults; SHOPFLOW_SOURCES replaces them (issue 16)."""

from __future__ import annotations

import pytest

from ml.core.settings import Settings
from ml.ops.local_airflow import settings_env


def test_extra_sources_add_to_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SHOPFLOW_SOURCES", raising=False)
    monkeypatch.setenv("SHOPFLOW_EXTRA_SOURCES", '{"myshop": "catalog"}')
    assert Settings().sources == {"beauty": "catalog", "retail": "invoice_lines", "myshop": "catalog"}


def test_sources_replace_the_defaults_and_extra_sources_still_add(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOPFLOW_SOURCES", '{"myshop": "catalog"}')
    monkeypatch.delenv("SHOPFLOW_EXTRA_SOURCES", raising=False)
    assert Settings().sources == {"myshop": "catalog"}
    monkeypatch.setenv("SHOPFLOW_EXTRA_SOURCES", '{"tills": "invoice_lines"}')
    assert Settings().sources == {"myshop": "catalog", "tills": "invoice_lines"}


def test_an_extra_source_with_a_default_name_takes_its_contract() -> None:
    settings = Settings(extra_sources={"retail": "catalog"})
    assert settings.sources == {"beauty": "catalog", "retail": "catalog"}


def test_the_merged_sources_reach_airflow_processes_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    # Airflow's processes rebuild Settings from settings_env: merging again must change nothing.
    settings = Settings(extra_sources={"myshop": "catalog"})
    for name, value in settings_env(settings).items():
        if name.startswith("SHOPFLOW_"):
            monkeypatch.setenv(name, value)
    assert Settings().sources == settings.sources


def test_an_unknown_contract_is_refused_naming_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOPFLOW_EXTRA_SOURCES", '{"myshop": "orders"}')
    with pytest.raises(ValueError, match="extra_sources"):
        Settings()
