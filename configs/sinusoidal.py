"""Fixed 2-D sin-cos embedding computed from coordinates (Myna's original scheme), any length.

python -m myna_rpe_jax.train --config=configs/sinusoidal.py --workdir=runs/sinusoidal
"""

from configs import common


def get_config():
    return common.get_config(posemb=("sinusoidal",))
