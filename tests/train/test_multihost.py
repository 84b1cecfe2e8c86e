"""Multi-process training on loopback: one global step, data_dirs that are not shared, and
processes that would read different tracks, fail in set-up or mid-run, or run different
configs (each stopped, on every process, with one message)."""

import shutil
import signal
import socket
import time

import numpy as np
import pytest

from myna_rpe_jax import failures
from myna_rpe_jax.data import datasets, locations
from myna_rpe_jax.train import config_check, frame_store, sources
from tests.conftest import DEMO
from tests.train.test_loop import overrides, run_train


def start_two_processes(tmp_path, tiny_config, per_process=((), ()), steps=1, output=None):
    """Two training processes of two CPU devices each on loopback; `per_process` adds each
    its own flags. Output to a pipe, or to the files `output` names."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    common = [f"--workdir={tmp_path / 'run'}", f"--config.total_steps={steps}"]
    common += [*overrides(tiny_config), f"--coordinator_address=127.0.0.1:{port}"]
    return [
        run_train(
            [*common, "--num_processes=2", f"--process_id={i}", *extra],
            devices=2,
            output=None if output is None else output[i],
        )
        for i, extra in enumerate(per_process)
    ]


def run_two_processes(tmp_path, tiny_config, per_process=((), ())):
    """Both processes through one global step. Returns [(returncode, output)] in order."""
    procs = start_two_processes(tmp_path, tiny_config, per_process)
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
    """One config, but process 1's own data_dir holds a demo prepared from 2 tracks fewer (a
    host's disk prepared differently): caught before the first step."""
    own = locations.demo_data_dir(tmp_path / "host1_disk", **DEMO)
    shutil.copytree(data_dir / "audio_source", own / "audio_source")
    rows = (own / "audio_source" / "metadata.csv").read_text().splitlines(keepends=True)
    train_rows = [i for i, row in enumerate(rows) if ",train," in row][:2]
    kept = [row for i, row in enumerate(rows) if i not in train_rows]
    (own / "audio_source" / "metadata.csv").write_text("".join(kept))
    datasets.prepare("demo", own / "audio_source", own, progress=False)
    flags = (f"--config.data.data_dir={tmp_path / 'host1_disk'}",)
    results = run_two_processes(tmp_path, tiny_config, ((), flags))
    train = len(datasets.open_split("demo", data_dir, "train"))
    for index, (code, out) in enumerate(results):
        assert code == 1, out
        assert "error: the processes do not read the same training data" in out, out
        assert f"(process 0: {train} tracks; process 1: {train - 2} tracks)" in out
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


def test_processes_that_run_different_configs_all_stop_before_any_data_work(tiny_config, tmp_path):
    """Process 1 trains on another dataset with another seed (its data_dir, its own, is no
    difference): both stop after the config check, naming the two fields."""
    empty = tmp_path / "empty"
    empty.mkdir()
    flags = ("--config.data.dataset=gtzan", f"--config.data.data_dir={empty}", "--config.seed=3")
    for code, out in run_two_processes(tmp_path, tiny_config, ((), flags)):
        assert code != 0, out
        assert (
            "error: the processes run different configs (process 1 differs from process 0 in"
            " data.dataset, seed): start every process with the same --config"
        ) in out, out
        assert "building the demo set" not in out, out


def test_a_config_mismatch_names_each_differing_process_and_field(tiny_config):
    """config_mismatch on the field digests `check_same_everywhere` gathers; data_dir, which
    each host may have its own, is not compared."""
    changed = tiny_config.copy_and_resolve_references()
    changed.update(seed=3, batch_size=16)
    changed.data.data_dir = "/host1/disk"
    same, other = config_check._flat_fields(tiny_config), config_check._flat_fields(changed)
    assert "data.data_dir" not in same and same.keys() == other.keys()
    digests = lambda f: np.stack([config_check._digest(value) for value in f.values()])
    rows = np.stack([digests(same), digests(same), digests(other)])
    assert config_check.config_mismatch(list(same), rows[:2]) == ""
    assert config_check.config_mismatch(list(same), rows) == (
        "process 2 differs from process 0 in batch_size, seed"
    )


def test_the_set_up_verdict_names_the_failed_processes_or_the_steps_that_differ():
    ok = ("opening the training split", "")
    assert failures.disagreement([ok, ok, ok]) == ""
    failed = [ok, ("opening the training split", "no such file"), ok, (ok[0], "disk full")]
    assert failures.disagreement(failed) == (
        "process 1 stopped while opening the training split: no such file; process 3 stopped"
        " while opening the training split: disk full"
    )
    apart = failures.disagreement([ok, ("checking the config", "")])
    assert apart.startswith(
        "the processes reached different set-up steps (process 0: opening the training split;"
        " process 1: checking the config)"
    )


def test_a_process_that_fails_mid_run_stops_the_others_within_seconds(tiny_config, tmp_path):
    """Ctrl-C on process 1 after its second step. Before, process 0 waited in the next
    collective and both ended minutes later (the 300 s shutdown barrier, then an abort with
    a C++ stack, exit 134); now process 1 says it was interrupted (130) and process 0 stops
    at once with process 1's message (1)."""
    logs = [tmp_path / "process0.log", tmp_path / "process1.log"]
    with logs[0].open("w") as out0, logs[1].open("w") as out1:
        procs = start_two_processes(tmp_path, tiny_config, steps=5000, output=(out0, out1))
        deadline = time.monotonic() + 240
        while "[2] contrastive_accuracy=" not in logs[1].read_text():
            assert time.monotonic() < deadline and procs[1].poll() is None, logs[1].read_text()
            time.sleep(0.2)
        procs[1].send_signal(signal.SIGINT)
        stopped = time.monotonic()
        codes = [proc.wait(timeout=120) for proc in procs]
    elapsed = time.monotonic() - stopped
    out0, out1 = (log.read_text() for log in logs)
    assert codes == [1, 130], (out0, out1)
    assert "error: interrupted" in out1, out1
    assert (
        "error: process 1 failed: interrupted (KeyboardInterrupt). This process stops too"
    ) in out0, out0
    for out in (out0, out1):
        assert "Traceback" not in out and "Fatal Python error" not in out, out
    assert elapsed < 60, elapsed  # not the 300 s shutdown barrier
