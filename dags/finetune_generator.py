"""
### finetune_generator

Fine-tunes the shop's generator (SmolLM2-135M-Instruct by default) on labels the catalog really
has, and makes it the served generator only when it is measurably better.

1. **prepare** - the training source's catalog (`marts.dim_items`) and related items (one user
   within 30 days, `marts.fct_training_examples`) into the run folder, so every later task sees
   the same rows. Items are held out by a stable hash of their id.
2. **finetune** - LoRA (or full, `mode`) on a fixed step budget (`max_steps`) over three targets:
   title → category path and brand; facts → the seller's title; a set of items → their deepest
   common category. Routed to the queue `SHOPFLOW_TRAINING_QUEUE`.
3. **evaluate** - the base, the tuned generator and the champion (when there is one) on the same
   held-out items: leaf exact, top-level and brand accuracy, ROUGE-L of the copy, theme leaf
   exact, and `raw_pass_rate` (share of its own bundle names, descriptions and explanations that
   pass the grounding check).
4. **register** - a version of `shopflow_generator` in the BentoML model store (the adapter alone,
   ~2 MB) with every figure and the lineage.
5. **gate** - promoted only if it is no worse than the champion (else the base) on any of those
   figures and better on one; the decision and the figures are recorded either way. Serving
   picks the champion up through `ml.registry.load_served_generator`.

**Triggers.** By hand or by another DAG (`airflow dags trigger finetune_generator -c
'{"overrides": {"max_steps": 40}}'`): a fine-tune costs minutes of CPU, so it does not run on every
published interval.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import Param, dag, get_current_context, task

from ml.core.settings import get_settings
from ml.ops.dag_helpers import context_run_id, utc_midnight

DAG_ID = "finetune_generator"
_settings = get_settings()


def _overrides() -> dict[str, Any]:
    return dict(get_current_context()["params"].get("overrides") or {})


@dag(
    dag_id=DAG_ID,
    schedule=None,
    start_date=utc_midnight(_settings.replay_history_end),
    catchup=False,
    max_active_runs=1,
    tags=["shopflow", "training", "generation"],
    default_args={
        "owner": "shopflow-ml",
        "retries": 1,
        "retry_delay": timedelta(seconds=30),
        "execution_timeout": timedelta(hours=3),
    },
    params={
        "reason": Param("manual", type="string", description="Why this run: recorded in the lineage."),
        "overrides": Param(
            {},
            type="object",
            description="ml.training.generator.DEFAULTS overrides: max_steps, mode, eval_items, ...",
        ),
    },
    doc_md=__doc__,
)
def finetune_generator() -> None:
    @task
    def prepare() -> dict[str, Any]:
        """Snapshot the catalog and related pairs (`ml.training.generator.prepare_generator_data`)."""
        from ml.training.generator import prepare_generator_data

        return prepare_generator_data(context_run_id())

    @task(queue=_settings.training_queue)
    def finetune(prepared: dict[str, Any]) -> dict[str, Any]:  # noqa: ARG001 (orders the tasks)
        """Fine-tune on the fixed step budget (`ml.training.generator.finetune_generator`)."""
        from ml.training.generator import finetune_generator as run

        return run(context_run_id(), overrides=_overrides())

    @task
    def evaluate(tuned: dict[str, Any]) -> dict[str, Any]:  # noqa: ARG001 (orders the tasks)
        """Base vs tuned (vs champion) on held-out items (`ml.training.generator.evaluate_generators`)."""
        from ml.training.generator import evaluate_generators

        return evaluate_generators(context_run_id(), overrides=_overrides())

    @task
    def register(evaluation: dict[str, Any]) -> dict[str, Any]:  # noqa: ARG001 (orders the tasks)
        """Save the tuned generator with its figures (`ml.training.generator.register_generator_version`)."""
        from ml.training.generator import register_generator_version

        reason = get_current_context()["params"].get("reason")
        return register_generator_version(
            context_run_id(), lineage={"reason": reason}, overrides=_overrides()
        )

    @task
    def gate(registered: dict[str, Any]) -> dict[str, Any]:
        """Promote only a generator that beat its reference
        (`ml.training.generator.gate_generator_version`)."""
        from ml.training.generator import gate_generator_version

        return gate_generator_version(registered["tag"], context_run_id())

    # At parse time TaskFlow calls return XComArgs that resolve to the dicts at run time.
    gate(register(evaluate(finetune(prepare()))))  # type: ignore[arg-type]


finetune_generator()
