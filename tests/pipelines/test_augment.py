"""pipelines.augment's one use of a private Keras attribute (the layers' seed generator)."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from pipelines import augment


class CountingSeeds(augment._BatchSeed):
    """The per-batch stand-in, counting the draws a layer takes from it."""

    def next(self, ordered=True):
        self.count = getattr(self, "count", 0) + 1
        return super().next(ordered)


def test_keras_random_layers_draw_from_the_swapped_generator():
    images = tf.random.stateless_uniform((2, 16, 16, 3), seed=(3, 4))
    for layer in augment.build_augmentation("flip,rotation=10,zoom=0.1,contrast=0.1", seed=1).layers:
        original = layer.generator
        generator = CountingSeeds(11, 5)
        with augment.seeds_from(layer, generator):
            layer(images, training=True)
        assert getattr(generator, "count", 0) > 0, (
            f"Keras {keras.__version__}: {type(layer).__name__} no longer draws its seeds from "
            "layer.generator, so pipelines.augment.seeds_from does not tie the augmentation to "
            "the batch index any more; update seeds_from for this Keras version."
        )
        assert layer.generator is original  # restored


def test_the_same_batch_index_gives_the_same_draw():
    layer = keras.layers.RandomRotation(0.2, seed=0)
    images = tf.random.stateless_uniform((2, 16, 16, 1), seed=(5, 6))
    out = [augment._stateless_call(layer, images, 3, i).numpy() for i in (0, 0, 1)]
    np.testing.assert_array_equal(out[0], out[1])
    assert not np.array_equal(out[0], out[2])


def test_a_layer_without_the_attribute_fails_loudly():
    with pytest.raises(RuntimeError, match=rf"Keras {keras.__version__}.*update pipelines.augment"):
        with augment.seeds_from(keras.layers.Rescaling(1.0), CountingSeeds(1, 0)):
            pass
