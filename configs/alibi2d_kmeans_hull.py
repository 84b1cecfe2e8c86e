"""2-D ALiBi, InfoNCE plus the k-means and convex-hull regularisers (10 clusters).

k-means pulls each embedding towards its nearest centroid; the convex-hull term keeps every
cluster spread out. The centroids live in the train state (seeded from the first batch,
moved by mini-batch k-means). The weights are a starting point, not tuned at this scale:
see README, "Extra losses", for the demo-set ablation.

python -m myna_rpe_jax.train --config=configs/alibi2d_kmeans_hull.py \
    --workdir=runs/alibi2d_kmeans_hull [--config.loss.hull_weight=0.0 for k-means only]
"""

from configs import common


def get_config():
    config = common.get_config(posemb=("alibi2d",))
    config.loss.update(kmeans_weight=0.1, hull_weight=0.05, num_clusters=10)
    return config
