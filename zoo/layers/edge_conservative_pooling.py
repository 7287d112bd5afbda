"""EdgeConservativePooling: downsampling that keeps the detail average pooling throws away."""

from __future__ import annotations

import keras
from keras import layers, ops

_PADDINGS = ("same", "valid")


@keras.saving.register_keras_serializable(package="zoo")
class EdgeConservativePooling(keras.layers.Layer):
    """Average pooling plus a compensation path for the detail (edges) that pooling discards.

    Plain ``pool_size`` x ``pool_size`` average pooling keeps only each window's mean; a lesion
    a pixel or two wide is blurred into its neighbours. This layer splits the input into that mean
    and the residual detail, ``r = x - upsample(avgpool(x))`` (nearest-neighbour upsampling, so
    ``r`` sums to zero in every window), carries ``r`` down to the pooled resolution without
    losing anything (space-to-depth: the ``p*p`` positions of each window become channels), and
    lets a learned 1x1 convolution merge the two::

        x [B, H, W, C] --(edge-pad to a multiple of p)--+
          |                                              |
          +--> avgpool p --> pooled [B, H/p, W/p, C] ----|-------------------+
          |                    |                         |                   |
          |                    +--> nearest upsample p --+                   |
          |                                  |                               |
          +------------------------------> x - up = r [B, H, W, C]           |
                                             |                               |
                      space-to-depth p: [B, H/p, W/p, p*p*C] (compensation)  |
                                             |                               |
                                             +---- concat channels ----------+
                                                         |
                        1x1 conv (filters, no bias) -> BatchNorm -> activation
                                                         |
                                              y [B, H/p, W/p, filters]

    ``pooled`` and the space-to-depth residual together are a lossless rewrite of ``x``
    (``x = upsample(pooled) + r``), so the 1x1 convolution sees everything pooling saw plus
    every within-window edge; a 1x1 convolution over a concatenation equals one convolution on
    ``pooled`` added to another on the residual, so this is the "merge by addition" form too.
    Two inputs with the same window means give the same plain-pooling output but different
    outputs here (tested).

    Sizes not divisible by ``pool_size``: with ``padding="same"`` (default) the bottom and right
    edges are padded by repeating the last row / column (so padded pixels add no false edges)
    and the output is ``ceil(H / p) x ceil(W / p)``; ``padding="valid"`` requires ``H`` and ``W``
    to be multiples of ``pool_size`` and raises otherwise.

    Args:
        filters: output channels; ``None`` (default) keeps the input channel count.
        pool_size: int >= 2 (default 2); the window and the stride.
        padding: ``"same"`` (default, edge-pad up to a multiple of ``pool_size``) or ``"valid"``.
        activation: applied after BatchNorm (default ``"relu"``; ``None`` for linear).
        momentum: BatchNorm momentum (default 0.99).
        epsilon: BatchNorm epsilon (default 1e-3).
        kernel_initializer: for the 1x1 convolution (default ``"he_normal"``).
        detail_init: ``None`` (default: ``kernel_initializer`` for the whole 1x1 kernel) or
            ``"zeros"``: the kernel rows that read the residual detail start at zero, so at
            initialisation the layer is a 1x1 convolution of the average-pooled input (the
            ``downsample="avg"`` transition up to order) and learns to use the detail only where
            the gradient asks for it. Our addition, for the study of why the paper form trains
            slowly (docs/RESULTS.md).

    Input shape: ``[batch, H, W, C]``. Output shape: ``[batch, ceil(H/p), ceil(W/p), filters]``.

    Use :meth:`decompose` to get ``(pooled, residual)`` (no weights involved).

    Reference: H. Seo et al., "RenseNet: A Deep Learning Network Incorporating Residual and Dense
    Blocks with Edge Conservative Module to Improve Small-Lesion Classification and Model
    Interpretation", Cancers 16(3):570, 2024, doi:10.3390/cancers16030570 (the edge conservative
    module: a compensation path for detail lost in pooling). The space-to-depth compensation and
    the 1x1 merge are our reading of it.
    """

    def __init__(
        self,
        filters=None,
        pool_size=2,
        padding="same",
        activation="relu",
        momentum=0.99,
        epsilon=1e-3,
        kernel_initializer="he_normal",
        detail_init=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if filters is not None and (
            not isinstance(filters, int) or isinstance(filters, bool) or filters < 1
        ):
            raise ValueError(
                f"EdgeConservativePooling filters must be a positive integer or None, got {filters!r}."
            )
        if not isinstance(pool_size, int) or isinstance(pool_size, bool) or pool_size < 2:
            raise ValueError(
                f"EdgeConservativePooling pool_size must be an integer >= 2, got {pool_size!r}."
            )
        if padding not in _PADDINGS:
            raise ValueError(
                f"EdgeConservativePooling padding must be 'same' or 'valid', got {padding!r}."
            )
        try:
            act = keras.activations.get(activation)
        except (ValueError, TypeError):
            raise ValueError(
                f"EdgeConservativePooling activation must be a Keras activation name such as "
                f"'relu', or None for linear, got {activation!r}."
            ) from None
        if detail_init not in (None, "zeros"):
            raise ValueError(
                f"EdgeConservativePooling detail_init must be None or 'zeros', got {detail_init!r}."
            )
        self.detail_init = detail_init
        self.filters = filters
        self.pool_size = int(pool_size)
        self.padding = padding
        self.activation = activation
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)
        self.kernel_initializer = kernel_initializer
        self._act = act

    # ---- shapes -------------------------------------------------------------------------------
    def _out_size(self, size):
        if size is None:
            return None
        return -(-size // self.pool_size)

    def _check_shape(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(
                f"EdgeConservativePooling expects [batch, height, width, channels], got "
                f"{tuple(input_shape)}."
            )
        if input_shape[-1] is None:
            raise ValueError("EdgeConservativePooling needs a known channel count.")
        if self.padding == "valid":
            for size in input_shape[1:3]:
                if size is not None and size % self.pool_size:
                    raise ValueError(
                        f"EdgeConservativePooling(padding='valid') needs height and width "
                        f"divisible by pool_size={self.pool_size}, got {tuple(input_shape[1:3])}; "
                        "use padding='same' or resize the input."
                    )

    def build(self, input_shape):
        self._check_shape(input_shape)
        channels = int(input_shape[-1])
        filters = self.filters or channels
        p = self.pool_size
        out_h, out_w = self._out_size(input_shape[1]), self._out_size(input_shape[2])
        self.merge_conv = layers.Conv2D(
            filters,
            1,
            use_bias=False,
            kernel_initializer=self.kernel_initializer,
            dtype=self.dtype_policy,
            name="merge_conv",
        )
        self.merge_conv.build((None, out_h, out_w, channels * (p * p + 1)))
        if self.detail_init == "zeros":  # rows [channels:] read the space-to-depth detail
            kernel = self.merge_conv.kernel
            self.merge_conv.kernel.assign(ops.concatenate(
                [kernel[:, :, :channels], ops.zeros_like(kernel[:, :, channels:])], axis=2))
        self.merge_bn = layers.BatchNormalization(
            momentum=self.momentum, epsilon=self.epsilon, dtype=self.dtype_policy, name="merge_bn"
        )
        self.merge_bn.build((None, out_h, out_w, filters))

    def compute_output_shape(self, input_shape):
        filters = self.filters or input_shape[-1]
        return (
            input_shape[0],
            self._out_size(input_shape[1]),
            self._out_size(input_shape[2]),
            filters,
        )

    # ---- the weight-free part -------------------------------------------------------------------
    def _pad(self, x, axis):
        """Repeat the last row (axis 1) or column (axis 2) up to a multiple of pool_size."""
        p = self.pool_size
        size = x.shape[axis]
        last = x[:, -1:] if axis == 1 else x[:, :, -1:]
        if size is not None:
            extra = (-size) % p
            if extra == 0:
                return x
            return ops.concatenate([x, ops.repeat(last, extra, axis=axis)], axis=axis)
        # unknown size: pad by p - 1, then cut back to the next multiple of p
        size = ops.shape(x)[axis]
        target = ((size + p - 1) // p) * p
        x = ops.concatenate([x, ops.repeat(last, p - 1, axis=axis)], axis=axis)
        return x[:, :target] if axis == 1 else x[:, :, :target]

    def decompose(self, inputs):
        """``(pooled, residual)``: ``pooled = avgpool(x)``, ``residual = x - upsample(pooled)``.

        ``x`` is first edge-padded to a multiple of ``pool_size`` (``padding="same"``), so
        ``residual`` has the padded size ``[B, p*ceil(H/p), p*ceil(W/p), C]``.
        """
        x = ops.convert_to_tensor(inputs)
        if self.padding == "valid":
            self._check_shape(tuple(x.shape))
        p = self.pool_size
        x = self._pad(self._pad(x, 1), 2)
        pooled = ops.average_pool(x, pool_size=p, strides=p, padding="valid")
        upsampled = ops.repeat(ops.repeat(pooled, p, axis=1), p, axis=2)
        return pooled, x - upsampled

    def space_to_depth(self, residual):
        """``[B, p*h, p*w, C] -> [B, h, w, p*p*C]``; channel block ``i*p + j`` = offset (i, j)."""
        p = self.pool_size
        parts = [residual[:, i::p, j::p, :] for i in range(p) for j in range(p)]
        return ops.concatenate(parts, axis=-1)

    # ---- forward --------------------------------------------------------------------------------
    def call(self, inputs, training=None):
        pooled, residual = self.decompose(inputs)
        merged = ops.concatenate([pooled, self.space_to_depth(residual)], axis=-1)
        y = self.merge_conv(merged)
        y = self.merge_bn(y, training=training)
        return self._act(y)

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            pool_size=self.pool_size,
            padding=self.padding,
            activation=self.activation,
            momentum=self.momentum,
            epsilon=self.epsilon,
            kernel_initializer=self.kernel_initializer,
            detail_init=self.detail_init,
        )
        return config
