"""Baseline: the learned absolute table the Myna-RPE paper compares against (8 frequency x 16
time patches). The original Myna used fixed 2-D sin-cos: that is configs/sinusoidal.py.

It cannot embed inputs longer than 256 frames in one pass: use `embed --mode chunks`.

python -m myna_rpe_jax.train --config=configs/myna.py --workdir=runs/myna
"""

from configs import common


def get_config():
    return common.get_config(posemb=("learned",))
