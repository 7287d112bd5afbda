"""A checkpoint that cannot be written (here a file squats on the temp folder TensorFlow writes
into, as a full disk would fail the write) ends in one sentence and leaves the previous
checkpoint whole and restorable."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from zoo.training.checkpoint import CheckpointError, TrainState


def test_failed_checkpoint_write_keeps_the_previous_one(tmp_path):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    optimizer = keras.optimizers.Adam()
    optimizer.build(model.trainable_variables)
    state = TrainState(model, optimizer, tmp_path / "ckpt", strategy=tf.distribute.get_strategy())
    state.step.assign(4)
    state.save()
    saved = [w.copy() for w in model.get_weights()]
    first = state.latest()

    (tmp_path / "ckpt" / "ckpt-2_temp").write_text("in the way")  # the next save's temp folder
    model.set_weights([w + 1 for w in saved])
    state.step.assign(8)
    with pytest.raises(CheckpointError) as caught:
        state.save()
    message = str(caught.value)
    assert len(message.splitlines()) == 1 and "Could not write a checkpoint" in message
    assert f"the previous checkpoint {first} is intact" in message
    assert state.latest() == first

    assert state.restore()
    assert state.position() == (0, 4)
    for a, b in zip(model.get_weights(), saved):
        np.testing.assert_array_equal(a, b)
