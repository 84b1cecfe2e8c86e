"""2-D ALiBi trained on variable-length chunks: 1.28, 2.56, 5.12 or 10.24 s per step.

Each step draws one chunk length for its whole batch, so the train step compiles once per
length. Patchout keeps the same fraction (10%) of the patches at every length, so a
1024-frame step sees 4x the tokens of a 256-frame one; peak memory is set by the longest
bucket: lower --config.batch_size if it does not fit.

python -m myna_rpe_jax.train --config=configs/alibi2d_varlen.py --workdir=runs/alibi2d_varlen
"""

from configs import common


def get_config():
    config = common.get_config(posemb=("alibi2d",))
    config.data.chunk_frames = (128, 256, 512, 1024)
    config.data.demo_seconds = 10.5  # demo tracks that hold the longest chunk (1051 frames)
    return config
