"""Loading an encoder from a workdir: a run still training into it (its keep_checkpoints can
delete the latest step between the listing and the read), a run resumed with changed configs."""

from __future__ import annotations

import shutil

import jax.numpy as jnp
import numpy as np
import pytest

from myna_rpe_jax.run import checkpoints


def _workdir_with_steps(path, steps=(1, 2)):
    manager = checkpoints.checkpoint_manager(path, async_save=False)
    for step in steps:
        checkpoints.save(manager, step, {"params": {"w": jnp.full((4, 3), float(step))}})
    manager.wait_until_finished()
    return path


def test_the_latest_step_deleted_while_read_gives_way_to_the_newer_latest(tmp_path):
    """The listing says [1, 2]; by the read, a save of step 3 has dropped step 2."""
    workdir = _workdir_with_steps(tmp_path, (1, 2))
    manager = checkpoints.checkpoint_manager(workdir, async_save=False)  # lists [1, 2]
    _workdir_with_steps(workdir, (3,))
    shutil.rmtree(workdir / "checkpoints" / "2")
    params, step = checkpoints._read_params(manager, 2, follow_latest=True)
    assert step == 3
    np.testing.assert_array_equal(params["w"], np.full((4, 3), 3.0))


def test_a_chosen_step_deleted_while_read_is_named_so(tmp_path):
    workdir = _workdir_with_steps(tmp_path, (1, 2))
    manager = checkpoints.checkpoint_manager(workdir, async_save=False)
    shutil.rmtree(workdir / "checkpoints" / "2")
    deleted = r"step 2 .* was deleted while it was read .*--step \(\[1\]\)"
    with pytest.raises(OSError, match=deleted):
        checkpoints._read_params(manager, 2, follow_latest=False)


def test_a_damaged_latest_step_still_on_disk_is_not_skipped(tmp_path):
    """Following the latest must not hide damage: step 2 is there, its arrays are not."""
    workdir = _workdir_with_steps(tmp_path, (1, 2))
    for data in [d for d in (workdir / "checkpoints" / "2").rglob("d") if d.is_dir()]:
        shutil.rmtree(data)
    with pytest.raises(OSError, match=r"step 2 .* cannot be read, its files are damaged"):
        checkpoints.load_params(workdir)


def test_a_latest_step_half_deleted_when_a_newer_one_exists_gives_way(tmp_path):
    """Orbax deletes a dropped step file by file: mid-way it is still listed, unreadable."""
    workdir = _workdir_with_steps(tmp_path, (1, 2))
    manager = checkpoints.checkpoint_manager(workdir, async_save=False)
    _workdir_with_steps(workdir, (3,))
    for data in [d for d in (workdir / "checkpoints" / "2").rglob("d") if d.is_dir()]:
        shutil.rmtree(data)
    _, step = checkpoints._read_params(manager, 2, follow_latest=True)
    assert step == 3


def test_each_step_reads_the_config_it_was_trained_with(tmp_path):
    """Resumes at steps 10 and 30 with changed configs archived what ran up to each."""
    for name, value in [("config.until_step10.json", 1), ("config.until_step30.json", 2)]:
        (tmp_path / name).write_text(f'{{"v": {value}, "model": {{}}}}')
    (tmp_path / "config.json").write_text('{"v": 3, "model": {}}')
    (tmp_path / "config.until_stepX.json").write_text("not an archive: no step number")
    steps = (None, 1, 10, 11, 30, 31, 1000)
    assert [checkpoints.read_config(tmp_path, step).v for step in steps] == [3, 1, 1, 2, 2, 3, 3]
    assert checkpoints.config_file(tmp_path, 20) == tmp_path / "config.until_step30.json"


def _collect_a_failed_task_unread() -> None:
    """What a failed restore leaves: an asyncio task whose error nobody read, collected."""
    import asyncio
    import gc

    async def fails():
        raise ValueError("NOT_FOUND: a tensorstore read")

    loop = asyncio.new_event_loop()
    task = loop.create_task(fails())
    loop.run_until_complete(asyncio.sleep(0.01))
    loop.close()
    del task
    gc.collect()


def test_a_failed_read_silences_asyncio_reports_of_unread_failures_until_a_read_is_whole(
    caplog, monkeypatch
):
    """embed of a damaged checkpoint printed, at random (when the garbage collector ran),
    'Task exception was never retrieved' and a tensorstore spec per array around its one
    line; the asyncio reports are dropped after a failed read, and again shown after a
    whole one."""
    import logging
    import sys

    # Failed reads earlier in this process keep theirs, by design: start from none.
    monkeypatch.setattr(logging.getLogger("asyncio"), "filters", [])
    monkeypatch.setattr(sys, "unraisablehook", sys.unraisablehook)
    read_whole = checkpoints._quiet_failed_read()
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        _collect_a_failed_task_unread()
        assert "never retrieved" not in caplog.text
        read_whole()
        _collect_a_failed_task_unread()
        assert "Task exception was never retrieved" in caplog.text
