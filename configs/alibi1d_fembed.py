"""1-D ALiBi over time plus a learned frequency-row embedding (paper: best on GiantSteps).

python -m myna_rpe_jax.train --config=configs/alibi1d_fembed.py --workdir=runs/alibi1d_fembed
"""

from configs import common


def get_config():
    return common.get_config(posemb=("alibi1d", "freq"))
