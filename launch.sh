#!/usr/bin/env bash
# myna-rpe-jax launcher. Installs into .venv on first use (PyPI only), then:
#
#   bash launch.sh                       the whole demo, offline, on CPU: generate + prepare the
#                                        demo music set, pretrain the tiny model, embed, probe,
#                                        print the results table (about 4 minutes on 2 cores)
#   bash launch.sh train CONFIG [FLAGS]  pretrain one config, e.g. configs/alibi2d.py, in
#                                        runs/<config name> (FLAGS: --config.batch_size=256 ...)
#   bash launch.sh probe WORKDIR [FLAGS] linear probes of a trained run (FLAGS: --tasks ...)
#   bash launch.sh slurm CONFIG [FLAGS]  multi-host: one process per node under SLURM, e.g.
#       salloc --nodes=2 --ntasks-per-node=1 --gpus-per-node=8 bash launch.sh slurm configs/alibi2d.py
#                                        (JAX reads the cluster from SLURM's environment)
#
# CONFIG and WORKDIR are read relative to the folder you run from, else to this repository
# (so configs/alibi2d.py works from anywhere). Environment: RUNS (default: runs/ in this
# repository) where runs go; MYNA_RPE_CACHE where the demo set is built.
set -euo pipefail
caller=$PWD
cd "$(dirname "$0")"

usage() {  # a usage error: exit 2, as the Python commands do
  echo "usage: $1 (see the top of launch.sh)" >&2
  exit 2
}

# A path as the user meant it: absolute as given; else relative to where they ran us, when it
# exists there; else relative to this repository.
resolve() {
  case "$1" in
    /*) echo "$1" ;;
    *) if [ -e "$caller/$1" ]; then echo "$caller/$1"; else echo "$PWD/$1"; fi ;;
  esac
}

# .venv counts as installed once pip finished for this pyproject.toml: an install cut short
# (Ctrl-C, a lost network) or a pyproject.toml with new dependencies installs again.
stamp=$(python3 -c 'import hashlib; print(hashlib.sha256(open("pyproject.toml", "rb").read()).hexdigest())')
if [ ! -x .venv/bin/python ] || [ "$(cat .venv/.installed 2>/dev/null)" != "$stamp" ]; then
  echo "setting up .venv (first run, or pyproject.toml changed, or the last setup was cut short)..."
  rm -f .venv/.installed
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/python -m pip install -q -e '.[test]'
  echo "$stamp" > .venv/.installed
fi
PY=.venv/bin/python
case "${RUNS:-}" in
  "") RUNS=$PWD/runs ;;
  /*) ;;
  *) RUNS=$caller/$RUNS ;;
esac
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
# TensorFlow only reads and writes the tfds files here: its oneDNN notice is noise.
export TF_ENABLE_ONEDNN_OPTS=${TF_ENABLE_ONEDNN_OPTS:-0}

command=${1:-demo}
[ $# -gt 0 ] && shift
case "$command" in
  demo)
    workdir="$RUNS/demo"
    $PY -m myna_rpe_jax.train --config=configs/tiny.py --workdir="$workdir" "$@"
    $PY -m myna_rpe_jax.probe --workdir="$workdir" --tasks demo --output "$workdir/probe"
    echo
    cat "$workdir/probe/results.md"
    echo
    echo "Results: $workdir/probe/results.{json,md,png}; TensorBoard: tensorboard --logdir $workdir"
    ;;
  train|slurm)
    [ $# -gt 0 ] || usage "bash launch.sh $command CONFIG [FLAGS]"
    config=$(resolve "$1")
    shift
    launcher=""  # not an array: an empty one is "unbound" to macOS's bash 3.2 under set -u
    if [ "$command" = slurm ]; then launcher=srun; fi
    $launcher $PY -m myna_rpe_jax.train --config="$config" \
      --workdir="$RUNS/$(basename "$config" .py)" "$@"
    ;;
  probe)
    [ $# -gt 0 ] || usage "bash launch.sh probe WORKDIR [FLAGS]"
    workdir=$(resolve "$1")
    shift
    $PY -m myna_rpe_jax.probe --workdir="$workdir" --output "$workdir/probe" "$@"
    ;;
  *)
    usage "bash launch.sh [demo | train CONFIG | probe WORKDIR | slurm CONFIG] [FLAGS]; got '$command'"
    ;;
esac
