"""The one settings object of ShopFlow.

Every path, connection, threshold and switch between the embedded default (DuckDB file, Airflow on
SQLite, local BentoML store) and production (PostgreSQL, Celery) lives here, read from the
environment (prefix ``SHOPFLOW_``) and an optional ``.env`` file. Nothing here touches the disk or
the network: directories are made by the stages that write into them.
"""

from __future__ import annotations

import secrets
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_DIR = Path(__file__).resolve().parents[2]

SourceKind = Literal["catalog", "invoice_lines"]
"""``catalog``: the bring-your-own-data contract (interactions + items tables).
``invoice_lines``: a retail till/web-shop export (one row per invoice line)."""


class Settings(BaseSettings):
    """ShopFlow configuration. Each field maps to the variable ``SHOPFLOW_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="SHOPFLOW_", env_file=".env", extra="ignore")

    project_dir: Path = Field(PROJECT_DIR, description="Root of the ShopFlow checkout.")
    data_dir: Path = Field(PROJECT_DIR / "data", description="The shipped real datasets (Parquet).")
    work_dir: Path = Field(
        PROJECT_DIR / ".shopflow",
        description="Where runs write: landing zone, warehouse file, reports, Airflow home.",
    )
    bentoml_home: Path = Field(
        None,  # type: ignore[assignment]  # filled from work_dir by _derive_paths
        validate_default=False,
        description="The BentoML store (models and Bentos): the model registry; defaults to "
        "<work_dir>/bentoml. Production points it at a volume shared by trainer and Bento.",
    )
    reports_dir: Path = Field(
        None,  # type: ignore[assignment]  # filled from work_dir by _derive_paths
        validate_default=False,
        description="Data-quality and monitoring reports; defaults to <work_dir>/reports.",
    )

    generator_cache_dir: Path = Field(
        None,  # type: ignore[assignment]  # filled from work_dir by _derive_paths
        validate_default=False,
        description="Causal LMs converted once from GGUF to plain checkpoints (the default "
        "generator: ~50 s to dequantize, ~1 s to load once cached); defaults to "
        "<work_dir>/generator_cache. Share it between runs and tests.",
    )
    bundle_copy_budget_s: float = Field(
        0.0,
        ge=0.0,
        description="Seconds the generator may spend writing bundle names, descriptions and "
        "explanations when a model version is packaged (most popular items first; the rest get "
        "the template copy). 0 (default): template copy only, so a training run's time is "
        "unchanged. The production stack sets 600; the demo leaves 0 (its generator is tuned after "
        "its recommender versions are packaged, and its Bento writes the copy on a cache miss, "
        "serve_copy_budget_s).",
    )
    serve_copy_budget_s: float = Field(
        3.0,
        ge=0.0,
        description="Seconds a /bundle request waits for the generator champion to write copy the "
        "package lacks (another size, a new item, a text packaged as the template); past it the "
        "template is served and the text is written in the background for the next request. "
        "/recommend's reasons never wait (its handler runs on the event loop): a miss gets the "
        "template now and the generated sentence later. Only a gated generator champion writes "
        "(finetune_generator); 0 turns request-path generation off.",
    )
    serve_copy_max_pending: int = Field(
        32,
        ge=1,
        description="Texts the Bento's copy writer holds queued or in progress at most; a miss "
        "beyond it gets the template and is not queued (generation takes seconds on a CPU).",
    )

    warehouse: Literal["duckdb", "postgres"] = Field(
        "duckdb", description="Warehouse engine; also selects the dbt target of the same name."
    )
    duckdb_path: Path | None = Field(
        None, description="DuckDB warehouse file; defaults to <work_dir>/warehouse.duckdb."
    )
    duckdb_memory_limit: str | None = Field(
        None,
        description="DuckDB's memory_limit for ShopFlow's connections (e.g. '512MB'); unset, DuckDB "
        "takes 80% of RAM and a scan of a large interval keeps its blocks cached (bench/drift.py: "
        "2 GB peak at 10M rows, 0.7 GB with '512MB', slower). dbt's connections are configured in "
        "dbt/profiles.yml.",
    )
    duckdb_lock_timeout_s: float = Field(
        3600.0,
        gt=0,
        description="How long a process waits for another one's use of the DuckDB file (one "
        "process at a time) before failing; an ingest run's dbt build holds it for minutes.",
    )
    postgres_dsn: str = Field(
        "postgresql://postgres@127.0.0.1:5432/shopflow",
        description="PostgreSQL warehouse (production). The database is created if missing.",
    )
    airflow_database_url: str | None = Field(
        None,
        description="SQLAlchemy URL of Airflow's metadata DB for the embedded runner (LocalAirflow), "
        "e.g. postgresql+psycopg2://postgres@127.0.0.1:5432/airflow; None = SQLite file in airflow_home.",
    )
    airflow_executor: str = Field(
        "LocalExecutor", description="Executor of the embedded runner's scheduler (AIRFLOW__CORE__EXECUTOR)."
    )
    airflow_preload_modules: list[str] = Field(
        default_factory=lambda: [
            "pandas",
            "pyarrow.parquet",
            "duckdb",
            "great_expectations",
            "dbt.cli.main",
            "dbt.adapters.duckdb",
            "evidently",
            "torch",
            "transformers",
            "ml.data.quality.gx",
            "ml.monitoring.drift",
            "ml.flows.train",
            "ml.generation.finetune",
        ],
        description="Modules Airflow's scheduler and Celery workers import once before they fork "
        "task processes, so each task starts with them (ml/ops/airflow_site/airflow_local_settings.py); "
        "[] turns it off (JSON in the environment).",
    )

    pii_salt: SecretStr | None = Field(
        None,
        description="Salt for hashing user ids at ingest. Required in production; the embedded "
        "default keeps a random one in <work_dir>/pii_salt so reruns hash identically.",
    )
    pii_phone_regions: list[str] = Field(
        default_factory=lambda: ["US", "GB"],
        min_length=1,
        description="Regions (ISO 3166 codes) whose national phone formats the text scrubber "
        'recognises, e.g. ["US"]; numbers written with +<country code> are found whatever '
        "these are. Default: the shipped data's shops, Amazon US and a UK retailer (JSON in the "
        "environment).",
    )

    sources: dict[str, SourceKind] = Field(
        default_factory=lambda: dict[str, SourceKind](beauty="catalog", retail="invoice_lines"),
        description="Landing sources and the contract each follows (JSON in the environment). "
        "Setting it replaces the default list; to add a source beside the defaults use "
        "extra_sources.",
    )
    extra_sources: dict[str, SourceKind] = Field(
        default_factory=dict,
        description='Sources added to `sources` (JSON in the environment), e.g. {"myshop": '
        '"catalog"}: the shipped defaults stay, so the demo data and yours are both loaded. '
        "A name in both takes its contract from here.",
    )
    partition_grain: Literal["day", "week", "month"] = Field(
        "month", description="Size of one landing partition, and of one ingest DAG run."
    )
    replay_history_start: str = Field(
        "2000-01-01", description="Replay: start of the history bootstrap interval (before all data)."
    )
    replay_history_end: str = Field(
        "2013-10-01",
        description="Replay: everything before this date lands as history (loaded by one bootstrap run).",
    )
    replay_train_end: str = Field(
        "2014-01-01",
        description="Replay: end of the training period; later partitions are the 'future' that "
        "monitoring replays interval by interval.",
    )
    replay_later_end: str = Field(
        "2014-08-01",
        description="Replay: end of the later period the demo replays interval by interval "
        "(Beauty's last review is 2014-07-23).",
    )

    max_quarantine_rate: float = Field(
        0.40,
        ge=0.0,
        le=1.0,
        description="Publishing is blocked when a source's quarantined share of landed rows in "
        "a run exceeds this. Online Retail II quarantines ~27% (mostly guest checkouts with "
        "no customer id), so the default leaves room for that but not for a broken export.",
    )
    rating_scale: tuple[float, float] = Field(
        (0.0, 5.0),
        description="The lowest and highest rating an interaction may carry (JSON in the "
        "environment, e.g. [1, 10]). The raw gate quarantines a rating outside it (rule "
        "rating_in_range) and the marts gate blocks on one; rows without a rating pass. "
        "Default 0-5: the shipped Beauty reviews' 1-5 stars, and 0 for sources that use it.",
    )
    max_basket_lines: int = Field(
        200, description="Baskets with more distinct items than this are not used for co-purchase pairs."
    )

    train_source: str = Field("beauty", description="Landing source whose marts the recommender trains on.")
    train_max_users: int | None = Field(
        None, description="Train on a random slice of this many users (demo/tests); None = all users."
    )
    train_overrides: dict[str, Any] = Field(
        default_factory=dict,
        description='TrainConfig overrides (JSON), e.g. {"mode": "lora", "epochs": 30}; a run\'s '
        "conf overrides these in turn.",
    )
    baselines: list[str] = Field(
        default_factory=lambda: ["popularity", "item_knn", "sasrec"],
        description="Baselines trained and evaluated beside every challenger, same split.",
    )
    training_queue: str = Field(
        "default", description="Airflow queue of the training task; 'gpu' routes it to GPU workers."
    )
    gate_metric: str = Field(
        "ndcg@10", description="Validation metric a challenger must improve to be promoted."
    )
    promotion_margin: float = Field(
        0.0005,
        ge=0.0,
        description="A challenger is promoted only if its validation metric is at least the "
        "champion's plus this (absolute) margin.",
    )
    retrain_on_publish: Literal["always", "until_champion"] = Field(
        "until_champion",
        description="Which marts Asset events start training: 'always' (every published ingest "
        "run), or 'until_champion' (only while there is no champion; after that retraining is "
        "driven by monitor_drift or started by hand).",
    )

    drift_share_threshold: float = Field(
        0.5,
        gt=0.0,
        le=1.0,
        description="Data (or prediction) drift is declared when at least this share of the "
        "monitored columns drifted (Evidently's DriftedColumnsCount share).",
    )
    drift_column_threshold: float = Field(
        0.1,
        gt=0.0,
        description="Per-column drift threshold: normed Wasserstein distance (numerical) or "
        "Jensen-Shannon distance (categorical) at or above this is drift.",
    )
    drift_sample_rows: int = Field(
        200_000,
        ge=1_000,
        description="Rows sampled (seeded) from each side for drift tests: bounds time and memory "
        "on large intervals; distances on 200k rows match the full data to ~1e-3.",
    )
    drift_reference_days: int = Field(
        90,
        ge=1,
        description="The data-drift reference: the last this-many days of the champion's training "
        "snapshot (recent behaviour, not the whole history).",
    )
    min_online_hit_ratio: float = Field(
        0.5,
        ge=0.0,
        description="Online quality alarm: the hit rate of served recommendations below this "
        "share of the champion's offline test hit rate (recall@10).",
    )
    min_monitored_requests: int = Field(
        30, ge=1, description="Fewer served recommendations than this: online quality is not judged."
    )
    retrain_cooldown_minutes: float = Field(
        90 * 24 * 60.0,
        ge=0.0,
        description="After monitoring triggered a retraining, it triggers no other for this long "
        "(default 90 days: at most one drift-triggered retraining per quarter of data) "
        "(alerts are still sent), counted in data-interval time: between the ends of the "
        "monitored intervals, not the wall-clock times of the decisions.",
    )
    alert_webhook_url: str | None = Field(
        None,
        description="Monitoring alerts are always logged; when set they are also POSTed as JSON "
        "to this URL (Slack/Teams-style incoming webhook, Alertmanager, ...).",
    )
    evidently_workspace: Path | None = Field(
        None,
        description="Evidently workspace (one project per model version) for `evidently ui`; "
        "defaults to <work_dir>/evidently.",
    )
    ask_generator: str = Field(
        "smollm2",
        description="The generator /ask writes answers with: 'smollm2' (the packaged "
        "SmolLM2-135M-Instruct, read from its converted checkpoint in generator_cache_dir), a local "
        "checkpoint folder (a tuned generator), or '' for template answers only. The Bento loads it "
        "on the first /ask and never converts a GGUF file itself (~50 s of CPU): until the cache has "
        "the checkpoint, answers are templates and say so.",
    )
    ask_time_budget_s: float = Field(
        20.0,
        gt=0.0,
        description="The longest /ask waits for the generator's answer (seconds); past it, or while "
        "another answer is being written, the template answer built from the catalog facts is served "
        "and the response says so.",
    )
    serving_api_token: SecretStr | None = Field(
        None,
        description="When set, the Bento answers every endpoint except /livez, /readyz and /metrics "
        "only with the header 'Authorization: Bearer <token>' (else 401). Unset: open (local use).",
    )
    serving_follow_champion_s: float = Field(
        5.0,
        ge=0.0,
        description="The running Bento reads the registry's champion pointer this often (seconds) and "
        "swaps to a newly promoted or rolled-back version in-process once it has loaded, warmed up "
        "and passed the smoke queries (serving/hot_swap.py); 0 turns following off. A Bento pinned "
        "to a version by SHOPFLOW_SERVING_MODEL never follows.",
    )
    serving_log_flush_s: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="0: each request writes its request-log line before it answers. > 0: lines are "
        "queued and a thread appends them every this many seconds (off the request path; a "
        "graceful stop loses none, a SIGKILL at most this interval's, never a broken line).",
    )
    serving_ann_min_items: int = Field(
        50_000,
        ge=1,
        description="Catalogs with at least this many items are served from an HNSW index built at "
        "Bento build time (serving/index.py, packaged in the model's ann/ folder); smaller ones by "
        "exact search. 50k: exact inner product over 64-wide vectors costs ~0.3 ms a query there "
        "(0.06 ms at the real 12k catalog, where HNSW gains nothing) and grows linearly; see "
        "bench/results/ann.json.",
    )

    @model_validator(mode="after")
    def _check_rating_scale(self) -> Settings:
        low, high = self.rating_scale
        if not low < high:
            raise ValueError(f"rating_scale must be [lowest, highest], lowest < highest: got [{low}, {high}]")
        return self

    @model_validator(mode="after")
    def _derive_paths(self) -> Settings:
        """Paths not set explicitly live under work_dir.

        They are real fields (not properties) so that ``SHOPFLOW_BENTOML_HOME`` /
        ``SHOPFLOW_REPORTS_DIR`` override them and ``settings_env`` hands them on to Airflow's
        processes. Derived once, at construction: ``model_copy(update={"work_dir": ...})`` keeps
        the old ones, so build a new ``Settings`` to move the work dir.
        """
        if self.bentoml_home is None:
            self.bentoml_home = self.work_dir / "bentoml"
        if self.reports_dir is None:
            self.reports_dir = self.work_dir / "reports"
        if self.generator_cache_dir is None:
            self.generator_cache_dir = self.work_dir / "generator_cache"
        if self.extra_sources:
            # Merged here, once, so every reader of `sources` (ingest, the raw gate, land, the
            # DAGs) sees the added ones; idempotent when settings_env hands both on to Airflow.
            self.sources = {**self.sources, **self.extra_sources}
        return self

    @property
    def duckdb_file(self) -> Path:
        return self.duckdb_path or self.work_dir / "warehouse.duckdb"

    @property
    def landing_dir(self) -> Path:
        return self.work_dir / "landing"

    @property
    def evidently_dir(self) -> Path:
        return self.evidently_workspace or self.work_dir / "evidently"

    @property
    def serving_log_dir(self) -> Path:
        """Where the Bento writes its request log (JSON lines, one file per UTC day)."""
        return self.work_dir / "serving_logs"

    @property
    def gx_dir(self) -> Path:
        return self.work_dir / "gx"

    @property
    def dbt_project_dir(self) -> Path:
        return self.project_dir / "dbt"

    @property
    def airflow_home(self) -> Path:
        return self.work_dir / "airflow"

    def salt(self) -> str:
        """The PII salt: from the environment, else a random one kept under work_dir."""
        if self.pii_salt is not None:
            return self.pii_salt.get_secret_value()
        if self.warehouse == "postgres":
            raise ValueError("SHOPFLOW_PII_SALT must be set when the warehouse is PostgreSQL.")
        salt_file = self.work_dir / "pii_salt"
        if not salt_file.exists():
            salt_file.parent.mkdir(parents=True, exist_ok=True)
            salt_file.write_text(secrets.token_hex(16))
            salt_file.chmod(0o600)
        return salt_file.read_text().strip()

    def dbt_env(self) -> dict[str, str]:
        """Environment variables that dbt/profiles.yml reads."""
        from urllib.parse import urlparse

        pg = urlparse(self.postgres_dsn)
        return {
            "SHOPFLOW_DUCKDB_PATH": str(self.duckdb_file),
            "SHOPFLOW_PG_HOST": pg.hostname or "127.0.0.1",
            "SHOPFLOW_PG_PORT": str(pg.port or 5432),
            "SHOPFLOW_PG_USER": pg.username or "postgres",
            "SHOPFLOW_PG_PASSWORD": pg.password or "",
            "SHOPFLOW_PG_DATABASE": (pg.path or "/shopflow").lstrip("/"),
        }


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
