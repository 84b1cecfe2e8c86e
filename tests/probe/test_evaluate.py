"""probe: the protocol against scikit-learn, and end to end on the demo set with a trained
tiny checkpoint (shared with test_embed through the session's temporary folder)."""

from __future__ import annotations

import json
import logging
import re
import threading
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import Ridge
from sklearn.metrics import r2_score

from myna_rpe_jax.data.datasets import TaskSpec, dataset_tasks
from myna_rpe_jax.data.demo.music import DEMO_GENRES
from myna_rpe_jax.data.keys import KEY_NAMES
from myna_rpe_jax.data.lock import build_lock
from myna_rpe_jax.embed.file import load_npz
from myna_rpe_jax.probe import __main__ as probe_cli
from myna_rpe_jax.probe import evaluate, tasks
from myna_rpe_jax.probe import metrics as probe_metrics
from tests.embed.test_embedder import trained_tiny_run


def blobs(n: int, seed: int, num_classes: int = 3, dim: int = 8):
    """Gaussian classes around fixed centres: features [n, dim], labels [n]."""
    centres = np.random.default_rng(0).normal(0, 2.0, (num_classes, dim))
    rng = np.random.default_rng(seed)
    y = rng.integers(num_classes, size=n)
    return (centres[y] + rng.normal(size=(n, dim))).astype(np.float32), y


def linear_targets(n: int, seed: int, dim: int = 8):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim))
    y = 3.0 + x @ np.linspace(-1, 1, dim) + rng.normal(0, 1.5, n)
    return x.astype(np.float32), y


def test_regression_probe_matches_sklearn_ridge_selected_on_valid():
    data = {s: linear_targets(n, seed) for s, n, seed in [("train", 60, 0), ("valid", 40, 1)]}
    data["test"] = linear_targets(50, 2)
    result = tasks.run_probe(TaskSpec("regression", "y", 1), data)
    (x, y), (xv, yv), (xt, yt) = data["train"], data["valid"], data["test"]
    z = lambda t: (t - y.mean()) / y.std()
    sel = result["selection"]
    valid = [r2_score(z(yv), Ridge(alpha=a).fit(x, z(y)).predict(xv)) for a in sel["grid"]]
    np.testing.assert_allclose(sel["valid_scores"], valid, rtol=1e-3, atol=1e-4)
    assert sel["chosen"] == sel["grid"][int(np.argmax(valid))]
    expected = r2_score(z(yt), Ridge(alpha=sel["chosen"]).fit(x, z(y)).predict(xt))
    assert result["metrics"]["r2"] == pytest.approx(expected, rel=1e-3, abs=1e-4)


def test_nan_embeddings_and_nan_valid_scores_are_said_not_crashed_on():
    """Embeddings with NaN (a diverged checkpoint's) are refused up front, naming the split;
    before, R² was NaN at every strength and selection failed on numpy's 'argmax of an empty
    sequence'. A NaN among finite valid scores is never chosen; all NaN is a message."""
    data = {s: linear_targets(n, seed) for s, n, seed in [("train", 60, 0), ("test", 50, 2)]}
    x_valid, y_valid = linear_targets(40, 1)
    x_valid[[3, 7], 0] = np.nan
    data["valid"] = (x_valid, y_valid)
    with pytest.raises(ValueError, match="^2 of the 40 valid embeddings hold NaN or inf"):
        tasks.run_probe(TaskSpec("regression", "y", 1), data)
    grid = np.asarray(tasks.REG_GRID)
    scores = np.linspace(0.1, 0.8, len(grid))
    scores[-1] = np.nan  # the strongest: it would win every tie
    assert tasks._select(scores, grid, "r2") == len(grid) - 2
    with pytest.raises(ValueError, match="valid r2 is NaN or infinite at every regularisation"):
        tasks._select(np.full(len(grid), np.nan), grid, "r2")


def test_selection_never_looks_at_test_labels():
    data = {s: blobs(n, seed) for s, n, seed in [("train", 90, 0), ("valid", 60, 1)]}
    x_test, y_test = blobs(60, 2)
    spec = TaskSpec("multiclass", "y", 3, ("a", "b", "c"))
    honest = tasks.run_probe(spec, {**data, "test": (x_test, y_test)})
    shuffled = np.random.default_rng(3).permutation(y_test)
    scrambled = tasks.run_probe(spec, {**data, "test": (x_test, shuffled)})
    assert honest["selection"] == scrambled["selection"]
    assert honest["metrics"]["accuracy"] > 0.9 > 0.6 > scrambled["metrics"]["accuracy"]


def test_reported_test_metrics_are_the_bootstraps_scorer_of_the_test_outputs():
    """run_probe's metrics and the bootstrap's point estimates (`metrics.scorer` of
    test_outputs) are computed apart: they must agree for every kind of task."""
    splits = [("train", 120, 0), ("valid", 60, 1), ("test", 60, 2)]
    keys = {split: blobs(n, seed, num_classes=24) for split, n, seed in splits}
    noise = np.random.default_rng(4)
    tags = {  # 5 tags, each a noisy threshold of one feature
        split: (x, (x[:, :5] + noise.normal(size=(len(x), 5)) > 0).astype(np.float32))
        for split, (x, _) in keys.items()
    }
    cases = [
        (TaskSpec("multiclass", "key", 24, KEY_NAMES), keys, ["accuracy", "mirex"]),
        (TaskSpec("regression", "y", 1), {s: linear_targets(n, i) for s, n, i in splits}, ["r2"]),
        (TaskSpec("multilabel", "tags", 5, tuple("abcde")), tags, ["roc_auc", "pr_auc"]),
    ]
    for spec, data, names in cases:
        result = tasks.run_probe(spec, data)
        assert [n for n in result["metrics"] if n in probe_metrics.METRIC_NAMES] == names
        scores = probe_metrics.scorer(names)(*result["test_outputs"])
        assert scores == pytest.approx({n: result["metrics"][n] for n in names}), spec.kind


def test_standardize_uses_train_statistics_only():
    rng = np.random.default_rng(0)
    features = {"train": rng.normal(5, 3, (50, 4)), "test": rng.normal(-9, 0.1, (20, 4))}
    out = tasks.standardize(features)
    np.testing.assert_allclose(out["train"].mean(0), 0, atol=1e-5)
    expected = (features["test"] - features["train"].mean(0)) / features["train"].std(0)
    np.testing.assert_allclose(out["test"], expected, rtol=1e-4)


@pytest.fixture(scope="module")
def demo_probe(tmp_path_factory):
    """One CLI probe of the demo set (the run's own, found from its config; --data-dir holds
    no demo) and of GTZAN, which is not prepared anywhere here."""
    run = trained_tiny_run(tmp_path_factory)
    out = tmp_path_factory.mktemp("probe")
    argv = ["--workdir", str(run.workdir), "--tasks", "demo,gtzan", "--output", str(out)]
    assert probe_cli.main([*argv, "--data-dir", str(out / "nothing"), "--no-progress"]) == 0
    return run, out, json.loads((out / "results.json").read_text())


def test_demo_probe_beats_chance_in_both_modes(demo_probe):
    _, _, results = demo_probe
    demo = results["tasks"]["demo"]
    assert demo["status"] == "ok" and results["modes"] == ["full", "chunks"]
    chance = 1 / len(DEMO_GENRES)
    for mode in ("full", "chunks"):
        probes = demo["modes"][mode]["probes"]
        assert set(probes) == set(dataset_tasks("demo"))
        assert probes["genre"]["metrics"]["accuracy"] >= 2.5 * chance
        assert set(probes["key"]["metrics"]) == {"accuracy", "mirex"}
        assert 0.5 < probes["tags"]["metrics"]["roc_auc"] <= 1
        for task in ("arousal", "valence"):
            assert np.isfinite(probes[task]["metrics"]["r2"])
        for probe_result in probes.values():
            sel = probe_result["selection"]
            assert sel["chosen"] in sel["grid"] and sel["metric"].startswith("valid ")


def test_missing_dataset_is_reported_with_its_build_command(demo_probe):
    _, out, results = demo_probe
    gtzan = results["tasks"]["gtzan"]
    assert gtzan["status"] == "missing"
    assert gtzan["reason"] == f"the folder {out / 'nothing'} does not exist"  # its --data-dir
    assert gtzan["build_command"].startswith("python -m data_prep.build --dataset gtzan")
    assert "GTZAN Acc" in results["table"]["alibi2d tiny (full)"]
    assert results["table"]["alibi2d tiny (full)"]["GTZAN Acc"] is None
    markdown = (out / "results.md").read_text()
    assert "| Model | Demo genre Acc |" in markdown and "| alibi2d tiny (chunks) |" in markdown
    not_probed, chosen = markdown.split("## Not probed", 1)[1].split("Chosen regularisation", 1)
    assert "gtzan: **missing**" in not_probed and "gtzan" not in chosen
    assert "demo/genre" in chosen
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_baseline_rows_sit_beside_the_encoder_with_finite_intervals(demo_probe):
    _, out, results = demo_probe
    rows = [
        "alibi2d tiny (full)",
        "alibi2d tiny (chunks)",
        "random init (full)",
        "random init (chunks)",
        "log-mel stats",
        "MFCC stats",
        "chroma",
    ]
    assert list(results["table"]) == rows and list(results["intervals"]) == rows
    demo_columns = [title for title in results["table"][rows[0]] if title.startswith("Demo")]
    assert "Demo key Acc" in demo_columns and "Demo tags ROC-AUC" in demo_columns
    for row in rows:
        for title in demo_columns:
            value, (low, high) = results["table"][row][title], results["intervals"][row][title]
            assert np.isfinite([value, low, high]).all() and low <= high, (row, title)
            assert low - 1e-6 <= value <= high + 1e-6 or title.endswith("R²"), (row, title)
        assert results["intervals"][row]["GTZAN Acc"] is None
    demo = results["tasks"]["demo"]
    assert demo["baselines"]["log-mel stats"]["dim"] == 2 * 128
    assert demo["baselines"]["MFCC stats"]["dim"] == 40 and demo["baselines"]["chroma"]["dim"] == 12
    seed = results["config"]["seed"]
    made = sorted(path.name for path in (out / "embeddings").glob("demo-[rf]*.npz"))
    assert [re.sub(r"-[0-9a-f]{8}-", "-M-", name) for name in made] == [
        "demo-features.npz",
        f"demo-random-seed{seed}-M-chunks.npz",
        f"demo-random-seed{seed}-M-full.npz",
    ]
    markdown = (out / "results.md").read_text()
    table = markdown.split("## Not probed")[0]
    for row in rows:
        line = next(line for line in table.splitlines() if line.startswith(f"| {row} |"))
        assert re.search(r"\| -?\d+\.\d \[-?\d+\.\d, -?\d+\.\d\] \|", line), line
    assert "demo/key (random init (full))" in markdown and "demo/key (chroma)" in markdown


def test_probe_of_only_missing_tasks_exits_non_zero(demo_probe, tmp_path):
    run, _, _ = demo_probe
    argv = ["--workdir", str(run.workdir), "--tasks", "gtzan", "--output", str(tmp_path)]
    argv += ["--no-baselines", "--data-dir", str(tmp_path / "nothing"), "--no-progress"]
    assert probe_cli.main(argv) == 1
    markdown = (tmp_path / "results.md").read_text()
    assert "## Not probed" in markdown and "gtzan: **missing**" in markdown
    assert json.loads((tmp_path / "results.json").read_text())["baselines"] == []


def test_unknown_baseline_is_a_usage_error(demo_probe, tmp_path):
    run, _, _ = demo_probe
    argv = ["--workdir", str(run.workdir), "--output", str(tmp_path), "--baselines", "pca"]
    with pytest.raises(SystemExit) as exit_info:
        probe_cli.main(argv)
    assert exit_info.value.code == 2


def test_reports_wait_while_another_probe_writes_into_the_same_output(demo_probe, tmp_path, caplog):
    """results.json, .md and .png are written under one lock: a second probe's three files
    never interleave with the first's."""
    _, _, results = demo_probe
    results = {**results, "step": 12345}
    writer = threading.Thread(target=evaluate.write_reports, args=(tmp_path, results))
    with caplog.at_level(logging.WARNING), build_lock(tmp_path / "results"):  # the other probe
        writer.start()
        writer.join(timeout=2.0)
        assert writer.is_alive()
        assert sorted(path.name for path in tmp_path.iterdir()) == ["results.lock"]
    writer.join(timeout=120)
    assert not writer.is_alive()
    assert "results, being written by pid" in caplog.text
    assert json.loads((tmp_path / "results.json").read_text())["step"] == 12345
    assert ", step 12345" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "results.png").stat().st_size > 0


def test_probe_that_found_nothing_keeps_results_written_while_it_waited(demo_probe, tmp_path):
    """A probe with no task probed writes its 'Not probed' report only into an output with no
    results yet, decided under the lock: results another probe wrote while this one waited for
    the lock are kept, not replaced with dashes."""
    _, _, results = demo_probe
    missing = {"status": "missing", "reason": "not prepared", "build_command": "build it"}
    empty = {**results, "tasks": {"demo": missing}}
    outcome = []
    writer = threading.Thread(
        target=lambda: outcome.append(evaluate.write_reports(tmp_path, empty, keep_earlier=True))
    )
    with build_lock(tmp_path / "results"):  # another probe, writing its scores
        writer.start()
        writer.join(timeout=2.0)
        assert writer.is_alive()
        (tmp_path / "results.json").write_text('{"step": "the other probe"}')
    writer.join(timeout=120)
    assert outcome == [False]
    assert json.loads((tmp_path / "results.json").read_text()) == {"step": "the other probe"}
    assert not (tmp_path / "results.md").exists()
    assert evaluate.write_reports(tmp_path / "fresh", empty, keep_earlier=True)  # none yet
    assert "## Not probed" in (tmp_path / "fresh" / "results.md").read_text()


def test_cached_embeddings_are_reused(demo_probe, caplog):
    run, out, first = demo_probe
    parts = [
        *first["tasks"]["demo"]["modes"].values(),
        *first["tasks"]["demo"]["baselines"].values(),
    ]
    cache = {Path(part["embeddings"]) for part in parts}  # 2 modes, 2 random init, features
    before = {path: path.stat().st_mtime_ns for path in cache}
    demo = first["tasks"]["demo"]
    assert demo["modes"]["full"]["cached"] is False
    assert not any(part["cached"] for part in demo["baselines"].values())
    with caplog.at_level("INFO", logger="myna_rpe_jax"):
        again = evaluate.run(
            str(run.workdir), ["demo"], out, progress=False, baseline_kinds=evaluate.BASELINES
        )
    assert {path: path.stat().st_mtime_ns for path in cache} == before and len(before) == 5
    assert "reusing cached embeddings" in caplog.text and "random-init encoder" not in caplog.text
    assert all(again["tasks"]["demo"]["modes"][m]["cached"] for m in first["modes"])
    assert all(part["cached"] for part in again["tasks"]["demo"]["baselines"].values())
    assert list(again["table"]) == list(first["table"])
    for row, scores in again["table"].items():  # deterministic probes: the same scores
        assert scores == {title: first["table"][row][title] for title in scores}
        assert again["intervals"][row] == {t: first["intervals"][row][t] for t in scores}


def test_learned_table_model_is_probed_on_chunks_only(tiny_config, tmp_path):
    """The learned-table baseline cannot embed whole tracks: `full` is skipped and said so,
    chunks are probed; asking for `full` alone is a clear error, not a traceback."""
    from myna_rpe_jax.train import loop

    tiny_config.model.posemb = ("learned",)
    tiny_config.total_steps = 2
    loop.train(tiny_config, str(tmp_path / "run"))
    results = evaluate.run(
        str(tmp_path / "run"), ["demo"], tmp_path / "out", progress=False, baseline_kinds=["random"]
    )
    assert results["modes"] == ["chunks"] and "learned" in results["skipped_modes"]["full"]
    assert results["tasks"]["demo"]["status"] == "ok"
    assert list(results["table"]) == ["learned tiny (chunks)", "random init (chunks)"]
    argv = ["--workdir", str(tmp_path / "run"), "--tasks", "demo", "--modes", "full"]
    assert probe_cli.main([*argv, "--output", str(tmp_path / "out2"), "--no-progress"]) == 1


def test_cli_probes_patchout_mode_with_length_scaling_in_their_own_cache(demo_probe):
    run, out, _ = demo_probe
    argv = ["--workdir", str(run.workdir), "--tasks", "demo", "--output", str(out / "ls")]
    argv += ["--modes", "full,patchout", "--length-scaling", "on", "--no-baselines"]
    assert probe_cli.main([*argv, "--no-progress"]) == 0
    results = json.loads((out / "ls" / "results.json").read_text())
    assert results["model"].endswith(", length-scaled") and results["modes"] == ["full", "patchout"]
    for mode in ("full", "patchout"):
        path = Path(results["tasks"]["demo"]["modes"][mode]["embeddings"])
        params = load_npz(path).meta["params"]  # its digest starts the name
        assert path.name == f"demo-step{results['step']}-{params[:8]}-{mode}-ls.npz"
        meta = load_npz(path).meta
        assert meta["length_scaling"] is True and meta["mode"] == mode
        assert meta.get("patchout_passes") == (8 if mode == "patchout" else None)
        assert meta.get("patchout_draw") == ("real patches" if mode == "patchout" else None)
    scaled = load_npz(
        out / "ls" / "embeddings" / f"demo-step{results['step']}-{params[:8]}-full-ls.npz"
    )
    plain = load_npz(out / "embeddings" / f"demo-step{results['step']}-{params[:8]}-full.npz")
    assert not np.allclose(scaled.embeddings, plain.embeddings, atol=1e-4)


def test_cli_speed_settings_reach_the_embedder_and_change_no_score(demo_probe):
    """--attention-kernel and --tile-skip replace the run's config.model fields (the kernels
    themselves are compared on long tracks in tests/model and tests/embed); the scores stay."""
    run, out, first = demo_probe
    argv = ["--workdir", str(run.workdir), "--tasks", "demo", "--output", str(out / "pallas")]
    argv += ["--modes", "full", "--tile-skip", "on", "--no-baselines", "--no-progress"]
    argv += ["--attention-kernel", "pallas"]
    assert probe_cli.main(argv) == 0
    results = json.loads((out / "pallas" / "results.json").read_text())
    assert results["config"]["model"]["attention_kernel"] == "pallas"
    assert results["config"]["model"]["alibi_tile_skip"] is True
    row = next(name for name in first["table"] if name.endswith("(full)"))
    scores = results["table"][row]  # the demo task's columns (the fixture probed more tasks)
    assert scores and scores == {title: first["table"][row][title] for title in scores}
    with pytest.raises(SystemExit) as exit_info:
        probe_cli.main([*argv[:-2], "--attention-kernel", "triton"])
    assert exit_info.value.code == 2


def test_bad_task_lists_and_outputs_are_usage_errors(tmp_path):
    """Checked before the run is even read: the workdir need not exist."""
    (tmp_path / "a_file").write_text("")
    base = ["--workdir", str(tmp_path / "no_run")]
    for extra in (
        ["--tasks", "", "--output", str(tmp_path / "out")],
        ["--tasks", "demo,nosuch", "--output", str(tmp_path / "out")],
        ["--tasks", "demo", "--output", str(tmp_path / "a_file")],
        ["--tasks", "demo", "--output", str(tmp_path / "out"), "--max-padding", "-1"],
    ):
        with pytest.raises(SystemExit) as exit_info:
            probe_cli.main([*base, *extra])
        assert exit_info.value.code == 2, extra
    assert not (tmp_path / "out").exists()
    # A valid command line on a folder that is no run: exit 1, and no --output folder made.
    assert probe_cli.main([*base, "--tasks", "demo", "--output", str(tmp_path / "out")]) == 1
    assert not (tmp_path / "out").exists()


def test_a_dataset_prepared_without_a_split_is_missing_with_a_rebuild_command(tmp_path):
    """A plain build command would only answer 'already prepared': --overwrite is needed."""
    from myna_rpe_jax.data import datasets
    from myna_rpe_jax.data.demo.music import generate_demo

    generate_demo(tmp_path / "audio", num_tracks=2, seconds=2.0)  # too few for three splits
    datasets.prepare("demo", tmp_path / "audio", tmp_path / "data", progress=False)
    entry = evaluate.probe_dataset(
        None, {}, "demo", tmp_path / "data", ["full"], tmp_path / "out", progress=False
    )
    assert entry["status"] == "missing" and "a probe needs" in entry["reason"]
    assert entry["build_command"].endswith(f"--data-dir {tmp_path / 'data'} --overwrite")
    entry = evaluate.probe_dataset(
        None, {}, "demo", tmp_path / "none", ["full"], tmp_path / "out", progress=False
    )
    assert not entry["build_command"].endswith("--overwrite")  # nothing there to replace
