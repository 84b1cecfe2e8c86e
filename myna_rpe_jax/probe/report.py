"""The probe report: the table of test scores (markdown) and its bar plot."""

from __future__ import annotations

import math
from pathlib import Path

import ml_collections
import numpy as np

from myna_rpe_jax import files
from myna_rpe_jax.data.datasets import dataset_tasks
from myna_rpe_jax.probe.tasks import task_metrics

DATASET_LABELS = {
    "gtzan": "GTZAN",
    "giantsteps_key": "GiantSteps",
    "emomusic": "EmoMusic",
    "mtg_jamendo": "MTG-Jamendo",
    "demo": "Demo",
}


BASELINES_NOTE = (
    "Baselines: *random init* is the same architecture with the parameters training starts"
    " from (same config and seed), embedded the same way; *log-mel stats* (mean and std of"
    " every mel band over time), *MFCC stats* (mean and std of 20 MFCCs) and *chroma* (the"
    " mel bands folded onto 12 pitch classes) are hand-made features of the same log-mels."
)

METRIC_LABELS = {
    "accuracy": "Acc",
    "mirex": "MIREX",
    "r2": "R²",
    "roc_auc": "ROC-AUC",
    "pr_auc": "PR-AUC",
}


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
    scaled = ", length-scaled" if config.model.get("length_scaling") else ""
    return f"{'+'.join(config.model.posemb)} {config.model.variant}{scaled}"


def _row_parts(results: dict) -> dict[str, tuple[str, str]]:
    """Row label -> (where in a dataset entry, key): the model's modes, then the baselines."""
    parts = {f"{results['model']} ({mode})": ("modes", mode) for mode in results["modes"]}
    return parts | {label: ("baselines", label) for label in results.get("baselines", [])}


Table = dict[str, dict[str, float | None]]


def table_rows(results: dict) -> tuple[Table, dict[str, dict[str, list[float] | None]]]:
    """The test scores and their bootstrap 95% intervals, both in percent, of every row
    ("<model> (<mode>)", then the baselines: "random init (<mode>)", the feature sets):
    (row -> column title -> score or None = n/a, row -> column title -> [low, high] or None).
    """
    columns = table_columns(list(results["tasks"]))
    rows, intervals = {}, {}
    percent = lambda v: None if v is None else round(100 * v, 2)
    for label, (where, key) in _row_parts(results).items():
        rows[label], intervals[label] = {}, {}
        for title, name, task, metric in columns:
            part = results["tasks"][name].get(where, {}).get(key, {})
            probe = part.get("probes", {}).get(task, {})
            rows[label][title] = percent(probe.get("metrics", {}).get(metric))
            interval = probe.get("intervals", {}).get(metric)
            intervals[label][title] = None if interval is None else [percent(v) for v in interval]
    return rows, intervals


def format_cell(value: float | None, interval: list[float] | None) -> str:
    """A table cell: "71.4 [63.1, 79.6]" (score and 95% interval, in percent), "–" for n/a."""
    if value is None:
        return "–"
    return f"{value:.1f}" + ("" if interval is None else f" [{interval[0]:.1f}, {interval[1]:.1f}]")


def not_probed(results: dict) -> dict[str, dict]:
    """The tasks that could not be probed (their dataset missing): name -> entry."""
    return {name: e for name, e in results["tasks"].items() if e["status"] != "ok"}


def write_markdown(path: Path, results: dict) -> None:
    files.write_text(path, markdown(results))


def markdown(results: dict) -> str:
    """results.md: the table of test scores with intervals, what was not probed, and the
    regularisation each probe chose."""
    rows, intervals = results["table"], results["intervals"]
    titles = list(next(iter(rows.values())))
    lines = [
        f"# Linear probes: {results['model']}, step {results['step']}",
        "",
        f"Checkpoint: `{results['workdir']}`. Test scores in percent, with a bootstrap 95%"
        " interval over the test tracks in brackets; regularisation chosen on valid, features"
        " standardised with train statistics.",
        "",
        "| Model | " + " | ".join(titles) + " |",
        "|---" * (len(titles) + 1) + "|",
        *(
            f"| {label} | "
            + " | ".join(format_cell(row[t], intervals[label][t]) for t in titles)
            + " |"
            for label, row in rows.items()
        ),
        "",
    ]
    if results.get("baselines"):
        lines += [BASELINES_NOTE, ""]
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
        for label, (where, key) in _row_parts(results).items():
            for task, probe in entry[where][key]["probes"].items():
                if probe["status"] != "ok":
                    lines.append(f"- {name}/{task} ({label}): failed: {probe['reason']}")
                    continue
                sel = probe["selection"]
                lines.append(
                    f"- {name}/{task} ({label}): {sel['param']} = {sel['chosen']:.3g}"
                    f" ({sel['metric']} {max(sel['valid_scores']):.4f})"
                )
    return "\n".join(lines) + "\n"


def write_plot(path: Path, results: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, intervals = results["table"], results["intervals"]
    titles = list(next(iter(rows.values())))
    width = 0.8 / len(rows)
    fig, ax = plt.subplots(figsize=(max(6.0, (0.6 + 0.2 * len(rows)) * len(titles) + 2), 4.5))
    positions = np.arange(len(titles))
    for i, (label, row) in enumerate(rows.items()):
        values = np.array([math.nan if row[t] is None else row[t] for t in titles])
        bounds = [intervals[label][t] or [math.nan, math.nan] for t in titles]
        low, high = np.array(bounds, dtype=float).T
        errors = np.nan_to_num(np.stack([values - low, high - values]))  # 0 where n/a
        x = positions + (i - (len(rows) - 1) / 2) * width
        ax.bar(x, values, width, yerr=errors, capsize=2, label=label)
    ax.set_xticks(positions, titles, rotation=30, ha="right")
    # R^2 (and its bootstrap low end on a few test tracks) can be far below 0: the axis
    # stops at -100% so that the other scores stay readable; bars and error bars below it
    # are cut there.
    lows = [v for row in rows.values() for v in row.values() if v is not None]
    lows += [iv[0] for row in intervals.values() for iv in row.values() if iv is not None]
    ax.set_ylim(max(-100.0, min([0.0, *lows]) - 5.0), 105.0)
    ax.set_ylabel("test score (%), bootstrap 95% interval")
    ax.set_title(f"Linear probes, step {results['step']}")
    ax.axhline(0, color="black", linewidth=0.5)
    for x, title in zip(positions, titles, strict=True):
        if all(row[title] is None for row in rows.values()):
            ax.text(x, 0, "no data", ha="center", va="bottom", rotation=90, color="gray")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    with files.atomic_path(path) as partial:
        fig.savefig(partial, dpi=120)
    plt.close(fig)
