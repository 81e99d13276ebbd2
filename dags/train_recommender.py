"""
### train_recommender

Trains a challenger recommender on the published marts and promotes it only when it is
measurably better.

1. **build_dataset** - snapshot `marts.fct_training_examples` + `marts.dim_items` of the training
   source into the run folder, so every later task sees the same data.
2. **train** - fine-tune the pretrained text encoder + sequence model (`SHOPFLOW_TRAIN_OVERRIDES`
   and the run conf's `overrides`: mode frozen / lora / full, epochs, ...). Routed to the Airflow
   queue `SHOPFLOW_TRAINING_QUEUE` (`gpu` in production); resumes from its checkpoint on retry.
3. **evaluate** - full-catalog leave-one-out metrics of the challenger and of the baselines
   (popularity, item-kNN, SASRec) on the same split; writes the run report (tables + plots).
4. **register** - a new version in the BentoML model store with metrics, config and lineage
   (the marts Asset events that triggered the run, git sha).
5. **gate** - does validation NDCG@10 beat the champion's (re-scored on the same split) by
   `SHOPFLOW_PROMOTION_MARGIN`? The decision and both numbers are recorded either way; emits the
   `shopflow_model` Asset. A rejected challenger ends the run here (the later tasks skip).
6. **smoke_test** - build the Bento around the challenger, `bentoml serve` it, query every endpoint.
7. **promote** - only now the challenger becomes the champion; emits the `shopflow_bento` Asset.

**Triggers.** Scheduled on the `shopflow_marts` Asset (each published ingest run) while there is
no champion (or always, with `SHOPFLOW_RETRAIN_ON_PUBLISH=always`); by `monitor_drift` when it
sees drift, with conf `{"reason": "...", "report": "...", "overrides": {...}}`; or by hand.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import Param, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowSkipException

from ml.core.settings import get_settings
from ml.ops.dag_helpers import context_run_id, jsonable, utc_midnight
from shopflow_assets import BENTO, MARTS, MODEL

DAG_ID = "train_recommender"
_settings = get_settings()


def _overrides() -> dict[str, Any]:
    return dict(get_current_context()["params"].get("overrides") or {})


def _lineage() -> dict[str, Any]:
    """Why this run happened: the conf's reason and the marts events that triggered it."""
    context = get_current_context()
    events = context.get("triggering_asset_events") or {}
    marts_events = [
        {"timestamp": str(e.timestamp), "extra": dict(e.extra or {})}
        for asset_events in events.values()
        for e in asset_events
    ]
    return {
        "reason": context["params"].get("reason"),
        "report": context["params"].get("report"),
        "marts_events": jsonable(marts_events),
    }


@dag(
    dag_id=DAG_ID,
    schedule=[MARTS],
    start_date=utc_midnight(_settings.replay_history_end),
    catchup=False,
    max_active_runs=1,
    tags=["shopflow", "training", "bentoml"],
    default_args={
        "owner": "shopflow-ml",
        "retries": 1,
        "retry_delay": timedelta(seconds=30),
        "execution_timeout": timedelta(hours=6),
    },
    params={
        "reason": Param("marts updated", type="string", description="Why this run: shown in lineage."),
        "overrides": Param({}, type="object", description="TrainConfig overrides for this run."),
        "report": Param(
            None, type=["null", "string"], description="The monitoring report that asked for this run."
        ),
    },
    doc_md=__doc__,
)
def train_recommender() -> None:
    @task
    def build_dataset() -> dict[str, Any]:
        """Snapshot the training marts into the run folder (`ml.training.stages.build_dataset`).

        An Asset-triggered run skips (and so does the rest) once there is a champion, unless
        `SHOPFLOW_RETRAIN_ON_PUBLISH=always` (`ml.training.stages.publish_skip_reason`)."""
        from ml.training.snapshot import build_dataset as run
        from ml.training.stages import publish_skip_reason

        skip = publish_skip_reason(get_current_context()["dag_run"].run_type)
        if skip:
            raise AirflowSkipException(skip)
        return run(context_run_id())

    @task(queue=_settings.training_queue)
    def train(dataset: dict[str, Any]) -> dict[str, Any]:  # noqa: ARG001 (orders the tasks)
        """Fine-tune the challenger on the snapshot (`ml.training.stages.train_challenger`)."""
        from ml.training.stages import train_challenger

        return train_challenger(context_run_id(), _overrides())

    @task
    def evaluate(trained: dict[str, Any]) -> dict[str, Any]:  # noqa: ARG001 (orders the tasks)
        """Challenger and baselines on the same split; the run report
        (`ml.training.stages.evaluate_challenger`)."""
        from ml.training.stages import evaluate_challenger

        return evaluate_challenger(context_run_id(), _overrides())

    @task
    def register(evaluation: dict[str, Any]) -> dict[str, Any]:
        """Save the challenger in the BentoML model store with metrics and lineage
        (`ml.training.stages.register_challenger`)."""
        from ml.training.stages import register_challenger

        return register_challenger(context_run_id(), evaluation, _lineage(), _overrides())

    @task(outlets=[MODEL])
    def gate(registered: dict[str, Any]) -> dict[str, Any]:
        """Record whether the challenger beats the champion by the margin
        (`ml.training.stages.gate_challenger`)."""
        from ml.training.stages import gate_challenger

        decision = gate_challenger(registered["tag"], context_run_id())
        get_current_context()["outlet_events"][MODEL].extra = dict(jsonable(decision))
        return decision

    @task
    def smoke_test(decision: dict[str, Any]) -> dict[str, Any]:
        """Build the challenger's Bento, serve it and query every endpoint
        (`ml.flows.train.smoke_test_challenger`); skipped when the gate rejected the challenger."""
        from ml.flows.train import NotPromotedError, smoke_test_challenger

        try:
            return smoke_test_challenger(decision)
        except NotPromotedError as rejected:
            raise AirflowSkipException(str(rejected)) from None

    @task(outlets=[BENTO])
    def promote(decision: dict[str, Any], smoke: dict[str, Any]) -> dict[str, Any]:
        """Make the challenger the champion (`ml.flows.train.promote_challenger`)."""
        from ml.flows.train import promote_challenger

        result = promote_challenger(decision, smoke)
        get_current_context()["outlet_events"][BENTO].extra = dict(jsonable({**smoke, **result}))
        return result

    # At parse time TaskFlow calls return XComArgs that resolve to the dicts at run time.
    decision = gate(register(evaluate(train(build_dataset()))))  # type: ignore[arg-type]
    promote(decision, smoke_test(decision))  # type: ignore[arg-type]


train_recommender()
