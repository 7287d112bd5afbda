"""Soft thresholding with learned thresholds, the attention of Deep Residual Shrinkage Networks."""

from __future__ import annotations

import keras
from keras import layers, ops


@keras.saving.register_keras_serializable(package="zoo")
class SoftThresholdAttention(layers.Layer):
    """Shrink every activation towards zero by a threshold a small network learns per sample.

    ::

        x [B, H, W, C]
        |---------------------------------------------+
        |abs -> GAP -> m [B, C]                       |
        |        |                                    |
        |        FC(C // reduction) -> BN -> ReLU     |
        |        -> FC(C, or 1 if channel_shared)     |
        |        -> sigmoid = alpha                   |
        |        tau = alpha * m                      |
        |        (channel_shared: alpha * mean_c m)   |
        v                                             v
        y = sign(x) * max(|x| - tau, 0)  <------------+
        y [B, H, W, C]

    Every threshold is a positive fraction ``alpha`` in (0, 1) of the mean absolute activation
    ``m``, so thresholding never zeroes a whole channel and the thresholds follow the scale of
    each sample (what makes it an attention: noise-like channels get shrunk harder).

    Args:
        reduction: int, default 4. The first fully connected layer has
            ``max(1, C // reduction)`` units (the paper uses C units, i.e. ``reduction=1``).
        channel_shared: bool, default False. False: one threshold per channel (DRSN-CW).
            True: one threshold per sample shared by all channels (DRSN-CS): the second fully
            connected layer has one unit and ``tau = alpha * mean_c(m)``.

    Input shape: ``[batch, ..., channels]`` of rank 3 or more (usually ``[B, H, W, C]``);
    the mean in ``m`` runs over every axis but the batch and the channels.
    Output shape: the input shape.

    Reference: M. Zhao, S. Zhong, X. Fu, B. Tang, M. Pecht, "Deep Residual Shrinkage Networks
    for Fault Diagnosis", IEEE Transactions on Industrial Informatics 16(7):4681-4690, 2020,
    doi:10.1109/TII.2019.2943898 (Fig. 4 and Eqs. 5-7: the channel-shared and channel-wise
    threshold networks).
    """

    def __init__(self, reduction=4, channel_shared=False, **kwargs):
        super().__init__(**kwargs)
        if isinstance(reduction, bool) or not isinstance(reduction, int) or reduction < 1:
            raise ValueError(
                f"SoftThresholdAttention reduction must be a positive integer, got {reduction!r}."
            )
        if not isinstance(channel_shared, bool):
            raise ValueError(
                f"SoftThresholdAttention channel_shared must be True or False, got "
                f"{channel_shared!r}."
            )
        self.reduction = int(reduction)
        self.channel_shared = bool(channel_shared)
        self.supports_masking = False

    def build(self, input_shape):
        if len(input_shape) < 3:
            raise ValueError(
                f"SoftThresholdAttention needs an input [batch, ..., channels] of rank >= 3, "
                f"got shape {tuple(input_shape)}."
            )
        channels = input_shape[-1]
        if channels is None:
            raise ValueError("SoftThresholdAttention needs a known channel count (last axis).")
        channels = int(channels)
        hidden = max(1, channels // self.reduction)
        policy = self.dtype_policy
        self.fc1 = layers.Dense(hidden, kernel_initializer="he_normal", dtype=policy, name="fc1")
        self.bn = layers.BatchNormalization(dtype=policy, name="bn")
        self.fc2 = layers.Dense(1 if self.channel_shared else channels, dtype=policy, name="fc2")
        self.fc1.build((None, channels))
        self.bn.build((None, hidden))
        self.fc2.build((None, hidden))
        self._reduce_axes = tuple(range(1, len(input_shape) - 1))
        self._rank = len(input_shape)

    def call(self, inputs, training=None):
        magnitude = ops.abs(inputs)
        m = ops.mean(magnitude, axis=self._reduce_axes)  # [B, C]
        h = ops.relu(self.bn(self.fc1(m), training=training))
        alpha = ops.sigmoid(self.fc2(h))  # [B, C] or [B, 1]
        if self.channel_shared:
            tau = alpha * ops.mean(m, axis=-1, keepdims=True)  # [B, 1]
        else:
            tau = alpha * m
        tau = ops.reshape(tau, (-1,) + (1,) * (self._rank - 2) + (tau.shape[-1],))
        return ops.sign(inputs) * ops.relu(magnitude - tau)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update({"reduction": self.reduction, "channel_shared": self.channel_shared})
        return config
