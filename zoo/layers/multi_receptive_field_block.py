"""Parallel depthwise branches with different receptive fields, fused by a pointwise conv."""

from __future__ import annotations

import keras
from keras import layers, ops

MERGES = ("concat", "sum")


def _as_tuple(value, name):
    """An int, or a non-empty sequence of ints, as a tuple of positive ints."""
    values = (value,) if isinstance(value, int) and not isinstance(value, bool) else value
    try:
        values = tuple(values)
    except TypeError:
        values = ()
    if not values or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
        raise ValueError(
            f"MultiReceptiveFieldBlock {name} must be a positive integer or a non-empty "
            f"list of positive integers, got {value!r}."
        )
    return values


@keras.saving.register_keras_serializable(package="zoo")
class MultiReceptiveFieldBlock(layers.Layer):
    """Several depthwise convolutions with different receptive fields, fused pointwise.

    ::

        x [B, H, W, Cin]
        |-----------------------+-----------------------+------------------+
        DW k1, d1 -> BN -> act  DW k2, d2 -> BN -> act  ... (one branch    |
        |                       |                        per receptive     |
        |                       |                        field)            |
        +------ concat (Cin * branches) or sum (Cin) ----+                 |
                        |                                                  |
                 1x1 conv (filters) -> BN                                  |
                        |                                                  |
                        + <---------- identity, if strides == 1 and Cin == filters
                        v
        y [B, ceil(H / strides), ceil(W / strides), filters]

    Branch ``i`` is a depthwise ``kernel_sizes[i]`` x ``kernel_sizes[i]`` convolution with
    dilation ``dilations[i]`` (receptive field ``d * (k - 1) + 1``); together with the shared
    pointwise fusion each branch is a depthwise-separable convolution, so the block costs
    about ``Cin * sum(k_i^2) + Cin * branches * filters`` weights. The output is linear (no
    activation after the fusion BN), as in an inverted-residual projection, so the identity
    path stays linear.

    Args:
        filters: int. Output channels.
        dilations: int or list of ints, default ``(1, 2, 3)``. Dilation rate per branch.
        kernel_sizes: int or list of ints, default 3. Depthwise kernel size per branch.
            ``dilations`` and ``kernel_sizes`` are paired branch by branch; an int is
            repeated, so ``kernel_sizes=(3, 5, 7), dilations=1`` gives three undilated
            branches of growing kernels and the default gives three 3x3 branches dilated
            1, 2, 3 (receptive fields 3, 5, 7).
        strides: int, default 1. Spatial stride of the block. Every branch is computed at
            stride 1 and then subsampled (``[::strides]``), which keeps all branches on the
            same sampling grid (dilated convolutions cannot stride in TensorFlow).
        merge: ``"concat"`` (default) or ``"sum"``: how branch outputs meet before the
            pointwise fusion (``"sum"`` makes the fusion ``branches`` times cheaper).
        activation: str, default ``"relu"``. Activation after each branch's BN.
        residual: bool, default True. Add the input to the output when the shapes allow
            (``strides == 1`` and ``Cin == filters``); ignored otherwise.

    Input shape: ``[batch, H, W, Cin]``.
    Output shape: ``[batch, ceil(H / strides), ceil(W / strides), filters]``.

    Reference: the multi-receptive-field block of the efficient intracranial-haemorrhage
    classifier built from depthwise-separable convolutions that ``ichnet`` follows: parallel
    branches of different receptive field over the same input, fused into one feature map.
    The branch layout (depthwise + BN + activation, pointwise fusion, linear output, identity
    residual) is our reading of it; see ``zoo.model_info("ichnet")``.
    """

    def __init__(
        self,
        filters,
        dilations=(1, 2, 3),
        kernel_sizes=3,
        strides=1,
        merge="concat",
        activation="relu",
        residual=True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if isinstance(filters, bool) or not isinstance(filters, int) or filters < 1:
            raise ValueError(
                f"MultiReceptiveFieldBlock filters must be a positive integer, got {filters!r}."
            )
        dil = _as_tuple(dilations, "dilations")
        ks = _as_tuple(kernel_sizes, "kernel_sizes")
        if len(dil) > 1 and len(ks) > 1 and len(dil) != len(ks):
            raise ValueError(
                f"MultiReceptiveFieldBlock got {len(ks)} kernel_sizes {ks} and {len(dil)} "
                f"dilations {dil}; give lists of the same length (one entry per branch) or "
                "a single int for one of them."
            )
        if isinstance(strides, bool) or not isinstance(strides, int) or strides < 1:
            raise ValueError(
                f"MultiReceptiveFieldBlock strides must be a positive integer, got {strides!r}."
            )
        if merge not in MERGES:
            raise ValueError(
                f"MultiReceptiveFieldBlock merge must be 'concat' or 'sum', got {merge!r}."
            )
        try:
            if not isinstance(activation, str):
                raise TypeError
            keras.activations.get(activation)
        except (ValueError, TypeError):
            raise ValueError(
                f"MultiReceptiveFieldBlock activation {activation!r} is not a Keras activation "
                "name; use e.g. 'relu', 'relu6', 'swish' or 'hard_swish'."
            ) from None
        self.filters = int(filters)
        # Stored as given (int or tuple) so get_config round-trips the constructor arguments.
        self.dilations = dil if not isinstance(dilations, int) else int(dilations)
        self.kernel_sizes = ks if not isinstance(kernel_sizes, int) else int(kernel_sizes)
        self.strides = int(strides)
        self.merge = merge
        self.activation = activation
        self.residual = bool(residual)
        n = max(len(dil), len(ks))
        self._branch_specs = tuple(
            (ks[i] if len(ks) > 1 else ks[0], dil[i] if len(dil) > 1 else dil[0]) for i in range(n)
        )

    @property
    def branches(self):
        """``((kernel_size, dilation), ...)``, one pair per branch."""
        return self._branch_specs

    def build(self, input_shape):
        if len(input_shape) != 4 or input_shape[-1] is None:
            raise ValueError(
                f"MultiReceptiveFieldBlock needs an input [batch, H, W, channels] with known "
                f"channels, got shape {tuple(input_shape)}."
            )
        cin = int(input_shape[-1])
        policy = self.dtype_policy
        self.branch_convs = []
        self.branch_norms = []
        for i, (k, d) in enumerate(self._branch_specs):
            conv = layers.DepthwiseConv2D(
                k,
                padding="same",
                dilation_rate=d,
                use_bias=False,
                depthwise_initializer="he_normal",
                dtype=policy,
                name=f"branch{i}_dw{k}x{k}_d{d}",
            )
            norm = layers.BatchNormalization(dtype=policy, name=f"branch{i}_bn")
            conv.build(input_shape)
            norm.build(tuple(input_shape))
            self.branch_convs.append(conv)
            self.branch_norms.append(norm)
        merged = cin * len(self._branch_specs) if self.merge == "concat" else cin
        self.fuse_conv = layers.Conv2D(
            self.filters,
            1,
            use_bias=False,
            kernel_initializer="he_normal",
            dtype=policy,
            name="fuse_pw",
        )
        self.fuse_norm = layers.BatchNormalization(dtype=policy, name="fuse_bn")
        self.fuse_conv.build((*input_shape[:-1], merged))
        self.fuse_norm.build((*input_shape[:-1], self.filters))
        self._act = keras.activations.get(self.activation)
        self._use_residual = self.residual and self.strides == 1 and cin == self.filters

    def call(self, inputs, training=None):
        outs = []
        for conv, norm in zip(self.branch_convs, self.branch_norms):
            y = self._act(norm(conv(inputs), training=training))
            if self.strides > 1:
                y = y[:, :: self.strides, :: self.strides, :]
            outs.append(y)
        if len(outs) == 1:
            y = outs[0]
        elif self.merge == "concat":
            y = ops.concatenate(outs, axis=-1)
        else:
            y = outs[0]
            for other in outs[1:]:
                y = y + other
        y = self.fuse_norm(self.fuse_conv(y), training=training)
        if self._use_residual:
            y = y + inputs
        return y

    def compute_output_shape(self, input_shape):
        b, h, w, _ = input_shape
        s = self.strides
        h = None if h is None else -(-int(h) // s)
        w = None if w is None else -(-int(w) // s)
        return (b, h, w, self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "dilations": self.dilations,
                "kernel_sizes": self.kernel_sizes,
                "strides": self.strides,
                "merge": self.merge,
                "activation": self.activation,
                "residual": self.residual,
            }
        )
        return config
