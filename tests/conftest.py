"""Shared fixtures: isolated settings per test, a throwaway PostgreSQL database per session."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from ml.core.settings import PROJECT_DIR, Settings

PG_SERVER = os.environ.get("SHOPFLOW_TEST_PG", "postgresql://postgres@127.0.0.1:5432")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Embedded-default settings whose work dir (landing, DuckDB file, reports) is a temp dir."""
    return Settings(
        work_dir=tmp_path / "work",
        data_dir=PROJECT_DIR / "data",
        warehouse="duckdb",
        pii_salt="test-salt",  # type: ignore[arg-type]
    )


@contextmanager
def throwaway_pg_database(prefix: str) -> Iterator[str]:
    """A fresh PostgreSQL database (its DSN), dropped afterwards with every connection to it."""
    psycopg2 = pytest.importorskip("psycopg2")
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(f"{PG_SERVER}/postgres")
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name}")
    try:
        yield f"{PG_SERVER}/{name}"
    finally:
        with admin.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
            cur.execute(f"DROP DATABASE IF EXISTS {name}")
        admin.close()


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped afterwards."""
    with throwaway_pg_database("shopflow_test") as dsn:
        yield dsn


@pytest.fixture
def own_pg_database() -> Iterator[str]:
    """A PostgreSQL warehouse database for one test alone (the session one collects other tests' rows)."""
    with throwaway_pg_database("shopflow_own") as dsn:
        yield dsn


@pytest.fixture
def airflow_database() -> Iterator[str]:
    """A fresh PostgreSQL database for Airflow's metadata, dropped afterwards (its plain DSN)."""
    with throwaway_pg_database("shopflow_airflow") as dsn:
        yield dsn


@pytest.fixture
def pg_settings(tmp_path: Path, pg_database: str) -> Settings:
    """Production-profile settings: the session's PostgreSQL database as the warehouse."""
    return Settings(
        work_dir=tmp_path / "work",
        data_dir=PROJECT_DIR / "data",
        warehouse="postgres",
        postgres_dsn=pg_database,
        pii_salt="test-salt",  # type: ignore[arg-type]
    )


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local generator checkpoint: a tiny random Llama with the real SmolLM2 tokenizer (read
    from the packaged GGUF). It generates in milliseconds, so tests exercise the mechanics of
    generation (fine-tuning, the gate, request-path copy) without the real weights' CPU minutes."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from ml.generation.load import packaged_gguf

    gguf = packaged_gguf()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
    )
    folder = tmp_path_factory.mktemp("tiny_base")
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
