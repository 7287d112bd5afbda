"""Precise batch-norm statistics before each evaluation, and the walk that finds the BN layers.

Kept apart from the loop: the calibration is a model-level operation (set moving statistics
from training batches) that the Trainer calls, and the one private Keras API of the zoo lives
here, next to the message that says what to do when Keras changes it.
"""

from __future__ import annotations

import keras
import tensorflow as tf

__all__ = ["BatchNormCalibrator", "batchnorm_layers"]


def batchnorm_layers(model) -> list:
    """Every ``BatchNormalization`` layer in ``model``, however deep: inside nested models and
    inside custom layers (a RenseBlock's sublayers).

    The one use of a private Keras API in the zoo: ``Layer._flatten_layers``. The public
    ``model.layers`` stops at a functional model's own layers and never enters a custom layer
    (it finds 1 of the 29 BN layers of rensenet_small), and Keras 3 has no public recursive
    walk. tests/training/test_trainer.py checks the result against the model's BN variables,
    so a change in Keras fails there, and here, with a message that says what to do.
    """
    try:
        found = list(model._flatten_layers(include_self=False, recursive=True))
    except (AttributeError, TypeError) as err:
        raise RuntimeError(
            f"Keras {keras.__version__} no longer has the private Layer._flatten_layers("
            f"include_self, recursive) that zoo.training.batchnorm.batchnorm_layers uses to find "
            f"the BatchNormalization layers to calibrate ({err}); update batchnorm_layers, or "
            "pass --bn-calibration-batches 0 meanwhile."
        ) from err
    return [layer for layer in found if isinstance(layer, keras.layers.BatchNormalization)]


class BatchNormCalibrator:
    """Precise batch-norm statistics: exact averages over training batches, not a lagging EMA.

    With few steps (small datasets, short schedules) and many BN layers, the EMA moving
    statistics (momentum 0.99) lag far behind the weights and inference-mode predictions are
    poor although training-mode ones are good. Before each evaluation we set every moving
    mean/variance to the plain average over ``batches`` training batches (batch i uses momentum
    i/(i+1)), as in "Rethinking 'Batch' in BatchNorm" (Wu and Johnson, 2021). The data is the
    training split shuffled by a fixed seed and unsharded, so every worker computes the same
    statistics (file order would be one class in a corpus or a class-sorted folder).

    How many batches matters on small sets: the statistics set the logits' offsets, so they move
    accuracy at the argmax threshold while leaving the AUROC ranking nearly alone. On BreastMNIST
    (ichnet, 64 px, the same weights) 256 images from the front of the file against 256 shuffled
    ones moved test accuracy from 0.859 to 0.827; the default is 32 batches (1,024 images; a small
    training split is gone through about twice).
    """

    def __init__(self, model):
        self.model = model
        self.layers = batchnorm_layers(model)

        @tf.function(reduce_retracing=True)
        def update(x, momentum):
            saved = [layer.momentum for layer in self.layers]
            for layer in self.layers:  # traced once: momentum is a tensor in the graph
                layer.momentum = momentum
            try:
                self.model(x, training=True)
            finally:
                for layer, value in zip(self.layers, saved):
                    layer.momentum = value

        self._update = update

    def __call__(self, dataset, batches: int) -> int:
        if not self.layers or batches <= 0:
            return 0
        done = 0
        for i, batch in enumerate(dataset.take(batches)):
            self._update(batch[0], tf.constant(i / (i + 1), tf.float32))
            done += 1
        return done
