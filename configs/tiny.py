"""A tiny model for tests and the CPU demo.

python -m myna_rpe_jax.train --config=configs/tiny.py --workdir=runs/tiny
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.model = ml_collections.ConfigDict(
        dict(
            variant="tiny",
            posemb=("alibi2d",),
            patchout_keep=0.5,
            n_mels=128,
            max_time_patches=16,
            alibi_metric="manhattan",
            rope_theta=100.0,
            dtype="float32",
        )
    )
    return config
