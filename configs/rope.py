"""Axial RoPE (RoPE-ViT): half of each head rotated by the frequency row, half by the time column.

python -m myna_rpe_jax.train --config=configs/rope.py --workdir=runs/rope
"""

from configs import common


def get_config():
    return common.get_config(posemb=("rope",))
