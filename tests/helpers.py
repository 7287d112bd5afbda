"""Shared test helpers: the one check every paper block goes through."""

from __future__ import annotations

import os

import keras
import numpy as np


def check_layer(layer_cls, kwargs: dict, input_shape: tuple, tmp_path, expected_output_shape=None):
    """Config round trip, symbolic call, eager call (finite), one fit step, .keras save/load.

    ``input_shape`` excludes the batch. Returns the built model for further checks.
    """
    layer = layer_cls(**kwargs)
    config = layer.get_config()
    for key, value in kwargs.items():
        got = config[key]
        if isinstance(value, (list, tuple)):
            assert tuple(got) == tuple(value), (key, got, value)
        else:
            assert got == value, (key, got, value)
    clone = layer_cls.from_config(config)
    assert clone.get_config() == config

    # symbolic call
    inp = keras.Input(shape=input_shape, name="image")
    out = layer(inp)
    if expected_output_shape is not None:
        assert tuple(out.shape[1:]) == tuple(expected_output_shape), out.shape

    # eager call, finite outputs
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, *input_shape)).astype("float32")
    eager = keras.ops.convert_to_numpy(layer_cls.from_config(config)(x))
    assert np.all(np.isfinite(eager))
    assert eager.shape[1:] == tuple(out.shape[1:])

    # one fit step inside a model
    pool = {3: keras.layers.GlobalAveragePooling1D, 4: keras.layers.GlobalAveragePooling2D}
    y = pool[len(out.shape)]()(out) if len(out.shape) in pool else out
    y = keras.layers.Dense(1)(y)
    model = keras.Model(inp, y)
    model.compile(optimizer="adam", loss="mse")
    before = [w.copy() for w in model.get_weights()]
    hist = model.fit(x, np.ones((2, 1), "float32"), epochs=1, verbose=0)
    assert np.isfinite(hist.history["loss"][0])
    after = model.get_weights()
    assert any(not np.allclose(a, b) for a, b in zip(before, after)), "fit changed no weight"

    # .keras save and load with equal outputs
    path = os.path.join(str(tmp_path), f"{layer_cls.__name__}.keras")
    model.save(path)
    reloaded = keras.saving.load_model(path)
    np.testing.assert_allclose(
        model.predict(x, verbose=0), reloaded.predict(x, verbose=0), rtol=1e-5, atol=1e-5
    )
    return model
