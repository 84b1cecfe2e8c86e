"""The probe report: the table of test scores (markdown) and its bar plot."""

from __future__ import annotations

import math
from pathlib import Path

import ml_collections
import numpy as np

from myna_rpe_jax.data.datasets import TaskSpec, dataset_tasks
from myna_rpe_jax.data.keys import KEY_NAMES

DATASET_LABELS = {
    "gtzan": "GTZAN",
    "giantsteps_key": "GiantSteps",
    "emomusic": "EmoMusic",
    "mtg_jamendo": "MTG-Jamendo",
    "demo": "Demo",
}


METRIC_LABELS = {
    "accuracy": "Acc",
    "mirex": "MIREX",
    "r2": "R²",
    "roc_auc": "ROC-AUC",
    "pr_auc": "PR-AUC",
}


def task_metrics(spec: TaskSpec) -> tuple[str, ...]:
    """The test metrics a task reports (as keys of run_probe's "metrics")."""
    if spec.kind == "multiclass":
        return ("accuracy", "mirex") if spec.class_names == KEY_NAMES else ("accuracy",)
    return ("r2",) if spec.kind == "regression" else ("roc_auc", "pr_auc")


def table_columns(names: list[str]) -> list[tuple[str, str, str, str]]:
    """(column title, dataset, task, metric) for every metric of every task of `names`."""
    columns = []
    for name in names:
        tasks = dataset_tasks(name)
        for task, spec in tasks.items():
            prefix = DATASET_LABELS[name] + (f" {task}" if len(tasks) > 1 else "")
            for metric in task_metrics(spec):
                columns.append((f"{prefix} {METRIC_LABELS[metric]}", name, task, metric))
    return columns


def model_label(config: ml_collections.ConfigDict) -> str:
    return f"{'+'.join(config.model.posemb)} {config.model.variant}"


def table_rows(results: dict) -> dict[str, dict[str, float | None]]:
    """Row label ("<model> (<mode>)") -> column title -> test score in percent (None = n/a)."""
    columns = table_columns(list(results["tasks"]))
    rows = {}
    for mode in results["modes"]:
        row = {}
        for title, name, task, metric in columns:
            probe = results["tasks"][name].get("modes", {}).get(mode, {}).get("probes", {})
            value = probe.get(task, {}).get("metrics", {}).get(metric)
            row[title] = None if value is None else round(100 * value, 2)
        rows[f"{results['model']} ({mode})"] = row
    return rows


def not_probed(results: dict) -> dict[str, dict]:
    """The tasks that could not be probed (their dataset missing): name -> entry."""
    return {name: e for name, e in results["tasks"].items() if e["status"] != "ok"}


def write_markdown(path: Path, results: dict) -> None:
    rows = results["table"]
    titles = list(next(iter(rows.values())))
    cell = lambda v: "–" if v is None else f"{v:.2f}"
    lines = [
        f"# Linear probes: {results['model']}, step {results['step']}",
        "",
        f"Checkpoint: `{results['workdir']}`. Test scores in percent; regularisation chosen on"
        " valid, features standardised with train statistics.",
        "",
        "| Model | " + " | ".join(titles) + " |",
        "|---" * (len(titles) + 1) + "|",
        *(
            f"| {label} | " + " | ".join(cell(v) for v in row.values()) + " |"
            for label, row in rows.items()
        ),
        "",
    ]
    missing = not_probed(results)
    if missing:
        lines += ["## Not probed", ""]
        lines += [
            f"- {name}: **missing** ({entry['reason']}). Build: `{entry['build_command']}`"
            for name, entry in missing.items()
        ]
        lines.append("")
    lines += ["Chosen regularisation (param = value, best valid score):", ""]
    for name, entry in results["tasks"].items():
        if entry["status"] != "ok":
            continue
        for mode, part in entry["modes"].items():
            for task, probe in part["probes"].items():
                if probe["status"] != "ok":
                    lines.append(f"- {name}/{task} ({mode}): failed: {probe['reason']}")
                    continue
                sel = probe["selection"]
                lines.append(
                    f"- {name}/{task} ({mode}): {sel['param']} = {sel['chosen']:.3g}"
                    f" ({sel['metric']} {max(sel['valid_scores']):.4f})"
                )
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_plot(path: Path, results: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["table"]
    titles = list(next(iter(rows.values())))
    width = 0.8 / len(rows)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(titles) + 2), 4.5))
    positions = np.arange(len(titles))
    for i, (label, row) in enumerate(rows.items()):
        values = [math.nan if v is None else v for v in row.values()]
        ax.bar(positions + (i - (len(rows) - 1) / 2) * width, values, width, label=label)
    ax.set_xticks(positions, titles, rotation=30, ha="right")
    ax.set_ylabel("test score (%)")
    ax.set_title(f"Linear probes, step {results['step']}")
    ax.axhline(0, color="black", linewidth=0.5)
    for x, title in zip(positions, titles, strict=True):
        if all(row[title] is None for row in rows.values()):
            ax.text(x, 0, "no data", ha="center", va="bottom", rotation=90, color="gray")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
