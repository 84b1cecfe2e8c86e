"""A tiny model on a small demo set: for tests and the CPU demo (bash launch.sh).

python -m myna_rpe_jax.train --config=configs/tiny.py --workdir=runs/tiny
"""

from configs import common


def get_config():
    config = common.get_config(posemb=("alibi2d",))
    config.model.variant = "tiny"
    config.model.patchout_keep = 0.5
    config.data.update(demo_tracks=96, demo_seconds=12.0, read_threads=2)
    config.batch_size = 32
    config.optim.learning_rate = 1e-3
    config.optim.warmup_fraction = 0.1
    config.total_steps = 200
    config.log_every = 10
    config.checkpoint_every = 50
    return config
