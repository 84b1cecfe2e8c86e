"""Shared defaults: Myna-RPE's published setup (docs/design.md), on the built-in demo data.

Model: ViT-S/16 with a CLS token, 90% patchout. Optimiser: AdamW, lr 2e-4, weight decay 1e-4,
batch 1024, 512 epochs. Loss: InfoNCE, temperature 0.1 (`config.loss`: SogCLR, k-means and
convex-hull terms are off by default). Chunks of 256 frames (2.56 s at 100 frames/s).
The published runs train on MTG-Jamendo:
`--config.data.dataset=mtg_jamendo --config.data.data_dir=DIR` after preparing it
(README, "Datasets"). The default demo set is generated and prepared on first use.
"""

import ml_collections
from ml_collections import config_dict


def get_config(posemb: tuple[str, ...] = ("alibi2d",)) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0

    config.data = ml_collections.ConfigDict(
        dict(
            dataset="demo",
            data_dir="",  # "" = the cache folder ($MYNA_RPE_CACHE or ~/.cache/myna_rpe_jax).
            split="train",  # or several: "train+valid+test" (the paper pretrains on all)
            # Copy the split(s) once into a memory-mapped frame store, so each step reads only
            # its chunks, not whole tracks (doubles the disk used by the training data).
            frame_store=True,
            chunk_frames=(256,),  # several values = variable-length buckets, one per step
            # The generated demo set (used when dataset == "demo"): 2160 tracks put 1080 in
            # the train split (1/2), enough for a batch of 1024 (tests/test_configs.py).
            demo_tracks=2160,
            demo_seconds=8.0,
            demo_seed=0,
            prefetch=2,
            read_threads=4,
        )
    )

    config.model = ml_collections.ConfigDict(
        dict(
            variant="S/16",
            posemb=tuple(posemb),
            patchout_keep=0.1,
            n_mels=128,
            # max_time_patches (the learned table's length) is derived at training start:
            # max(data.chunk_frames) // patch size (train/config_check.py).
            alibi_metric="manhattan",
            rope_theta=100.0,
            dtype="float32",
            blockwise_threshold=1024,  # more tokens than this: blockwise, linear-memory attention
            attention_block_size=512,
            # Past the threshold: "xla" (blockwise), "pallas" (one fused GPU kernel computes
            # the ALiBi bias inside it, model/fused_alibi.py) or "auto": pallas when an ALiBi
            # model embeds on a GPU (7x faster on a 10-minute track, H200), else xla.
            attention_kernel="auto",
            # Skip the attention tiles whose ALiBi bias makes every weight exactly 0 (the same
            # embeddings): unset, the fused kernel skips (15-32% faster on an H200) and
            # blockwise does not (slower there and on tracks of a few minutes on a CPU).
            alibi_tile_skip=config_dict.placeholder(bool),
            # Past the training token count, scale attention logits by log N / log N_train
            # (embedding only; training is unchanged). It hurt on the demo (README).
            length_scaling=False,
        )
    )

    # loss = contrastive + kmeans_weight * k-means + hull_weight * convex hull
    # (objectives/objective.py: Objective).
    config.loss = ml_collections.ConfigDict(
        dict(
            name="info_nce",  # or "sogclr" (Myna's loss, per-example moving averages)
            temperature=0.1,
            sogclr_gamma=0.9,  # SogCLR: weight of the current batch in its moving average
            kmeans_weight=0.0,  # > 0 turns the k-means term on
            hull_weight=0.0,  # > 0 turns the convex-hull term on
            num_clusters=10,  # k-means centroids, seeded from the first batch
            kmeans_momentum=0.99,  # EMA factor of the mini-batch k-means centroid update
            hull_eps=1e-4,  # ridge of the convex-hull term's scatter matrices
        )
    )

    config.optim = ml_collections.ConfigDict(
        dict(
            learning_rate=2e-4,
            weight_decay=1e-4,
            b1=0.9,
            b2=0.999,
            warmup_fraction=0.05,  # linear warmup, then cosine decay to 0
            grad_clip_norm=1.0,
        )
    )

    config.batch_size = 1024  # global, across all devices and processes
    config.epochs = 512
    config.total_steps = 0  # > 0 overrides epochs
    # Linear probes during pretraining (train/evals.py): at step 0, every eval_every steps
    # (0: never) and at the end, on the labelled splits of evals.datasets, e.g. ("gtzan",).
    config.eval_every = 0
    config.evals = ml_collections.ConfigDict(
        dict(
            datasets=(),  # any of demo, gtzan, giantsteps_key, emomusic, mtg_jamendo
            modes=("full",),  # and/or "chunks", "patchout" (probe --modes)
            data_dir="",  # where they are prepared; "" = the training data root / demo set
        )
    )
    config.log_every = 50
    config.checkpoint_every = 500
    config.keep_checkpoints = 3
    return config
