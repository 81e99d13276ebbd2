"""The main job on the embedded default: the closed loop on real data, through Airflow's scheduler.

``make demo`` calls :func:`run_demo`:

1. land the training period of the shipped datasets; start Airflow (scheduler, DAG processor,
   API server on SQLite; every DAG unpaused);
2. load the history with one bootstrap run of ``ingest_transform_validate`` and backfill the
   replay window interval by interval; the published marts schedule ``train_recommender``, whose
   first champion is gated, built into a Bento, smoke-queried and promoted;
3. serve that Bento (``bentoml serve``) and replay the later period interval by interval: land
   and ingest the interval, send the Bento the traffic of the users who really shopped then
   (``ml.flows.traffic``), run ``monitor_drift`` for it; when monitoring triggers a
   retraining, the loop goes on while it runs, and the Bento swaps to a promoted challenger
   inside the running process (``serving.hot_swap``), as it would in production; the loop waits
   for the retraining only at its end;
4. summarise: runs per DAG, rows per table, models and gate decisions, drift per monitoring run,
   the version serving now and where every report is.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from ml import registry
from ml.core.calendar import partitions_between
from ml.core.settings import Settings, get_settings
from ml.data.replay import replay
from ml.data.transform import dbt_docs_generate
from ml.flows.traffic import send_traffic
from ml.monitoring.decision import monitoring_runs
from ml.ops.local_airflow import AirflowRunError, LocalAirflow
from ml.ops.progress import format_elapsed
from serving.bento import build_bento, running_server
from serving.client import auth_headers

INGEST_DAG = "ingest_transform_validate"
TRAIN_DAG = "train_recommender"
MONITOR_DAG = "monitor_drift"
GENERATOR_DAG = "finetune_generator"
DAGS = (INGEST_DAG, TRAIN_DAG, MONITOR_DAG, GENERATOR_DAG)

GENERATOR_STEPS = 30
"""LoRA steps of the demo's generator fine-tune (``shopflow demo --generator-steps``; 0: none)."""
GENERATOR_EVAL = {"eval_items": 6, "eval_sets": 4, "eval_per_kind": 6}
"""The demo's held-out evaluation of base vs tuned: small, so it finishes beside the later
intervals on 2 cores (``make bench-generation`` measures on many more texts)."""


@dataclass
class DemoResult:
    runs: list[dict[str, Any]] = field(default_factory=list)
    train_runs: list[dict[str, Any]] = field(default_factory=list)
    monitor_runs: list[dict[str, Any]] = field(default_factory=list)
    asset_events: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    traffic: list[dict[str, Any]] = field(default_factory=list)
    served: list[tuple[str, str]] = field(default_factory=list)
    """(interval start, model version that answered its traffic)."""
    serving_now: str | None = None
    showcase: list[str] = field(default_factory=list)
    """What a shopper sees from the live Bento at the end: /ask answers, a bundle, reasons."""
    generator: dict[str, Any] = field(default_factory=dict)
    """The demo's finetune_generator run: its id and state, the gate's decision, the evaluation."""


def run_demo(
    settings: Settings | None = None,
    echo: Any = print,
    later_intervals: int | None = None,
    traffic_users: int = 300,
    generator_steps: int = GENERATOR_STEPS,
) -> DemoResult:
    """Run the closed loop end to end through Airflow's scheduler and return what ran.

    Args:
        settings: ShopFlow settings (work dir, slices, thresholds).
        echo: where progress lines go.
        later_intervals: replay only this many intervals of the later period (None: all of it,
            up to ``replay_later_end``).
        traffic_users: shoppers per interval whose traffic is sent to the Bento.
        generator_steps: LoRA steps of the generator's fine-tune (``finetune_generator``, run
            beside the later intervals once the first champion serves); 0 skips it.
    """

    settings = settings or get_settings()
    result = DemoResult()
    history_start = date.fromisoformat(settings.replay_history_start)
    history_end = date.fromisoformat(settings.replay_history_end)
    train_end = date.fromisoformat(settings.replay_train_end)

    started = time.monotonic()
    echo(f"1/6 Landing the training period (< {train_end}) as {settings.partition_grain}ly partitions …")
    files = replay(settings, end=train_end)
    echo(f"    {len(files)} landing files under {settings.landing_dir}")
    result.seconds["replay"] = time.monotonic() - started

    echo("2/6 Starting Airflow (scheduler, DAG processor, API server; SQLite metadata) …")
    with LocalAirflow(settings) as airflow:
        for dag_id in DAGS:
            airflow.wait_for_dag(dag_id)
        # The train DAG is scheduled on the marts Asset; a paused consumer drops Asset events,
        # so it is unpaused first: every published ingest run then queues training. Unpausing
        # the scheduled DAGs also runs their current (today's) interval once: no data, no-ops.
        airflow.unpause(TRAIN_DAG)
        airflow.unpause(MONITOR_DAG)
        airflow.unpause(INGEST_DAG)
        airflow.unpause(GENERATOR_DAG)  # schedule=None: runs only when triggered
        result.seconds["airflow_start"] = time.monotonic() - started - result.seconds["replay"]
        echo(f"    API on {airflow.base_url}; logs in {airflow.log_dir}")

        mark = time.monotonic()
        echo(f"3/6 Bootstrap run: history [{history_start}, {history_end}) …")
        run_id = airflow.trigger(
            INGEST_DAG,
            conf={"interval_start": history_start.isoformat(), "interval_end": history_end.isoformat()},
        )
        airflow.wait_for_runs(INGEST_DAG, run_ids=[run_id], timeout=1800, label=f"{INGEST_DAG} bootstrap")
        result.seconds["bootstrap_run"] = time.monotonic() - mark

        mark = time.monotonic()
        echo(f"4/6 Backfill of the replay window [{history_end}, {train_end}), one run per interval …")
        backfill = airflow.backfill(INGEST_DAG, history_end, train_end)
        airflow.wait_for_runs(
            INGEST_DAG, backfill_id=backfill["id"], timeout=1800, label=f"{INGEST_DAG} backfill"
        )
        result.seconds["backfill_runs"] = time.monotonic() - mark

        mark = time.monotonic()
        echo("5/6 Training runs the marts Asset events triggered (train → evaluate → gate → Bento) …")
        _wait_for_triggered_runs(airflow, TRAIN_DAG)
        result.seconds["train_runs_after_ingest"] = time.monotonic() - mark

        mark = time.monotonic()
        _closed_loop(
            airflow, settings, result, echo, train_end, later_intervals, traffic_users, generator_steps
        )
        result.seconds["later_period_loop"] = time.monotonic() - mark

        result.runs = airflow.runs(INGEST_DAG)
        result.train_runs = airflow.runs(TRAIN_DAG)
        result.monitor_runs = airflow.runs(MONITOR_DAG)
        result.asset_events = len(airflow.asset_events("shopflow_marts", source_dag_id=INGEST_DAG))

    mark = time.monotonic()
    dbt_docs_generate(settings)
    result.seconds["dbt_docs"] = time.monotonic() - mark
    result.seconds["total"] = time.monotonic() - started
    return result


def _champion_bento(airflow: Any, settings: Settings) -> str:
    """The Bento built around the champion (by its promotion's shopflow_bento event), else a new build."""

    champion = registry.champion(settings)
    for event in reversed(airflow.asset_events("shopflow_bento")):
        extra = event.get("extra") or {}
        if extra.get("champion") == champion and extra.get("bento"):
            return str(extra["bento"])
    return build_bento(champion, settings)


def _closed_loop(
    airflow: Any,
    settings: Settings,
    result: DemoResult,
    echo: Any,
    start: date,
    limit: int | None,
    traffic_users: int,
    generator_steps: int = 0,
) -> None:
    """Serve the champion and replay the later period: traffic → ingest → monitor → (retrain)."""
    intervals = partitions_between(
        start, date.fromisoformat(settings.replay_later_end), settings.partition_grain, limit
    )
    if registry.champion(settings) is None:
        echo("6/6 No champion was promoted: nothing to serve or monitor.")
        return
    echo(f"6/6 Serving the champion's Bento and replaying {len(intervals)} later interval(s) …")
    retrainings: list[str] = []
    bento = _champion_bento(airflow, settings)
    with running_server(bento, settings=settings) as server:
        serving = registry.champion(settings)
        echo(f"    {bento} ({serving}) on {server.base_url}, ready in {server.ready_s:.0f} s")
        tuning = None
        if generator_steps > 0:
            # The generator learns the shop's catalog beside the loop (the idle share of the cores).
            overrides = {"max_steps": generator_steps, **GENERATOR_EVAL}
            tuning = airflow.trigger(GENERATOR_DAG, conf={"reason": "demo", "overrides": overrides})
            echo(f"    {GENERATOR_DAG} ({generator_steps} LoRA steps) runs beside the loop: {tuning}")
        for done, (first, end) in enumerate(intervals):
            step = ("later intervals", done, len(intervals))
            replay(settings, start=first, end=end)
            run_id = airflow.trigger(
                INGEST_DAG, conf={"interval_start": first.isoformat(), "interval_end": end.isoformat()}
            )
            label = f"{INGEST_DAG} [{first}, {end})"
            airflow.wait_for_runs(INGEST_DAG, run_ids=[run_id], timeout=1800, label=label, step=step)
            # The interval's shoppers are known once it is ingested; the served model has not seen
            # their new interactions (it trained before), so asking now is asking "before".
            traffic = send_traffic(server.base_url, first, end, settings, max_users=traffic_users)
            result.traffic.append(traffic.as_dict())
            result.served += [(str(first), model) for model in sorted(traffic.models)]
            monitor = airflow.trigger(
                MONITOR_DAG, conf={"interval_start": first.isoformat(), "interval_end": end.isoformat()}
            )
            label = f"{MONITOR_DAG} [{first}, {end})"
            airflow.wait_for_runs(MONITOR_DAG, run_ids=[monitor], timeout=1800, label=label, step=step)
            decision = _decision_of(settings, monitor)
            where = f"{done + 1}/{len(intervals)} [{first}, {end})"
            echo(f"    {where} {traffic.users} shoppers → monitor: {decision}")
            triggered = f"monitor__{monitor}"
            if triggered in {r["dag_run_id"] for r in airflow.runs(TRAIN_DAG)}:
                # Production does not stop the shop while it retrains: the loop goes on with the
                # next interval, and the Bento follows the champion pointer (serving.hot_swap),
                # swapping to the new version inside the running process once it is promoted.
                retrainings.append(triggered)
                echo(f"    retraining {triggered} runs beside the next intervals; the Bento follows")
        for triggered in retrainings:
            airflow.wait_for_runs(TRAIN_DAG, run_ids=[triggered], timeout=3600, label="retraining")
        now = registry.champion(settings)
        if now != serving:
            swapped = _wait_for_version(server.base_url, settings, str(now), timeout=120.0)
            state = "the running Bento swapped to it" if swapped else "the running Bento has not swapped yet"
            echo(f"    new champion {now}: {state}")
        elif retrainings:
            echo(f"    the challenger was not promoted: {serving} keeps serving")
        if tuning is not None:
            mark = time.monotonic()
            try:
                airflow.wait_for_runs(GENERATOR_DAG, run_ids=[tuning], timeout=2400, label=GENERATOR_DAG)
                state = "success"
            except AirflowRunError as error:  # the loop's result stands without the generator
                state = f"failed: {error}"
                echo(f"    {GENERATOR_DAG} {state}")
            result.generator = generator_outcome(settings, tuning, state)
            result.seconds["generator_wait"] = time.monotonic() - mark
        result.serving_now = _ask_version(server.base_url, settings)
        result.showcase = showcase(server.base_url, settings)


def generator_outcome(settings: Settings, run_id: str, state: str | None) -> dict[str, Any]:
    """What the demo's ``finetune_generator`` run decided and measured (from its run folder and
    the generator ledger)."""
    import json

    from ml.core.artifacts import run_dir
    from ml.training.generator import GENERATOR_DIR

    outcome: dict[str, Any] = {"run_id": run_id, "state": state}
    decisions = [d for d in registry.generator_decisions(settings) if d.get("run_id") == run_id]
    if decisions:
        outcome["decision"] = decisions[-1]
    path = run_dir(run_id, settings) / GENERATOR_DIR / "evaluation.json"
    if path.is_file():
        outcome["evaluation"] = json.loads(path.read_text())
    return outcome


def render_generator(result: DemoResult) -> str:
    """The generator's fine-tune: base vs tuned on held-out items, the gate, a few tuned texts."""
    run = result.generator
    lines = ["The generator (finetune_generator, beside the loop)", "-" * 51]
    lines.append(f"  run {run.get('run_id')}: {run.get('state')}")
    evaluation = run.get("evaluation") or {}
    results = evaluation.get("results") or {}
    metrics = ("raw_pass_rate", "leaf_exact", "top_level_accuracy", "brand_accuracy", "rouge_l")
    if results:
        lines.append(f"  held-out cases {evaluation.get('cases')}")
        lines.append("  " + f"{'':<9}" + "".join(f"{m:>20}" for m in (*metrics, "tokens/s")))
        for name, scores in results.items():
            speed = (scores.get("speed") or {}).get("tokens_per_s")
            cells = "".join(f"{float(scores.get(m, 0.0)):>20.3f}" for m in metrics)
            lines.append(f"  {name:<9}{cells}{speed!s:>20}")
    decision = run.get("decision")
    if decision:
        verdict = "promoted: /ask and bundle copy use it" if decision.get("promoted") else "not promoted"
        lines.append(f"  gate: {verdict} ({decision.get('reason')})")
    examples = ((results.get("tuned") or {}).get("examples") or {}).get("grounded") or []
    if examples:
        lines.append("  the tuned generator's own texts on held-out items (before the grounding check):")
        lines += [f"    {e.get('kind')}: {e.get('text')!r}" for e in examples[:6]]
    return "\n".join(lines)


SHOWCASE_QUERY = "mascara"
"""The shopper's search the showcase starts from (Beauty's catalog has many)."""
ABSENT_PRODUCT = "do you sell a cordless garden hose reel?"
"""A question about a product a beauty shop does not have: the assistant must say so."""


SHOWCASE_COPY_WAIT_S = 120.0
"""How long the showcase asks again for a bundle's or reasons' copy that the Bento writes in the
background (a cache miss): the first request after the generator's promotion also loads it."""


def showcase(base_url: str, settings: Settings) -> list[str]:
    """Ask the live Bento what a shopper would: /search, /ask (a price, a maker, a product the shop
    does not have), /bundle for the found item, /recommend with its reasons. Lines for the summary;
    a failed call is shown as such (the summary is a report, not a test).

    Copy the package lacks is written by the Bento on a cache miss, past the request's budget in
    the background: the bundle and the reasons are asked again until written (at most
    :data:`SHOWCASE_COPY_WAIT_S`), as a shopper coming back would see them."""
    import httpx

    headers = auth_headers(settings)
    lines: list[str] = []

    def post(path: str, body: dict[str, Any]) -> dict[str, Any] | None:
        try:
            answer = httpx.post(f"{base_url}{path}", json=body, headers=headers, timeout=120)
        except httpx.HTTPError as error:
            lines.append(f"  {path}: {type(error).__name__}: {error}")
            return None
        if answer.status_code != 200:
            lines.append(f"  {path}: HTTP {answer.status_code} {answer.text[:160]}")
            return None
        return dict(answer.json())

    found = post("/search", {"query": SHOWCASE_QUERY, "k": 10})
    if not found or not found.get("items"):
        return lines or [f"  /search {SHOWCASE_QUERY!r}: nothing found"]
    # The first hit the catalog knows a price and a maker of: the questions below ask for them
    # (many Beauty listings have neither, and "no price for it" shows little of the assistant).
    described = [i for i in found["items"] if i.get("price") is not None and i.get("brand")]
    item = (described or found["items"])[0]
    lines.append(
        f"  /search {SHOWCASE_QUERY!r} → {item['item_id']} {item['title']!r} (price {item.get('price')})"
    )
    short = " ".join(str(item["title"]).split()[:6])
    for question in (f"how much is {short}?", f"who makes {short}?", ABSENT_PRODUCT):
        asked = post("/ask", {"question": question})
        if asked:
            cited = ", ".join(i["item_id"] for i in asked.get("items", [])) or "none"
            lines.append(
                f"  /ask {question!r}\n      → {asked['answer']!r} [{asked['strategy']}; cites {cited}]"
            )

    def post_until_written(path: str, body: dict[str, Any], statuses: Any) -> tuple[Any, str]:
        """Ask until the Bento's copy writer has written the answer's texts (a miss is written in
        the background after the first answer); the answer, and what it took."""
        started = time.monotonic()
        first = answer = post(path, body)
        while answer and "template" in statuses(answer) and time.monotonic() - started < wait_s:
            time.sleep(2.0)
            answer = post(path, body) or answer
        if not first or not answer or answer is first:
            return answer, ""
        was = ", ".join(sorted(set(statuses(first))))
        return answer, f"written {time.monotonic() - started:.0f} s after a first answer with {was} copy"

    # Only a promoted generator writes copy on the request path: without one, templates it is.
    wait_s = SHOWCASE_COPY_WAIT_S if registry.generator_champion(settings) else 0.0

    # A bundle has a total: its seed is the first hit the Bento's catalog prices (search shows
    # price bands, so ask /bundle itself; an unpriced seed is a quick 404).
    seed = item
    for hit in found["items"]:
        body = {"item_id": hit["item_id"]}
        if httpx.post(f"{base_url}/bundle", json=body, headers=headers, timeout=120).status_code == 200:
            seed = hit
            break
    bundle, took = post_until_written("/bundle", {"item_id": seed["item_id"]}, lambda a: [a["copy_status"]])
    if bundle:
        members = "; ".join(f"{b['title'][:40]} ({b.get('price')})" for b in bundle["items"])
        lines.append(
            f"  /bundle {seed['item_id']} → {bundle['name']!r}: {bundle['description']!r}\n"
            f"      {members}; total {bundle.get('total_price')} [{bundle['copy_status']}]"
            + (f" ({took})" if took else "")
        )
    recommended, took = post_until_written(
        "/recommend",
        {"recent_items": [item["item_id"]], "k": 3},
        lambda a: [i.get("reason_copy") or "template" for i in a["items"]],
    )
    if recommended:
        lines.append(f"  /recommend after {item['item_id']}" + (f" ({took}):" if took else ":"))
        for rec in recommended["items"]:
            lines.append(f"      → {rec['item_id']}: {rec.get('reason')} [{rec.get('reason_copy')}]")
    return lines


def render_showcase(result: DemoResult) -> str:
    """The showcase lines under a heading (empty when nothing was served)."""
    if not result.showcase:
        return ""
    return "\n".join(["What a shopper sees (the live Bento, at the end)", "-" * 48, *result.showcase])


def _decision_of(settings: Settings, run_id: str) -> str:

    runs = monitoring_runs(settings)
    row = runs[runs["run_id"] == run_id]
    if row.empty:
        return "no decision recorded"
    return f"{row.iloc[-1]['action']}: {row.iloc[-1]['reason']}"


def _ask_version(base_url: str, settings: Settings) -> str | None:
    """The model version that answers a request now (what the live Bento serves)."""
    import httpx

    answer = httpx.post(
        f"{base_url}/search", json={"query": "shampoo", "k": 1}, headers=auth_headers(settings), timeout=30
    )
    return str(answer.json()["model_version"]) if answer.status_code == 200 else None


def _wait_for_version(base_url: str, settings: Settings, version: str, timeout: float) -> bool:
    """Wait until the live Bento answers with ``version`` (its champion follower polls the pointer)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _ask_version(base_url, settings) == version:
            return True
        time.sleep(2.0)
    return False


def _wait_for_triggered_runs(airflow: Any, dag_id: str, settle: float = 20.0) -> list[dict[str, Any]]:
    """Wait until Asset-triggered runs stop appearing and all of them have finished.

    Events that arrive while a run is active (max_active_runs=1) are queued and become one more
    run when it ends, so one quiet wait is not enough: wait, pause ``settle`` s, look again.
    """
    seen = -1
    while True:
        runs = airflow.wait_for_runs(dag_id, timeout=3600)
        if len(runs) == seen:
            return runs
        seen = len(runs)
        time.sleep(settle)


def render_models(settings: Settings) -> str:
    """Each registered version with its metrics, and the gate decisions in order."""

    metric = settings.gate_metric
    champion = registry.champion(settings)
    lines = ["Models (BentoML store) and gate decisions", "-----------------------------------------"]
    for version in registry.list_versions(settings):
        val = version.metric("validation", metric)
        test = version.metric("test", metric)
        baselines = version.metrics.get("baselines", {})
        best: tuple[str | None, dict[str, Any]] = max(
            baselines.items(), key=lambda kv: kv[1].get(metric, 0.0), default=(None, {})
        )
        mark = "*" if version.tag == champion else " "
        lines.append(
            f"{mark} {version.tag}  val {metric} {val:.4f}  test {metric} {test:.4f}"
            f"  (best baseline: {best[0]} {best[1].get(metric, float('nan')):.4f})"
        )
    for decision in registry.decisions(settings):
        if decision["event"] == "gate":
            verdict = "promoted" if decision["promoted"] else "REJECTED"
            lines.append(f"  gate: {decision['challenger']} {verdict}: {decision['reason']}")
    lines.append(f"  champion now: {champion}")
    return "\n".join(lines)


def _interval_of(run: dict[str, Any]) -> str:
    conf = run.get("conf") or {}
    if conf.get("interval_start"):
        return f"[{conf['interval_start']}, {conf['interval_end']})"
    start, end = run.get("data_interval_start") or "", run.get("data_interval_end") or ""
    return f"[{start[:10]}, {end[:10]})" if start else ""


def render_runs(result: DemoResult) -> str:
    """Runs per DAG with their states (the wall time by phase is :func:`render_timing`)."""
    lines = ["Airflow runs per DAG", "--------------------"]
    for dag_id, runs in (
        (INGEST_DAG, result.runs),
        (TRAIN_DAG, result.train_runs),
        (MONITOR_DAG, result.monitor_runs),
    ):
        states: dict[str, int] = {}
        for run in runs:
            states[run["state"]] = states.get(run["state"], 0) + 1
        lines.append(
            f"{dag_id}: {len(runs)} runs ({', '.join(f'{n} {s}' for s, n in sorted(states.items()))})"
        )
        for run in runs:
            lines.append(
                f"  {run['dag_run_id']:<58} {run.get('run_type', ''):<15} "
                f"{_interval_of(run):<26} {run['state']}"
            )
    lines.append(f"marts Asset events emitted: {result.asset_events}")
    return "\n".join(lines)


PHASES = {
    "replay": "1 land the training period",
    "airflow_start": "2 start Airflow",
    "bootstrap_run": "3 bootstrap run (history)",
    "backfill_runs": "4 backfill of the replay window",
    "train_runs_after_ingest": "5 first training runs",
    "later_period_loop": "6 serve + later intervals",
    "generator_wait": "  of which waiting for the generator",
    "dbt_docs": "  dbt docs",
}
"""Names of the demo's phases (keys of ``DemoResult.seconds``) in the timing table."""


def render_timing(result: DemoResult) -> str:
    """The demo's wall time per phase, with its share of the total, and the total last."""
    lines = ["Wall time by phase", "------------------"]
    total = result.seconds.get("total") or sum(result.seconds.values())
    # In PHASES order (a sub-phase under its phase), then any other key in the order it was timed.
    keys = [k for k in PHASES if k in result.seconds] + [
        k for k in result.seconds if k not in PHASES and k != "total"
    ]
    for key in keys:
        seconds = result.seconds[key]
        share = f"{seconds / total:>4.0%}" if total else ""
        lines.append(f"  {PHASES.get(key, key):<34} {format_elapsed(seconds):>8}  {share}")
    lines.append(f"  {'total':<34} {format_elapsed(total):>8}")
    return "\n".join(lines)


def timing_record(result: DemoResult, settings: Settings, load_at_start: tuple[float, ...]) -> dict[str, Any]:
    """What ``make bench-demo`` keeps of a run: phase times, the total, the machine and its load,
    and what the loop held (so runs with different contents are never compared as equals)."""
    import os
    import platform
    from datetime import UTC, datetime

    return {
        "benchmark": "demo",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "phases_seconds": {
            PHASES.get(key, key).strip(): round(seconds, 1)
            for key, seconds in result.seconds.items()
            if key != "total"
        },
        "total_seconds": round(result.seconds.get("total", 0.0), 1),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_average_at_start": list(load_at_start),
            "load_average_at_end": list(os.getloadavg()),
        },
        "contents": {
            "train_max_users": settings.train_max_users,
            "train_overrides": settings.train_overrides,
            "later_intervals_replayed": len(result.traffic),
            "training_runs": len(result.train_runs),
            "monitoring_runs": len(result.monitor_runs),
            # requests per endpoint per interval (``Traffic.as_dict``), summed over both
            "traffic_requests": sum(sum((t.get("requests") or {}).values()) for t in result.traffic),
            # What of issues 11-13 the run held: the generator's fine-tune and the bundles,
            # explanations and /ask answers of the showcase.
            "generator_finetune": {
                "run": result.generator.get("run_id"),
                "state": result.generator.get("state"),
                "promoted": (result.generator.get("decision") or {}).get("promoted"),
            }
            if result.generator
            else None,
            "showcase_lines": len(result.showcase),
            "serving_now": result.serving_now,
        },
    }


def _served_copy(settings: Settings, run_id: str) -> str | None:
    """The monitoring run's served-copy line (fallback and check-failure rates), if it kept one."""
    import json

    from ml.core.artifacts import safe_run_id
    from ml.monitoring.request_logs import copy_note

    path = settings.reports_dir / "monitoring" / safe_run_id(run_id) / "summary.json"
    try:
        summary = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None
    return copy_note(summary.get("copy")) if "copy" in summary else None


def render_monitoring(result: DemoResult, settings: Settings) -> str:
    """Drift per monitoring run, the decision taken, what served each interval, and the reports."""

    lines = ["Monitoring (monitor_drift) per interval", "---------------------------------------"]
    runs = monitoring_runs(settings)
    lines.append(
        f"  {'interval':<26} {'model':<38} {'data drift':>10} {'pred drift':>10} {'hit rate':>9}  action"
    )

    def pct(value: Any) -> str:
        return "-" if value is None or value != value else f"{float(value):.0%}"

    # Unpausing monitor_drift also runs it for the present interval, past the replayed data: no
    # data, nothing judged. Those runs are left out (and counted), so the table is the replay.
    replay_end = date.fromisoformat(settings.replay_later_end)
    replayed = [
        row
        for row in runs.itertuples(index=False)
        if date.fromisoformat(str(row.interval_start)[:10]) < replay_end
    ]
    for row in replayed:
        hit = (
            "-"
            if row.online_hit_rate is None or row.online_hit_rate != row.online_hit_rate
            else f"{row.online_hit_rate:.3f}"
        )
        lines.append(
            f"  [{str(row.interval_start)[:10]}, {str(row.interval_end)[:10]})   {row.model_version!s:<38} "
            f"{pct(row.data_drift_share):>10} {pct(row.prediction_drift_share):>10} {hit:>9}  {row.action}"
        )
        if row.action != "none":
            lines.append(f"      {row.reason}")
        copy = _served_copy(settings, str(row.run_id))
        if copy is not None:
            lines.append(f"      {copy}")
    if len(runs) > len(replayed):
        lines.append(
            f"  ({len(runs) - len(replayed)} scheduled run(s) for the present interval, after the "
            f"replayed data ({replay_end}), left out: no data to judge)"
        )
    if replayed and not any(row.action == "retrain" for row in replayed):
        lines.append("  no monitoring alarm triggered a retraining in the replayed intervals")
    for traffic in result.traffic:
        lines.append(
            f"  traffic {traffic['interval'][0]}: {traffic['users']} shoppers, {traffic['requests']}, "
            f"{traffic['errors']} errors, answered by {', '.join(traffic['models'])}"
        )
    lines.append(f"  serving now: {result.serving_now or '(not serving)'}")
    lines.append(f"  monitoring reports: {settings.reports_dir / 'monitoring'}/<run id>/ (HTML + JSON)")
    lines.append(
        f"  Evidently workspace: {settings.evidently_dir} "
        f"(browse: evidently ui --workspace {settings.evidently_dir})"
    )
    lines.append(f"  training run reports: {settings.work_dir / 'runs'}/<run id>/report/")
    return "\n".join(lines)
