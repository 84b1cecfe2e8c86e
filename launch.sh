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
# Environment: RUNS (default runs/) where runs go; MYNA_RPE_CACHE where the demo set is built.
set -euo pipefail
cd "$(dirname "$0")"

if [ ! -x .venv/bin/python ]; then
  echo "setting up .venv (first run only)..."
  python3 -m venv .venv && .venv/bin/pip install -q -e '.[test]'
fi
PY=.venv/bin/python
RUNS=${RUNS:-runs}
export TF_CPP_MIN_LOG_LEVEL=2
# TensorFlow only reads and writes the tfds files here: its oneDNN notice is noise.
export TF_ENABLE_ONEDNN_OPTS=0

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
  train)
    config=${1:?usage: bash launch.sh train CONFIG [FLAGS]}
    shift
    $PY -m myna_rpe_jax.train --config="$config" --workdir="$RUNS/$(basename "$config" .py)" "$@"
    ;;
  probe)
    workdir=${1:?usage: bash launch.sh probe WORKDIR [FLAGS]}
    shift
    $PY -m myna_rpe_jax.probe --workdir="$workdir" --output "$workdir/probe" "$@"
    ;;
  slurm)
    config=${1:?usage: bash launch.sh slurm CONFIG [FLAGS]}
    shift
    srun $PY -m myna_rpe_jax.train --config="$config" --workdir="$RUNS/$(basename "$config" .py)" "$@"
    ;;
  *)
    echo "unknown command '$command': use demo, train, probe or slurm (see the top of launch.sh)" >&2
    exit 2
    ;;
esac
