"""Probe evaluators during pretraining (big_vision's `config.evals`).

At step 0 of a fresh run (the random-initialisation row), every `config.eval_every` steps and
at the last step, the current parameters embed the labelled splits of each dataset of
`config.evals.datasets` in each mode of `config.evals.modes` (`full`: whole tracks in one
pass; `chunks`: Myna's chunk average; `patchout`: masked passes) and every task of the dataset
gets the probe command's linear probe (`probe.tasks.run_probe`: fit on train, regularisation
chosen on valid, test scored once; no bootstrap intervals here). A dataset whose log-mels fit
in `IN_MEMORY_BYTES` is read into memory once, when training starts (larger ones are read
again at every evaluation), and one `Embedder` is reused, so an evaluation compiles only the
first time. Scores go to TensorBoard as `eval/<dataset>/<mode>/<task>/<metric>` and,
one JSON line per evaluation, to WORKDIR/evals.jsonl ({"step", "seconds", "scores"}); a
resumed run skips the steps already there. Process 0 evaluates; the others wait at the next
step.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from myna_rpe_jax.data.audio import MelConfig
from myna_rpe_jax.embed.collection import Track, check_dataset_mel, embed_tracks, read_dataset
from myna_rpe_jax.embed.embedder import Embedder
from myna_rpe_jax.errors import UserError
from myna_rpe_jax.model import vit
from myna_rpe_jax.probe import evaluate

EVALS_FILE = "evals.jsonl"
IN_MEMORY_BYTES = 2 << 30  # log-mels of one dataset kept in memory between evaluations


def host_copy(tree: Any) -> Any:
    """Numpy copies of (replicated, possibly multi-host) arrays: this process's first shard."""
    return jax.tree.map(lambda a: np.asarray(a.addressable_data(0)), tree)


def logged_steps(workdir: str | Path) -> set[int]:
    """The steps WORKDIR/evals.jsonl already holds (a resumed run does not repeat them)."""
    path = Path(workdir) / EVALS_FILE
    if not path.exists():
        return set()
    lines = path.read_text(encoding="utf-8").splitlines()
    return {json.loads(line)["step"] for line in lines if line.strip()}


def append_record(workdir: str | Path, record: dict) -> None:
    with open(Path(workdir) / EVALS_FILE, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def is_eval_step(step: int, every: int, last_step: int) -> bool:
    return step == 0 or step % every == 0 or step == last_step


class LabelledSplits:
    """The train, valid and test tracks of one prepared dataset, with labels: iterating yields
    them from memory when they fit in `budget` bytes, else read again from the records."""

    def __init__(self, sources: list, budget: int = IN_MEMORY_BYTES):
        self.sources = sources
        self.size = sum(len(source) for source in sources)
        self.kept: list[Track] | None = []
        used = 0
        for track in read_dataset(sources):
            used += track.mel.nbytes
            if used > budget:
                self.kept = None  # too large: stream it at every evaluation
                break
            self.kept.append(track)

    def __iter__(self) -> Iterator[Track]:
        return iter(self.kept) if self.kept is not None else read_dataset(self.sources)

    def __len__(self) -> int:
        return self.size


def read_labelled(
    name: str, config: ml_collections.ConfigDict, mel: MelConfig, embedder: Embedder
) -> LabelledSplits:
    """The train, valid and test splits of dataset `name`, with labels.

    Raises UserError when it is not prepared (with the command that builds it) or was prepared
    with other log-mel settings than the training data."""
    from myna_rpe_jax.data import datasets  # imports TensorFlow Datasets

    data_dir = evaluate.resolve_data_dir(name, config.evals.data_dir or None, config)
    reason = evaluate.missing_reason(name, data_dir)
    if reason is not None:
        raise UserError(
            f"config.evals.datasets: {name} is {reason}; build it with:"
            f" {evaluate.build_command(name, data_dir)} (or set --config.evals.data_dir)"
        )
    sources = [datasets.open_split(name, data_dir, split) for split in evaluate.SPLITS]
    try:
        check_dataset_mel(name, data_dir, sources[0].mel_config, embedder)
    except ValueError as err:
        raise UserError(f"config.evals.datasets: {err}") from err
    return LabelledSplits(sources)


class ProbeEvaluator:
    """Linear-probe scores of parameters: `evaluator(params, step) -> {name: score}`."""

    def __init__(
        self,
        config: ml_collections.ConfigDict,
        encoder: vit.Encoder,
        params: Any,
        mel: MelConfig,
    ):
        self.modes = tuple(config.evals.modes)
        chunk_frames = int(max(config.data.chunk_frames))
        self.embedder = Embedder(encoder, host_copy(params), chunk_frames, mel_config=mel)
        self.tracks = {
            name: read_labelled(name, config, mel, self.embedder) for name in config.evals.datasets
        }
        self.seconds = 0.0  # spent evaluating, all calls together

    def __call__(self, params: Any, step: int) -> dict[str, float]:
        start = time.perf_counter()
        self.embedder.set_params(host_copy(params))
        scores = {}
        for name, tracks in self.tracks.items():
            for mode in self.modes:
                result = embed_tracks(self.embedder, tracks, mode, len(tracks), progress=False)
                label = f"step {step}, {mode}"
                probes = evaluate.probe_embeddings(name, result, label, intervals=False)
                for task, probe in probes.items():
                    for metric, value in probe.get("metrics", {}).items():
                        if isinstance(value, float):
                            scores[f"{name}/{mode}/{task}/{metric}"] = value
        self.seconds += time.perf_counter() - start
        return scores


def evaluator_from_config(
    config: ml_collections.ConfigDict, encoder: vit.Encoder, params: Any, mel: MelConfig
) -> ProbeEvaluator | None:
    """The run's evaluator, or None when config.eval_every is 0 or no dataset is named."""
    if not config.eval_every or not config.evals.datasets or jax.process_index() > 0:
        return None
    return ProbeEvaluator(config, encoder, params, mel)
