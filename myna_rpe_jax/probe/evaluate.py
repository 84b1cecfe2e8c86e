"""Linear probes of a trained checkpoint on the downstream benchmarks, full tracks vs chunks.

For every dataset and mode (`full`: whole tracks in one pass; `chunks`: Myna's averaged
training-length chunks) the train, valid and test splits are embedded once and cached in
OUT/embeddings/<dataset>-step<N>-<mode>.npz (reused by later runs of the same checkpoint), then
each of the dataset's tasks gets a linear probe (`tasks`: fit on train, regularisation
chosen on valid, test scored once). Writes OUT/results.json, OUT/results.md (a table like the
paper's) and OUT/results.png. A dataset that is not prepared is reported with the command that
builds it; the others still run. For `demo` without --data-dir, the run's own demo set is used
(built on first use, exactly as training builds it).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import ml_collections
import numpy as np

from myna_rpe_jax.data import locations
from myna_rpe_jax.data.datasets import dataset_tasks
from myna_rpe_jax.embed import embedder as embedder_lib
from myna_rpe_jax.embed.collection import dataset_embeddings, run_meta
from myna_rpe_jax.embed.file import Embeddings, load_npz, save_npz
from myna_rpe_jax.model import positional
from myna_rpe_jax.probe.report import model_label, table_rows, write_markdown, write_plot
from myna_rpe_jax.probe.tasks import REG_GRID, run_probe, standardize

log = logging.getLogger("myna_rpe_jax.probe")

BENCHMARKS = ("gtzan", "giantsteps_key", "emomusic", "mtg_jamendo")
PROBE_DATASETS = (*BENCHMARKS, "demo")
SPLITS = ("train", "valid", "test")


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
        return Path(data_dir) if data_dir else locations.data_root(config.data)
    if data_dir and locations.is_prepared("demo", Path(data_dir)):
        return Path(data_dir)
    if data_dir:
        log.info("demo is not prepared in %s: using the run's own demo set", data_dir)
    return locations.run_demo_dir(config.data, build=True)


def missing_reason(name: str, data_dir: Path) -> str | None:
    """Why dataset `name` cannot be probed from data_dir, or None when it can."""
    from myna_rpe_jax.data import datasets  # imports TensorFlow Datasets

    try:
        splits = datasets.available_splits(name, data_dir)
    except datasets.DatasetNotPreparedError:
        return f"not prepared in {data_dir}"
    lacking = [split for split in SPLITS if split not in splits]
    if lacking:
        return f"{name} in {data_dir} has splits {splits}, a probe needs {list(SPLITS)}"
    return None


def cached_embeddings(
    embedder: embedder_lib.Embedder,
    run: dict,
    name: str,
    data_dir: Path,
    mode: str,
    out_dir: Path,
    progress: bool,
) -> tuple[Embeddings, bool, Path]:
    """The embeddings of every split of `name` in `mode`: from OUT's cache when it holds those
    of this checkpoint and data, else computed and cached. Returns (embeddings, reused, path)."""
    path = out_dir / "embeddings" / f"{name}-step{run['step']}-{mode}.npz"
    expected = {
        "workdir": run["workdir"],
        "step": run["step"],
        "mode": mode,
        "dataset": name,
        "data_dir": str(data_dir.absolute()),
        "mel": dataclasses.asdict(embedder.mel_config),  # the run's features (checked on data)
    }
    if path.exists():
        cached = load_npz(path)
        stale = {k: cached.meta.get(k) for k, v in expected.items() if cached.meta.get(k) != v}
        if not stale:
            log.info("reusing cached embeddings %s", path)
            return cached, True, path
        log.info("recomputing %s: it was made with different settings %s", path, stale)
    result = dataset_embeddings(embedder, name, data_dir, mode, SPLITS, progress=progress)
    result.meta.update(run_meta(run["workdir"], run["step"], mode, run["config"], embedder))
    save_npz(path, result)
    return result, False, path


def probe_embeddings(name: str, result: Embeddings) -> dict[str, dict]:
    """Every task of dataset `name` probed on one embedding set -> task -> result."""
    split = np.asarray(result.split)
    features = standardize({s: result.embeddings[split == s] for s in SPLITS})
    probes = {}
    for task, spec in dataset_tasks(name).items():
        labels = result.labels[spec.label_key]
        data = {s: (features[s], labels[split == s]) for s in SPLITS}
        try:
            probes[task] = {"status": "ok", **run_probe(spec, data)}
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


def run(
    workdir: str,
    tasks: list[str],
    out_dir: str | Path,
    data_dir: str | None = None,
    step: int | None = None,
    modes=embedder_lib.MODES,
    max_tokens: int = embedder_lib.DEFAULT_MAX_TOKENS,
    progress: bool = True,
    max_padding: float = embedder_lib.DEFAULT_MAX_PADDING,
) -> dict:
    """Probes checkpoint `step` (latest if None) of `workdir` on `tasks`; writes the reports
    to out_dir and returns the results dict (the content of results.json)."""
    unknown = [name for name in tasks if name not in PROBE_DATASETS]
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; choose from {', '.join(PROBE_DATASETS)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    embedder, config, step = embedder_lib.load_embedder(workdir, step, max_tokens, max_padding)
    skipped_modes = {}
    if "full" in modes and not positional.extrapolates(config.model.posemb):
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
        "reg_grid": list(REG_GRID),
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
