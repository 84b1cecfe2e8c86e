"""Independent references for the model tests: ALiBi biases as whole [H, N, N] arrays.

The package never materialises these (`positional.AlibiBias` evaluates the bias tile by tile
from coordinates); the tests compare it against them.
"""

import numpy as np
from scipy.spatial.distance import cdist

_SCIPY_METRICS = {"manhattan": "cityblock", "euclidean": "euclidean"}


def alibi_bias_2d(coords, slopes, metric: str = "manhattan") -> np.ndarray:
    """2-D ALiBi: bias[..., h, i, j] = -slopes[h] * d(c_i, c_j).

    coords [..., N, 2] (freq_row, time_col); slopes [H]; d Manhattan (Myna-RPE) or Euclidean
    (CROMA), from scipy -> [..., H, N, N] float64.
    """
    coords = np.asarray(coords, np.float64)
    flat = coords.reshape(-1, *coords.shape[-2:])
    distance = np.stack([cdist(c, c, _SCIPY_METRICS[metric]) for c in flat])
    distance = distance.reshape(*coords.shape[:-2], *distance.shape[1:])
    return -np.asarray(slopes, np.float64)[:, None, None] * distance[..., None, :, :]


def alibi_bias_1d(positions, slopes) -> np.ndarray:
    """1-D ALiBi: bias[..., h, i, j] = -slopes[h] * |p_i - p_j|: [..., N] -> [..., H, N, N]."""
    return alibi_bias_2d(np.asarray(positions)[..., None], slopes)


def prepend_zero_bias(bias, num_prefix: int = 1) -> np.ndarray:
    """Zero bias to and from `num_prefix` leading tokens (the CLS):
    [..., H, N, N] -> [..., H, N + num_prefix, N + num_prefix]."""
    bias = np.asarray(bias)
    pad = [(0, 0)] * (bias.ndim - 2) + [(num_prefix, 0), (num_prefix, 0)]
    return np.pad(bias, pad)
