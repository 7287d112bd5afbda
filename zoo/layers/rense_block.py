"""RenseBlock: residual units whose outputs grow the feature map densely (RenseNet)."""

from __future__ import annotations

import keras
from keras import layers, ops

CONNECTIONS = ("rense", "dense", "residual")


@keras.saving.register_keras_serializable(package="zoo")
class RenseBlock(keras.layers.Layer):
    """``units`` residual units, each adding ``growth_rate`` channels to a running concatenation.

    A residual unit (two 3x3 conv-BN with a 1x1 conv-BN projection shortcut, as in ResNet) reads
    the whole running feature map and its output is concatenated onto it (as in DenseNet), so
    every later unit, and the block's output, sees every earlier feature unchanged: small-lesion
    detail found early is reused instead of being overwritten by additions::

        x_0 = input [B, H, W, C]
        for unit k = 1 .. units:                       (x_{k-1} has C + (k-1)*g channels)

          x_{k-1} --+--> 3x3 conv(g) -> BN -> ReLU -> 3x3 conv(g) -> BN --+
                    |                                                     (+) -> ReLU = f_k
                    +--> 1x1 conv(g) -> BN  (projection shortcut) --------+

          x_k = concat([x_{k-1}, f_k], channels)       (C + k*g channels)

        output = x_units [B, H, W, C + units * g]

    ``connection`` switches the skip connections for ablations (``zoo.models.rensenet``'s
    ``block=``), keeping every unit's input and output widths:

    * ``"rense"`` (default, the paper): residual unit, output concatenated (above);
    * ``"dense"``: no projection shortcut, ``f_k = ReLU(BN(conv2(...)))`` concatenated (DenseNet);
    * ``"residual"``: no concatenation; unit k maps ``C + (k-1)*g`` to ``C + k*g`` channels
      (3x3 conv(g) -> BN -> ReLU -> 3x3 conv(C + k*g) -> BN, plus a 1x1 conv-BN projection,
      added, ReLU), so the block's output width is the same as the Rense block's.

    Args:
        units: number of residual units (int >= 1).
        growth_rate: channels ``g`` each unit adds (int >= 1).
        kernel_size: kernel of the two residual-path convolutions (odd int, default 3).
        momentum: BatchNorm momentum (default 0.99).
        epsilon: BatchNorm epsilon (default 1e-3).
        kernel_initializer: for every convolution (default ``"he_normal"``).
        connection: ``"rense"`` (default), ``"dense"`` or ``"residual"`` (see above).

    Input shape: ``[batch, H, W, C]``. Output shape: ``[batch, H, W, C + units * growth_rate]``.

    Reference: H. Seo et al., "RenseNet: A Deep Learning Network Incorporating Residual and Dense
    Blocks with Edge Conservative Module to Improve Small-Lesion Classification and Model
    Interpretation", Cancers 16(3):570, 2024, doi:10.3390/cancers16030570 (the Rense block joins
    residual and dense skip connections). The exact unit layout above is our reading of it.
    """

    def __init__(
        self,
        units,
        growth_rate,
        kernel_size=3,
        momentum=0.99,
        epsilon=1e-3,
        kernel_initializer="he_normal",
        connection="rense",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if connection not in CONNECTIONS:
            raise ValueError(
                f"RenseBlock connection must be one of {', '.join(CONNECTIONS)}, got "
                f"{connection!r}."
            )
        for arg, value in (("units", units), ("growth_rate", growth_rate)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"RenseBlock {arg} must be a positive integer, got {value!r}.")
        if (
            not isinstance(kernel_size, int)
            or isinstance(kernel_size, bool)
            or kernel_size < 1
            or kernel_size % 2 == 0
        ):
            raise ValueError(
                f"RenseBlock kernel_size must be a positive odd integer (e.g. 3), got {kernel_size!r}."
            )
        self.units = int(units)
        self.growth_rate = int(growth_rate)
        self.kernel_size = int(kernel_size)
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)
        self.kernel_initializer = kernel_initializer
        self.connection = connection

    def _conv(self, kernel, name, filters=None):
        return layers.Conv2D(
            filters or self.growth_rate,
            kernel,
            padding="same",
            use_bias=False,
            kernel_initializer=self.kernel_initializer,
            dtype=self.dtype_policy,
            name=name,
        )

    def _bn(self, name):
        return layers.BatchNormalization(
            momentum=self.momentum, epsilon=self.epsilon, dtype=self.dtype_policy, name=name
        )

    def build(self, input_shape):
        if len(input_shape) != 4 or input_shape[-1] is None:
            raise ValueError(
                f"RenseBlock expects [batch, height, width, channels] with known channels, got "
                f"{tuple(input_shape)}."
            )
        h, w, channels = input_shape[1], input_shape[2], int(input_shape[-1])
        g = self.growth_rate
        self.conv1, self.bn1, self.conv2, self.bn2, self.proj, self.proj_bn = [], [], [], [], [], []
        for k in range(self.units):
            c_in = channels + k * g
            # the unit's output width: g (concatenated) or the whole running width (residual)
            c_out = c_in + g if self.connection == "residual" else g
            tag = f"unit{k + 1}"
            pairs = [
                (self.conv1, self._conv(self.kernel_size, f"{tag}_conv1"), c_in),
                (self.bn1, self._bn(f"{tag}_bn1"), g),
                (self.conv2, self._conv(self.kernel_size, f"{tag}_conv2", c_out), g),
                (self.bn2, self._bn(f"{tag}_bn2"), c_out),
            ]
            if self.connection != "dense":
                pairs += [
                    (self.proj, self._conv(1, f"{tag}_proj", c_out), c_in),
                    (self.proj_bn, self._bn(f"{tag}_proj_bn"), c_out),
                ]
            for bucket, layer, c in pairs:
                layer.build((None, h, w, c))
                bucket.append(layer)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], input_shape[-1] + self.units * self.growth_rate)

    def call(self, inputs, training=None):
        x = inputs
        for k in range(self.units):
            f = self.conv1[k](x)
            f = ops.relu(self.bn1[k](f, training=training))
            f = self.bn2[k](self.conv2[k](f), training=training)
            if self.connection != "dense":
                f = f + self.proj_bn[k](self.proj[k](x), training=training)
            f = ops.relu(f)
            x = f if self.connection == "residual" else ops.concatenate([x, f], axis=-1)
        return x

    def get_config(self):
        config = super().get_config()
        config.update(
            units=self.units,
            growth_rate=self.growth_rate,
            kernel_size=self.kernel_size,
            momentum=self.momentum,
            epsilon=self.epsilon,
            kernel_initializer=self.kernel_initializer,
            connection=self.connection,
        )
        return config
