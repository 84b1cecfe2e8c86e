"""Linear probes of a trained checkpoint on the downstream benchmarks, full tracks vs chunks.

For every dataset and mode (`full`: whole tracks in one pass; `chunks`: Myna's averaged
training-length chunks) the train, valid and test splits are embedded once and cached in
OUT/embeddings/<dataset>-step<N>-<params>-<mode>.npz (reused only by later runs of the same
checkpoint's parameters, model settings and prepared data files: `embed/cache.py`; a damaged
file is made again), then each of the dataset's tasks gets a linear probe (`tasks`: fit on
train, regularisation chosen on valid, test scored once). Every test score gets a bootstrap
95% interval over the test tracks (`bootstrap.bootstrap_intervals` on the fixed
predictions). Beside the encoder's rows, `baseline_kinds` adds the same probes on baselines
(`baselines`): the architecture at random initialisation in every mode
(OUT/embeddings/<dataset>-random-seed<S>-<model>-<mode>.npz) and hand-made features of the log-mels
(OUT/embeddings/<dataset>-features.npz), cached alike. Writes OUT/results.json,
OUT/results.md (a table like the paper's) and OUT/results.png. A dataset that is not
prepared is reported with the command that builds it; the others still run. For `demo`
without --data-dir, the run's own demo set is used (built on first use, exactly as training
builds it).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import ml_collections
import numpy as np

from myna_rpe_jax import files
from myna_rpe_jax.data import locations
from myna_rpe_jax.data.datasets import common as datasets_common
from myna_rpe_jax.data.datasets import dataset_tasks
from myna_rpe_jax.data.lock import build_lock
from myna_rpe_jax.embed import cache
from myna_rpe_jax.embed import embedder as embedder_lib
from myna_rpe_jax.embed.collection import dataset_embeddings, run_meta
from myna_rpe_jax.embed.file import Embeddings
from myna_rpe_jax.model import positional
from myna_rpe_jax.probe import baselines, bootstrap
from myna_rpe_jax.probe.report import (
    model_label,
    not_probed,
    table_rows,
    write_markdown,
    write_plot,
)
from myna_rpe_jax.probe.tasks import REG_GRID, nonfinite_problem, run_probe, standardize

log = logging.getLogger("myna_rpe_jax.probe")

BENCHMARKS = ("gtzan", "giantsteps_key", "emomusic", "mtg_jamendo")
PROBE_DATASETS = (*BENCHMARKS, "demo")
BASELINES = ("random", "features")
SPLITS = ("train", "valid", "test")


def build_command(name: str, data_dir: Path, flags: str = "") -> str:
    if name == "demo":
        return (
            "python -m data_prep.make_demo --out DEMO_AUDIO && python -m data_prep.build"
            f" --dataset demo --source DEMO_AUDIO --data-dir {data_dir}{' ' if flags else ''}"
            f"{flags}"
        )
    return datasets_common.build_command(name, data_dir, flags)


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
    if not data_dir.exists():  # a mistyped --data-dir, rather than a dataset left to build
        return f"the folder {data_dir} does not exist"
    if not data_dir.is_dir():
        return f"{data_dir} is a file, not a folder of prepared datasets"
    from myna_rpe_jax.data import datasets  # imports TensorFlow Datasets

    try:
        splits = datasets.available_splits(name, data_dir)
    except datasets.DatasetNotPreparedError:
        return f"not prepared in {data_dir}"
    lacking = [split for split in SPLITS if split not in splits]
    if lacking:
        return f"{name} in {data_dir} has splits {splits}, a probe needs {list(SPLITS)}"
    return None


def _data_meta(embedder, name: str, data_dir: Path) -> dict:
    return {
        "dataset": name,
        "data_dir": str(data_dir.absolute()),
        "data_files": cache.prepared_files_digest(name, data_dir),
        "mel": dataclasses.asdict(embedder.mel_config),  # the run's features (checked on data)
    }


def mode_meta(embedder: embedder_lib.Embedder, mode: str) -> dict:
    """What besides the checkpoint decides an embedding set: the mode and its settings."""
    meta = {"mode": mode, "length_scaling": bool(embedder.encoder.length_scaling)}
    if mode == "chunks":
        meta["chunk_frames"] = embedder.chunk_frames
    if mode == "patchout":
        meta["patchout_passes"] = embedder.patchout_passes
        # Caches made before the passes drew real patches alone (by coordinates) lack it.
        meta["patchout_draw"] = "real patches"
    return meta


def mode_tag(embedder: embedder_lib.Embedder, mode: str) -> str:
    """The mode as cache file names spell it: "-ls" marks length scaling."""
    return mode + ("-ls" if embedder.encoder.length_scaling else "")


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
    of this checkpoint's parameters (run["params"], `params_digest`), model settings
    (`embedding_model_fields`) and prepared data files, else computed and cached. Returns
    (embeddings, reused, path)."""
    # The parameters' digest in the name: runs probed into one OUT keep a file each.
    stem = f"{name}-step{run['step']}-{run['params'][:8]}-{mode_tag(embedder, mode)}"
    path = out_dir / "embeddings" / f"{stem}.npz"
    expected = {
        "workdir": run["workdir"],
        "step": run["step"],
        "params": run["params"],
        "model": cache.embedding_model_fields(run["config"].model),
        **mode_meta(embedder, mode),
        **_data_meta(embedder, name, data_dir),
    }

    def compute() -> Embeddings:
        result = dataset_embeddings(embedder, name, data_dir, mode, SPLITS, progress=progress)
        result.meta.update(run_meta(run["workdir"], run["step"], mode, run["config"], embedder))
        result.meta.update(expected)
        return result

    result, reused = cache.cached(path, expected, compute)
    return result, reused, path


def random_init_embeddings(
    embedder: embedder_lib.Embedder,
    run: dict,
    name: str,
    data_dir: Path,
    mode: str,
    out_dir: Path,
    progress: bool,
) -> tuple[Embeddings, bool, Path]:
    """As `cached_embeddings`, for the run's architecture at its initial parameters
    (`baselines.random_init_embedder`: `run["random_embedder"]`, made on first use)."""
    config = run["config"]
    model = cache.embedding_model_fields(config.model)
    # The architecture's digest in the name: runs probed into one OUT keep a file each.
    tag = f"{cache.json_digest(model)}-{mode_tag(embedder, mode)}"
    stem = f"{name}-random-seed{config.seed}-{tag}"
    path = out_dir / "embeddings" / f"{stem}.npz"
    expected = {
        "baseline": baselines.RANDOM_INIT,
        "seed": config.seed,
        **mode_meta(embedder, mode),
        "model": model,
        **_data_meta(embedder, name, data_dir),
    }

    def compute() -> Embeddings:
        if "random_embedder" not in run:
            run["random_embedder"] = baselines.random_init_embedder(embedder, config)
        log.info("%s: embedding with the random-init encoder (%s, one more pass)", name, mode)
        random = run["random_embedder"]
        result = dataset_embeddings(random, name, data_dir, mode, SPLITS, progress=progress)
        result.meta.update(expected)
        return result

    result, reused = cache.cached(path, expected, compute)
    return result, reused, path


def feature_embeddings(
    embedder: embedder_lib.Embedder, name: str, data_dir: Path, out_dir: Path, progress: bool
) -> tuple[Embeddings, bool, Path]:
    """Every hand-made feature set of every track of `name` (`baselines.track_features`),
    cached in OUT/embeddings/<name>-features.npz. Returns (features, reused, path)."""
    path = out_dir / "embeddings" / f"{name}-features.npz"
    slices = baselines.feature_slices(embedder.mel_config.n_mels)
    expected = {
        "baseline": "features",
        "feature_slices": {k: list(v) for k, v in slices.items()},
        **_data_meta(embedder, name, data_dir),
    }

    def compute() -> Embeddings:
        log.info("%s: computing the hand-made features from the log-mels", name)
        features = baselines.FeatureExtractor(embedder.mel_config, embedder.mel_source)
        result = dataset_embeddings(features, name, data_dir, "features", SPLITS, progress)
        result.meta.update(expected)
        return result

    result, reused = cache.cached(path, expected, compute)
    return result, reused, path


def probe_embeddings(
    name: str,
    result: Embeddings,
    label: str,
    columns: tuple[int, int] | None = None,
    intervals: bool = True,
) -> dict[str, dict]:
    """Every task of dataset `name` probed on one embedding set (its `columns` [start, stop)
    only, when given) -> task -> result, with bootstrap intervals (unless `intervals` is
    False: then "intervals" is {}). label names it in the log."""
    split = np.asarray(result.split)
    embeddings = result.embeddings if columns is None else result.embeddings[:, slice(*columns)]
    raw = {s: embeddings[split == s] for s in SPLITS}
    if problem := nonfinite_problem(raw):  # before standardising spreads it over every row
        log.warning("%s (%s): probes failed: %s", name, label, problem)
        return {task: {"status": "failed", "reason": problem} for task in dataset_tasks(name)}
    features = standardize(raw)
    probes = {}
    for task, spec in dataset_tasks(name).items():
        labels = result.labels[spec.label_key]
        data = {s: (features[s], labels[split == s]) for s in SPLITS}
        try:
            probe = run_probe(spec, data)
            found = bootstrap.score_intervals(probe) if intervals else {}
            probes[task] = {"status": "ok", **probe, "intervals": found}
        except ValueError as err:  # e.g. no tag with both positives and negatives in valid
            log.warning("%s/%s: probe failed: %s", name, task, err)
            probes[task] = {"status": "failed", "reason": str(err)}
            continue
        del probes[task]["test_outputs"]  # arrays: results.json keeps the scores only
        scores = {k: v for k, v in probes[task]["metrics"].items() if isinstance(v, float)}
        shown = ", ".join(
            f"{metric} {value:.4f}" + (f" [{iv[0]:.4f}, {iv[1]:.4f}]" if iv else "")
            for metric, value in scores.items()
            for iv in [found.get(metric)]
        )
        log.info("%s/%s (%s): test %s", name, task, label, shown)
    return probes


def _part(result: Embeddings, reused: bool, path: Path, probes: dict) -> dict:
    return {
        "embeddings": str(path),
        "cached": reused,
        "dim": int(result.embeddings.shape[1]),
        "probes": probes,
    }


def probe_dataset(
    embedder,
    run: dict,
    name: str,
    data_dir: Path,
    modes,
    out_dir: Path,
    progress: bool,
    baseline_kinds: Sequence[str] = (),
    intervals: bool = True,
) -> dict:
    """Results of dataset `name` in every mode (entry["modes"]) and of the asked baselines
    (entry["baselines"]: row label -> the same record), or its "missing" record."""
    reason = missing_reason(name, data_dir)
    if reason is not None:
        # Prepared with a split missing: only a rebuild (from a fuller source) replaces it.
        prepared = data_dir.is_dir() and locations.is_prepared(name, data_dir)
        flags = "--overwrite" if prepared else ""
        command = build_command(name, data_dir, flags)
        log.warning("%s: missing (%s). Build it with:\n  %s", name, reason, command)
        return {"status": "missing", "reason": reason, "build_command": command}
    entry = {"status": "ok", "data_dir": str(data_dir.absolute()), "modes": {}, "baselines": {}}
    for mode in modes:
        got = cached_embeddings(embedder, run, name, data_dir, mode, out_dir, progress)
        entry["modes"][mode] = _part(*got, probe_embeddings(name, got[0], mode, None, intervals))
    if "random" in baseline_kinds:
        for mode in modes:
            got = random_init_embeddings(embedder, run, name, data_dir, mode, out_dir, progress)
            label = f"{baselines.RANDOM_INIT} ({mode})"
            probes = probe_embeddings(name, got[0], label, None, intervals)
            entry["baselines"][label] = _part(*got, probes)
    if "features" in baseline_kinds:
        got = feature_embeddings(embedder, name, data_dir, out_dir, progress)
        for label, columns in got[0].meta["feature_slices"].items():
            probes = probe_embeddings(name, got[0], label, tuple(columns), intervals)
            entry["baselines"][label] = {**_part(*got, probes), "dim": columns[1] - columns[0]}
    return entry


def baseline_rows(kinds: Sequence[str], modes: Sequence[str]) -> list[str]:
    """The table's baseline row labels, in order, for baseline kinds ("random", "features")."""
    rows = [f"{baselines.RANDOM_INIT} ({mode})" for mode in modes] if "random" in kinds else []
    return rows + (list(baselines.FEATURE_SETS) if "features" in kinds else [])


def run(
    workdir: str,
    tasks: list[str],
    out_dir: str | Path,
    data_dir: str | None = None,
    step: int | None = None,
    modes=embedder_lib.DEFAULT_MODES,
    max_tokens: int = embedder_lib.DEFAULT_MAX_TOKENS,
    progress: bool = True,
    max_padding: float = embedder_lib.DEFAULT_MAX_PADDING,
    baseline_kinds: Sequence[str] = (),
    length_scaling: bool | None = None,
    intervals: bool = True,
    attention_kernel: str | None = None,
    alibi_tile_skip: bool | str | None = None,
) -> dict:
    """Probes checkpoint `step` (latest if None) of `workdir` on `tasks`; writes the reports
    to out_dir and returns the results dict (the content of results.json, and `written`:
    False when no task could be probed and out_dir kept the results.json it had).

    baseline_kinds: any of BASELINES: "random" adds the random-init rows (one more embedding
    pass per mode), "features" the hand-made feature rows (`baselines`). length_scaling, when
    given, replaces the run's config.model.length_scaling, attention_kernel and
    alibi_tile_skip its config.model fields of those names (the same embeddings, another
    speed). intervals=False skips the bootstrap (studies that train many runs report the
    spread over seeds instead).
    """
    unknown_kinds = [kind for kind in baseline_kinds if kind not in BASELINES]
    if unknown_kinds:
        raise ValueError(f"unknown baseline(s) {unknown_kinds}; choose from {', '.join(BASELINES)}")
    unknown = [name for name in tasks if name not in PROBE_DATASETS]
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; choose from {', '.join(PROBE_DATASETS)}")
    embedder, config, step = embedder_lib.load_embedder(
        workdir, step, max_tokens, max_padding, length_scaling, attention_kernel, alibi_tile_skip
    )
    out_dir = Path(out_dir)  # made only once the run loads: a wrong --workdir leaves nothing
    out_dir.mkdir(parents=True, exist_ok=True)
    skipped_modes = {}
    whole = [mode for mode in modes if mode in embedder_lib.WHOLE_TRACK_MODES]
    if whole and not positional.extrapolates(config.model.posemb):
        reason = (
            f"posemb {tuple(config.model.posemb)} has a learned absolute table of"
            f" {config.model.max_time_patches} time patches: it cannot embed whole tracks"
        )
        skipped_modes.update(dict.fromkeys(whole, reason))
        log.warning("skipping mode(s) %s: %s; probing chunks only", ", ".join(whole), reason)
        modes = [mode for mode in modes if mode not in whole]
        if not modes:
            raise ValueError(f"{reason}; probe it with --modes chunks")
    run_info = {
        "workdir": str(Path(workdir).absolute()),
        "step": step,
        "config": config,
        "params": cache.params_digest(embedder.params),  # keys the cache: 0.13 s for S/16 on a CPU
    }
    results = {
        "workdir": run_info["workdir"],
        "step": step,
        "model": model_label(config),
        "config": json.loads(config.to_json_best_effort()),
        "modes": list(modes),
        "skipped_modes": skipped_modes,
        "reg_grid": list(REG_GRID),
        "baselines": baseline_rows(baseline_kinds, modes),
        "tasks": {},
    }
    for name in tasks:
        where = resolve_data_dir(name, data_dir, config)
        results["tasks"][name] = probe_dataset(
            embedder, run_info, name, where, modes, out_dir, progress, baseline_kinds, intervals
        )
    run_info.pop("random_embedder", None)
    results["table"], results["intervals"] = table_rows(results)
    # A mistyped --data-dir must not replace an earlier run's scores with dashes.
    nothing_probed = len(not_probed(results)) == len(tasks)
    results["written"] = write_reports(out_dir, results, keep_earlier=nothing_probed)
    if not results["written"]:
        log.warning("nothing was probed: %s keeps the results it had", out_dir / "results.json")
    return results


def write_reports(out_dir: Path, results: dict, keep_earlier: bool = False) -> bool:
    """Writes out_dir/results.json, .md and .png from `results`, each replaced whole; with
    `keep_earlier`, only when out_dir has no results.json yet. Returns whether it wrote.

    Holds the lock of out_dir/results (out_dir/results.lock) for the check and all three
    writes, so that two probes sharing out_dir leave the three files of one run (the last
    one's), never a mix, and a probe that found nothing never replaces results another wrote
    while it ran.
    """
    with build_lock(out_dir / "results", doing="being written"):
        if keep_earlier and (out_dir / "results.json").exists():
            return False
        files.write_text(out_dir / "results.json", json.dumps(results, indent=2))
        write_markdown(out_dir / "results.md", results)
        write_plot(out_dir / "results.png", results)
    return True
