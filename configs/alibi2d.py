"""Myna-RPE's 2-D ALiBi model (the paper's best on GTZAN and EmoMusic): bias -m_h (|df| + |dt|).

python -m myna_rpe_jax.train --config=configs/alibi2d.py --workdir=runs/alibi2d
"""

from configs import common


def get_config():
    return common.get_config(posemb=("alibi2d",))
