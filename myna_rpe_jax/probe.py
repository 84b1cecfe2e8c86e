"""Linear probes of a trained checkpoint on the downstream benchmarks, full tracks vs chunks.

    python -m myna_rpe_jax.probe --workdir=runs/alibi2d \
        --tasks gtzan,giantsteps_key,emomusic,mtg_jamendo --data-dir ~/tfds --output probes/alibi2d
    python -m myna_rpe_jax.probe --workdir=runs/tiny --tasks demo --output probes/tiny

For every dataset and mode (`full`: whole tracks in one pass; `chunks`: Myna's averaged
training-length chunks) the train, valid and test splits are embedded once and cached in
OUT/embeddings/<dataset>-step<N>-<mode>.npz (reused by later runs of the same checkpoint), then
each of the dataset's tasks gets a linear probe (`probe_tasks`: fit on train, regularisation
chosen on valid, test scored once). Writes OUT/results.json, OUT/results.md (a table like the
paper's) and OUT/results.png. A dataset that is not prepared is reported with the command that
builds it; the others still run. For `demo` without --data-dir, the run's own demo set is used
(built on first use, exactly as training builds it).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from pathlib import Path

import ml_collections
import numpy as np

from myna_rpe_jax import embed, embedding, model, probe_tasks, training_data
from myna_rpe_jax.datasets import TaskSpec, dataset_tasks
from myna_rpe_jax.keys import KEY_NAMES

log = logging.getLogger("myna_rpe_jax.probe")

BENCHMARKS = ("gtzan", "giantsteps_key", "emomusic", "mtg_jamendo")
PROBE_DATASETS = (*BENCHMARKS, "demo")
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
SPLITS = ("train", "valid", "test")


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


def build_command(name: str, data_dir: Path) -> str:
    if name == "demo":
        return (
            "python -m data_prep.make_demo --out DEMO_AUDIO && python -m data_prep.build"
            f" --dataset demo --source DEMO_AUDIO --data-dir {data_dir}"
        )
    return (
        f"python -m data_prep.build --dataset {name} --source <your {name} folder>"
        f" --data-dir {data_dir}"
    )


def resolve_data_dir(name: str, data_dir: str | None, config: ml_collections.ConfigDict) -> Path:
    """Where dataset `name` is read from: --data-dir, else the run's data root.

    `demo` is read from --data-dir when it is prepared there, else it is the run's own demo
    set (built on first use, as training does).
    """
    if name != "demo":
        return Path(data_dir) if data_dir else training_data.data_root(config.data)
    if data_dir and training_data.is_prepared("demo", Path(data_dir)):
        return Path(data_dir)
    if data_dir:
        log.info("demo is not prepared in %s: using the run's own demo set", data_dir)
    return training_data.run_demo_dir(config.data, build=True)


def missing_reason(name: str, data_dir: Path) -> str | None:
    """Why dataset `name` cannot be probed from data_dir, or None when it can."""
    from myna_rpe_jax import datasets  # imports TensorFlow Datasets

    try:
        splits = datasets.available_splits(name, data_dir)
    except datasets.DatasetNotPreparedError:
        return f"not prepared in {data_dir}"
    lacking = [split for split in SPLITS if split not in splits]
    if lacking:
        return f"{name} in {data_dir} has splits {splits}, a probe needs {list(SPLITS)}"
    return None


def cached_embeddings(
    embedder: embedding.Embedder,
    run: dict,
    name: str,
    data_dir: Path,
    mode: str,
    out_dir: Path,
    progress: bool,
) -> tuple[embed.Embeddings, bool, Path]:
    """The embeddings of every split of `name` in `mode`: from OUT's cache when it holds those
    of this checkpoint and data, else computed and cached. Returns (embeddings, reused, path)."""
    path = out_dir / "embeddings" / f"{name}-step{run['step']}-{mode}.npz"
    expected = {
        "workdir": run["workdir"],
        "step": run["step"],
        "mode": mode,
        "dataset": name,
        "data_dir": str(data_dir.absolute()),
    }
    if path.exists():
        cached = embed.load_npz(path)
        stale = {k: cached.meta.get(k) for k, v in expected.items() if cached.meta.get(k) != v}
        if not stale:
            log.info("reusing cached embeddings %s", path)
            return cached, True, path
        log.info("recomputing %s: it was made with different settings %s", path, stale)
    result = embed.dataset_embeddings(embedder, name, data_dir, mode, SPLITS, progress=progress)
    result.meta.update(embed.run_meta(run["workdir"], run["step"], mode, run["config"], embedder))
    embed.save_npz(path, result)
    return result, False, path


def probe_embeddings(name: str, result: embed.Embeddings) -> dict[str, dict]:
    """Every task of dataset `name` probed on one embedding set -> task -> result."""
    split = np.asarray(result.split)
    features = probe_tasks.standardize({s: result.embeddings[split == s] for s in SPLITS})
    probes = {}
    for task, spec in dataset_tasks(name).items():
        labels = result.labels[spec.label_key]
        data = {s: (features[s], labels[split == s]) for s in SPLITS}
        try:
            probes[task] = {"status": "ok", **probe_tasks.run_probe(spec, data)}
        except ValueError as err:  # e.g. no tag with both positives and negatives in valid
            log.warning("%s/%s: probe failed: %s", name, task, err)
            probes[task] = {"status": "failed", "reason": str(err)}
            continue
        scores = {k: v for k, v in probes[task]["metrics"].items() if isinstance(v, float)}
        shown = ", ".join(f"{metric} {value:.4f}" for metric, value in scores.items())
        log.info("%s/%s (%s): test %s", name, task, result.meta["mode"], shown)
    return probes


def probe_dataset(
    embedder, run: dict, name: str, data_dir: Path, modes, out_dir: Path, progress: bool
) -> dict:
    """Results of dataset `name` in every mode, or its "missing" record."""
    reason = missing_reason(name, data_dir)
    if reason is not None:
        command = build_command(name, data_dir)
        log.warning("%s: missing (%s). Build it with:\n  %s", name, reason, command)
        return {"status": "missing", "reason": reason, "build_command": command}
    entry = {"status": "ok", "data_dir": str(data_dir.absolute()), "modes": {}}
    for mode in modes:
        result, reused, path = cached_embeddings(
            embedder, run, name, data_dir, mode, out_dir, progress
        )
        entry["modes"][mode] = {
            "embeddings": str(path),
            "cached": reused,
            "dim": int(result.embeddings.shape[1]),
            "probes": probe_embeddings(name, result),
        }
    return entry


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
        "Chosen regularisation (param = value, best valid score):",
        "",
    ]
    for name, entry in results["tasks"].items():
        if entry["status"] != "ok":
            lines.append(
                f"- {name}: **missing** ({entry['reason']}). Build: `{entry['build_command']}`"
            )
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


def run(
    workdir: str,
    tasks: list[str],
    out_dir: str | Path,
    data_dir: str | None = None,
    step: int | None = None,
    modes=embedding.MODES,
    max_tokens: int = embedding.DEFAULT_MAX_TOKENS,
    progress: bool = True,
    max_padding: float = embedding.DEFAULT_MAX_PADDING,
) -> dict:
    """Probes checkpoint `step` (latest if None) of `workdir` on `tasks`; writes the reports
    to out_dir and returns the results dict (the content of results.json)."""
    unknown = [name for name in tasks if name not in PROBE_DATASETS]
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; choose from {', '.join(PROBE_DATASETS)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    embedder, config, step = embedding.load_embedder(workdir, step, max_tokens, max_padding)
    skipped_modes = {}
    if "full" in modes and not model.extrapolates(config.model.posemb):
        skipped_modes["full"] = (
            f"posemb {tuple(config.model.posemb)} has a learned absolute table of"
            f" {config.model.max_time_patches} time patches: it cannot embed whole tracks"
        )
        log.warning("skipping mode full: %s; probing chunks only", skipped_modes["full"])
        modes = [mode for mode in modes if mode != "full"]
        if not modes:
            raise ValueError(f"{skipped_modes['full']}; probe it with --modes chunks")
    run_info = {"workdir": str(Path(workdir).absolute()), "step": step, "config": config}
    results = {
        "workdir": run_info["workdir"],
        "step": step,
        "model": model_label(config),
        "config": json.loads(config.to_json_best_effort()),
        "modes": list(modes),
        "skipped_modes": skipped_modes,
        "reg_grid": list(probe_tasks.REG_GRID),
        "tasks": {},
    }
    for name in tasks:
        where = resolve_data_dir(name, data_dir, config)
        results["tasks"][name] = probe_dataset(
            embedder, run_info, name, where, modes, out_dir, progress
        )
    results["table"] = table_rows(results)
    (out_dir / "results.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    write_markdown(out_dir / "results.md", results)
    write_plot(out_dir / "results.png", results)
    return results


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m myna_rpe_jax.probe",
        description="Linear probes of a trained checkpoint (full tracks and chunks).",
    )
    parser.add_argument("--workdir", required=True, help="training workdir")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default latest)")
    parser.add_argument(
        "--tasks",
        default=",".join(BENCHMARKS),
        help=f"comma-separated datasets from {', '.join(PROBE_DATASETS)} (default: benchmarks)",
    )
    parser.add_argument(
        "--data-dir",
        default=None,
        help="where the datasets were prepared (default: the run's data root; for demo, the"
        " run's demo set)",
    )
    parser.add_argument("--output", required=True, help="output folder")
    parser.add_argument(
        "--modes", default=",".join(embedding.MODES), help="comma-separated: full, chunks"
    )
    embed.add_embedder_flags(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    modes = [mode for mode in args.modes.split(",") if mode]
    if not modes or any(mode not in embedding.MODES for mode in modes):
        _parser().error(f"--modes must list some of {embedding.MODES}, got {args.modes!r}")
    embed.console_logging()
    try:
        run(
            args.workdir,
            [name for name in args.tasks.split(",") if name],
            args.output,
            args.data_dir,
            args.step,
            modes,
            args.max_tokens,
            progress=not args.no_progress,
            max_padding=args.max_padding,
        )
    except (FileNotFoundError, ValueError) as err:  # no workdir / checkpoint, unknown task
        log.error("error: %s", err)
        return 1
    out = Path(args.output)
    log.info("\n%s", (out / "results.md").read_text(encoding="utf-8"))
    log.info("wrote %s, %s, %s", out / "results.json", out / "results.md", out / "results.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
