"""TokenPositionEmbedding: the shared layer check, the added table, bad inputs, old saved files."""

import keras
import numpy as np
import pytest

from tests.helpers import check_layer
from zoo.layers import TokenPositionEmbedding


def _tokens(shape, seed=0):
    return np.random.default_rng(seed).normal(size=(2, *shape)).astype("float32")


def test_check_layer(tmp_path):
    check_layer(TokenPositionEmbedding, {"stddev": 0.05}, (6, 4), tmp_path, (6, 4))


def test_adds_the_table_to_every_sample():
    layer = TokenPositionEmbedding(stddev=0.05, name="pe")
    assert TokenPositionEmbedding.from_config(layer.get_config()).stddev == 0.05
    tokens = _tokens((6, 4))
    out = keras.ops.convert_to_numpy(layer(tokens))
    table = keras.ops.convert_to_numpy(layer.table)
    assert table.shape == (6, 4)
    np.testing.assert_allclose(out - tokens, np.broadcast_to(table, (2, 6, 4)), atol=1e-6)


def test_bad_arguments_and_shapes():
    with pytest.raises(ValueError, match="\\[batch, tokens, dim\\]"):
        TokenPositionEmbedding()(_tokens((4, 4, 4)))
    with pytest.raises(ValueError, match="stddev must be positive"):
        TokenPositionEmbedding(stddev=0)


def test_registered_name_is_unchanged_and_old_module_paths_load():
    """Saved ViTs name the layer ``zoo>TokenPositionEmbedding`` in module ``zoo.models.cpmid``."""
    from zoo.models import cpmid

    assert cpmid.TokenPositionEmbedding is TokenPositionEmbedding
    assert keras.saving.get_registered_name(TokenPositionEmbedding) == "zoo>TokenPositionEmbedding"
    old = {
        "module": "zoo.models.cpmid",
        "class_name": "TokenPositionEmbedding",
        "config": {"name": "pos_embed", "stddev": 0.05, "trainable": True},
        "registered_name": "zoo>TokenPositionEmbedding",
    }
    layer = keras.saving.deserialize_keras_object(old)
    assert isinstance(layer, TokenPositionEmbedding) and layer.stddev == 0.05
