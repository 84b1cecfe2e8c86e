"""2-D ALiBi trained with SogCLR (Myna's loss) instead of InfoNCE: tau 0.1, gamma 0.9.

SogCLR keeps a moving average per training example (in the train state and checkpoints),
so small batches estimate the global contrastive loss.

python -m myna_rpe_jax.train --config=configs/alibi2d_sogclr.py --workdir=runs/alibi2d_sogclr
"""

from configs import common


def get_config():
    config = common.get_config(posemb=("alibi2d",))
    config.loss.update(name="sogclr", temperature=0.1, sogclr_gamma=0.9)
    return config
