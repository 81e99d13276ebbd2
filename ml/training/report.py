"""The run report saved with each model: a metrics table (JSON + Markdown) and plots (PNG).

People compare models by looking, so each training run leaves ``loss.png`` (training loss and
validation NDCG@10 per epoch) and ``comparison.png`` (our model against the baselines on every
ranking metric, same split) beside ``metrics.json`` and ``metrics.md``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

TABLE_METRICS = ("recall@5", "recall@10", "recall@20", "ndcg@5", "ndcg@10", "ndcg@20", "mrr", "coverage@10")
PLOT_METRICS = ("recall@10", "ndcg@10", "recall@20", "ndcg@20", "mrr")


def markdown_table(models: dict[str, dict[str, Any]], metrics: tuple[str, ...] = TABLE_METRICS) -> str:
    """One row per model, one column per metric (4 decimals), plus training seconds if known."""
    has_seconds = any("train_seconds" in m for m in models.values())
    header = ["model", *metrics] + (["train s"] if has_seconds else [])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, values in models.items():
        cells = [name] + [f"{values[m]:.4f}" if m in values else "–" for m in metrics]
        if has_seconds:
            seconds = values.get("train_seconds")
            cells.append(f"{seconds:.0f}" if seconds is not None else "–")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def training_section(training: dict[str, Any] | None) -> str:
    """Markdown: the fine-tuning level that ran and each phase's cost (empty without a record)."""
    if not training:
        return ""
    lines = [
        "",
        f"## Training: mode {training.get('mode')} ran {training.get('ran')}",
        "",
        "| phase | epochs / steps | seconds | validation NDCG@10 | kept | note |",
        "|---|---|---|---|---|---|",
    ]
    for phase in training.get("phases", []):
        if "steps" in phase:  # a step-budgeted phase (auto's LoRA) validates once, at its end
            amount = f"{phase.get('steps', 0)} steps"
            metric = phase.get("val_ndcg_after")
        else:
            amount = f"{phase.get('epochs', 0)} epochs"
            metric = phase.get("val_ndcg@10")
        value = f"{metric:.4f}" if isinstance(metric, float) else "–"
        kept = "yes" if phase.get("kept", True) else "no"
        lines.append(
            f"| {phase.get('mode')} | {amount} | {phase.get('seconds', 0.0):.1f} | {value} | {kept} "
            f"| {phase.get('reason', phase.get('stop_reason', ''))} |"
        )
    return "\n".join(lines) + "\n"


def _plot_history(history: list[dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, loss_axis = plt.subplots(figsize=(7, 4))
    loss_axis.plot(epochs, [h.get("loss", float("nan")) for h in history], "o-", color="tab:blue")
    loss_axis.set_xlabel("epoch")
    loss_axis.set_ylabel("training loss", color="tab:blue")
    validated = [h for h in history if "val_ndcg@10" in h]
    if validated:
        metric_axis = loss_axis.twinx()
        metric_axis.plot(
            [h["epoch"] for h in validated], [h["val_ndcg@10"] for h in validated], "s-", color="tab:orange"
        )
        metric_axis.set_ylabel("validation NDCG@10", color="tab:orange")
    loss_axis.set_title("Training loss and validation NDCG@10")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_comparison(models: dict[str, dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    metrics = [m for m in PLOT_METRICS if any(m in v for v in models.values())]
    x = np.arange(len(metrics))
    width = 0.8 / max(len(models), 1)
    fig, axis = plt.subplots(figsize=(8, 4))
    for i, (name, values) in enumerate(models.items()):
        axis.bar(x + i * width, [values.get(m, 0.0) for m in metrics], width, label=name)
    axis.set_xticks(x + width * (len(models) - 1) / 2, metrics)
    axis.set_ylabel("test score (full-catalog ranking)")
    axis.set_title("Our model vs baselines, same split")
    axis.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_run_report(
    out_dir: Path,
    *,
    models: dict[str, dict[str, Any]],
    history: list[dict[str, float]],
    extra: dict[str, Any] | None = None,
) -> dict[str, Path]:
    """Write ``metrics.json``, ``metrics.md``, ``loss.png`` and ``comparison.png`` into ``out_dir``.

    Args:
        out_dir: the run's report folder (created).
        models: test metrics per model name, ours first, e.g. ``{"shopflow": {...}, "popularity": {...}}``.
        history: per-epoch records from training (``epoch``, ``loss``, ``val_ndcg@10``...).
        extra: anything else to keep in the JSON (split, config, gate decision).

    Returns:
        The written files by kind.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out_dir / "metrics.json",
        "markdown": out_dir / "metrics.md",
        "loss_plot": out_dir / "loss.png",
        "comparison_plot": out_dir / "comparison.png",
    }
    paths["json"].write_text(json.dumps({"models": models, "history": history, **(extra or {})}, indent=2))
    paths["markdown"].write_text(
        "# Run report\n\nTest split, full-catalog ranking.\n\n"
        + markdown_table(models)
        + "\n"
        + training_section((extra or {}).get("training"))
    )
    if history:
        _plot_history(history, paths["loss_plot"])
    else:
        del paths["loss_plot"]
    _plot_comparison(models, paths["comparison_plot"])
    return paths
