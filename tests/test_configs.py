"""Every shipped config builds its model and runs on its default data as it stands."""

import collections
import importlib
import pkgutil

import pytest

import configs
from myna_rpe_jax.data.demo import music
from myna_rpe_jax.model import vit

CONFIGS = sorted(name for _, name, _ in pkgutil.iter_modules(configs.__path__) if name != "common")


def test_every_config_is_found():
    assert {"alibi2d", "tiny", "myna", "rope"} <= set(CONFIGS)


@pytest.mark.parametrize("name", CONFIGS)
def test_config_builds_its_encoder_and_fits_its_batch_in_the_demo_train_split(name):
    config = importlib.import_module(f"configs.{name}").get_config()
    vit.encoder_from_config(config.model)  # validates every model field
    assert config.data.dataset == "demo"
    data = config.data
    splits = collections.Counter(
        music.track_spec(i, data.demo_seed).split for i in range(data.demo_tracks)
    )
    # A batch never holds a track twice, so the train split must hold a whole batch.
    assert splits["train"] >= config.batch_size, (name, dict(splits), config.batch_size)
