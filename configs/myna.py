"""Baseline: the learned absolute table the Myna-RPE paper compares against (8 frequency x 16
time patches). The original Myna used fixed 2-D sin-cos: that is configs/sinusoidal.py.

Its table is as long as the longest training chunk (max(data.chunk_frames) // 16 time
patches, derived at training start), so it cannot embed longer inputs in one pass: use
`embed --mode chunks`. Shorter chunks: --config.data.chunk_frames='(96,)'.

python -m myna_rpe_jax.train --config=configs/myna.py --workdir=runs/myna
"""

from configs import common


def get_config():
    return common.get_config(posemb=("learned",))
