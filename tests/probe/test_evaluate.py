"""probe: the protocol against scikit-learn, and end to end on the demo set with a trained
tiny checkpoint (shared with test_embed through the session's temporary folder)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.linear_model import Ridge
from sklearn.metrics import r2_score

from myna_rpe_jax.data.datasets import TaskSpec, dataset_tasks
from myna_rpe_jax.data.demo.music import DEMO_GENRES
from myna_rpe_jax.probe import __main__ as probe_cli
from myna_rpe_jax.probe import evaluate, tasks
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


def test_selection_never_looks_at_test_labels():
    data = {s: blobs(n, seed) for s, n, seed in [("train", 90, 0), ("valid", 60, 1)]}
    x_test, y_test = blobs(60, 2)
    spec = TaskSpec("multiclass", "y", 3, ("a", "b", "c"))
    honest = tasks.run_probe(spec, {**data, "test": (x_test, y_test)})
    shuffled = np.random.default_rng(3).permutation(y_test)
    scrambled = tasks.run_probe(spec, {**data, "test": (x_test, shuffled)})
    assert honest["selection"] == scrambled["selection"]
    assert honest["metrics"]["accuracy"] > 0.9 > 0.6 > scrambled["metrics"]["accuracy"]


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
    assert gtzan["status"] == "missing" and "not prepared" in gtzan["reason"]
    assert gtzan["build_command"].startswith("python -m data_prep.build --dataset gtzan")
    assert "GTZAN Acc" in results["table"]["alibi2d tiny (full)"]
    assert results["table"]["alibi2d tiny (full)"]["GTZAN Acc"] is None
    markdown = (out / "results.md").read_text()
    assert "| Model | Demo genre Acc |" in markdown and "| alibi2d tiny (chunks) |" in markdown
    not_probed, chosen = markdown.split("## Not probed", 1)[1].split("Chosen regularisation", 1)
    assert "gtzan: **missing**" in not_probed and "gtzan" not in chosen
    assert "demo/genre" in chosen
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_probe_of_only_missing_tasks_exits_non_zero(demo_probe, tmp_path):
    run, _, _ = demo_probe
    argv = ["--workdir", str(run.workdir), "--tasks", "gtzan", "--output", str(tmp_path)]
    assert probe_cli.main([*argv, "--data-dir", str(tmp_path / "nothing"), "--no-progress"]) == 1
    markdown = (tmp_path / "results.md").read_text()
    assert "## Not probed" in markdown and "gtzan: **missing**" in markdown


def test_cached_embeddings_are_reused(demo_probe, caplog):
    run, out, first = demo_probe
    cache = {m: out / "embeddings" / f"demo-step{first['step']}-{m}.npz" for m in first["modes"]}
    before = {m: path.stat().st_mtime_ns for m, path in cache.items()}
    assert first["tasks"]["demo"]["modes"]["full"]["cached"] is False
    with caplog.at_level("INFO", logger="myna_rpe_jax.probe"):
        again = evaluate.run(str(run.workdir), ["demo"], out, progress=False)
    assert {m: path.stat().st_mtime_ns for m, path in cache.items()} == before
    assert "reusing cached embeddings" in caplog.text
    assert all(again["tasks"]["demo"]["modes"][m]["cached"] for m in first["modes"])
    for row, scores in again["table"].items():  # deterministic probes: the same scores
        assert scores == {title: first["table"][row][title] for title in scores}


def test_learned_table_model_is_probed_on_chunks_only(tiny_config, tmp_path):
    """The learned-table baseline cannot embed whole tracks: `full` is skipped and said so,
    chunks are probed; asking for `full` alone is a clear error, not a traceback."""
    from myna_rpe_jax.train import loop

    tiny_config.model.posemb = ("learned",)
    tiny_config.total_steps = 2
    loop.train(tiny_config, str(tmp_path / "run"))
    results = evaluate.run(str(tmp_path / "run"), ["demo"], tmp_path / "out", progress=False)
    assert results["modes"] == ["chunks"] and "learned" in results["skipped_modes"]["full"]
    assert results["tasks"]["demo"]["status"] == "ok"
    assert list(results["table"]) == ["learned tiny (chunks)"]
    argv = ["--workdir", str(tmp_path / "run"), "--tasks", "demo", "--modes", "full"]
    assert probe_cli.main([*argv, "--output", str(tmp_path / "out2"), "--no-progress"]) == 1
