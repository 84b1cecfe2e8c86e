"""Multi-process training on loopback: one global step, data_dirs that are not shared, and
processes that would read different tracks, fail in set-up or run different configs (each
stopped, on every process, with one message)."""

import shutil
import socket

import numpy as np
import pytest

from myna_rpe_jax import distributed
from myna_rpe_jax.data import datasets, locations
from myna_rpe_jax.train import frame_store, sources
from tests.conftest import DEMO
from tests.train.test_loop import overrides, run_train


def run_two_processes(tmp_path, tiny_config, per_process=((), ())):
    """Two training processes of two CPU devices each, one global step; `per_process` adds
    each its own flags. Returns [(returncode, output)] in process order."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    common = [f"--workdir={tmp_path / 'run'}", "--config.total_steps=1", *overrides(tiny_config)]
    common += [f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2"]
    procs = [
        run_train([*common, f"--process_id={i}", *extra], devices=2)
        for i, extra in enumerate(per_process)
    ]
    outs = [proc.communicate(timeout=300)[0] for proc in procs]
    return [(proc.returncode, out) for proc, out in zip(procs, outs, strict=True)]


def step_loss(out: str) -> str:
    return out.split("[1] contrastive_accuracy=")[1].split("loss=")[1].split(",")[0]


def test_two_processes_on_loopback_take_one_global_step(tiny_config, tmp_path):
    results = run_two_processes(tmp_path, tiny_config)
    for code, out in results:
        assert code == 0, out
        assert "training on 4 devices (2 processes), global batch 8" in out
    assert step_loss(results[0][1]) == step_loss(results[1][1])  # one global loss


def test_a_host_whose_data_dir_is_not_shared_builds_its_own_demo(tiny_config, tmp_path):
    """Process 1's data_dir is its own empty disk: process 0 finds the demo prepared, process
    1 builds its own copy (the demo is a function of its seed), and both check they read the
    same tracks before the step."""
    own = tmp_path / "host1_disk"
    results = run_two_processes(tmp_path, tiny_config, ((), (f"--config.data.data_dir={own}",)))
    for code, out in results:
        assert code == 0, out
    assert "building the demo set" in results[1][1]
    assert "building the demo set" not in results[0][1]
    assert step_loss(results[0][1]) == step_loss(results[1][1])
    built = locations.demo_data_dir(own, DEMO["tracks"], DEMO["seconds"], DEMO["seed"])
    assert locations.is_prepared("demo", built)


@pytest.fixture
def data_dir(demo_root):
    return locations.demo_data_dir(demo_root, DEMO["tracks"], DEMO["seconds"], DEMO["seed"])


def test_processes_reading_different_tracks_stop_with_one_message(tiny_config, tmp_path, data_dir):
    results = run_two_processes(tmp_path, tiny_config, ((), ("--config.data.split=train+valid",)))
    train, valid = (len(datasets.open_split("demo", data_dir, s)) for s in ("train", "valid"))
    for index, (code, out) in enumerate(results):
        assert code == 1, out
        assert "error: the processes do not read the same training data" in out, out
        assert f"(process 0: {train} tracks; process 1: {train + valid} tracks)" in out
        assert f"this process ({index}) reads demo train" in out
    assert "[1] contrastive_accuracy=" not in results[0][1]  # no step was taken


def test_the_same_tracks_have_one_fingerprint_wherever_they_are_mounted(data_dir, tmp_path):
    """A copy of the prepared demo at another path (another host's disk) fingerprints alike,
    as a frame store and as records; other splits, or the same ones in another order, differ."""
    copy = tmp_path / "elsewhere" / data_dir.name
    shutil.copytree(data_dir, copy, ignore=shutil.ignore_patterns(frame_store.FOLDER))
    prints = {}
    for where in (data_dir, copy):
        for splits in (["train"], ["train", "valid"], ["valid", "train"]):
            store = frame_store.open_frame_store("demo", where, splits, progress=False)
            records = [datasets.open_split("demo", where, split) for split in splits]
            records = records[0] if len(records) == 1 else sources.ConcatSource(records)
            prints[where, "+".join(splits)] = sources.fingerprint(store)
            prints[where, "+".join(splits), "records"] = sources.fingerprint(records)
    for key, value in prints.items():
        if key[0] == copy:
            assert value == prints[(data_dir, *key[1:])], key
    originals = [value for key, value in prints.items() if key[0] == data_dir]
    assert len(set(originals)) == len(originals)  # every split list and reader differs


def fingerprint_rows(*fingerprints) -> np.ndarray:
    """[processes, 28] as check_same_tracks gathers them."""
    return np.stack(
        [
            np.concatenate([np.asarray([n], np.int64).view(np.uint8), np.frombuffer(d, np.uint8)])
            for n, d in fingerprints
        ]
    )


def test_a_mismatch_names_each_differing_process_and_its_track_count():
    same, other = (24, b"a" * 20), (24, b"b" * 20)
    assert sources.tracks_mismatch(fingerprint_rows(same, same, same)) == ""
    assert sources.tracks_mismatch(fingerprint_rows(same, (36, b"a" * 20), same, other)) == (
        "process 0: 24 tracks; process 1: 36 tracks; process 3: 24 tracks, but not the same ones"
    )


def test_a_process_that_fails_in_set_up_stops_the_others_with_its_message(tiny_config, tmp_path):
    """Process 1's data_dir does not exist: it stops at the config check, and process 0,
    instead of waiting in the next collective until JAX's runtime times out ("Gloo context
    initialization failed: DEADLINE_EXCEEDED"), stops there too with process 1's message."""
    missing = tmp_path / "missing"
    flags = ("--config.data.dataset=gtzan", f"--config.data.data_dir={missing}")
    (code0, out0), (code1, out1) = run_two_processes(tmp_path, tiny_config, ((), flags))
    assert code1 == 2 and f"error: config.data.data_dir='{missing}' does not exist" in out1, out1
    assert code0 == 1, out0
    stopped = f"process 1 stopped while checking the config: config.data.data_dir='{missing}'"
    assert f"error: {stopped}" in out0, out0
    assert "DEADLINE_EXCEEDED" not in out0 and "JaxRuntimeError" not in out0, out0


def test_processes_that_run_different_configs_all_stop_at_the_first_step_that_differs(
    tiny_config, tmp_path
):
    """Process 0 trains on the demo (it builds it first), process 1 on another dataset."""
    empty = tmp_path / "empty"
    empty.mkdir()
    flags = ("--config.data.dataset=gtzan", f"--config.data.data_dir={empty}")
    for code, out in run_two_processes(tmp_path, tiny_config, ((), flags)):
        assert code == 1, out
        assert (
            "error: the processes reached different set-up steps (process 0: building the demo"
            " set on process 0; process 1: copying the training split into the frame store)"
        ) in out, out


def test_the_set_up_verdict_names_the_failed_processes_or_the_steps_that_differ():
    ok = ("opening the training split", "")
    assert distributed.disagreement([ok, ok, ok]) == ""
    failed = [ok, ("opening the training split", "no such file"), ok, (ok[0], "disk full")]
    assert distributed.disagreement(failed) == (
        "process 1 stopped while opening the training split: no such file; process 3 stopped"
        " while opening the training split: disk full"
    )
    apart = distributed.disagreement([ok, ("checking the config", "")])
    assert apart.startswith(
        "the processes reached different set-up steps (process 0: opening the training split;"
        " process 1: checking the config)"
    )
