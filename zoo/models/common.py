"""What every builder shares: argument checks, conv-BN-activation units, the head.

Conventions every registered model follows (tests check them for each name in the registry):

* the input layer is named ``image``; any H, W >= ``MIN_SIZE`` and any channel count;
* the last spatial feature map (``[batch, h, w, c]``) is a layer named ``FEATURES`` (``"features"``),
  which Grad-CAM and feature extraction use;
* the output layer is named ``"predictions"`` and computes in float32 (mixed precision safe):
  ``sigmoid`` for multi-label, ``softmax`` for multi-class, ``None`` for logits;
* ``weights`` is ``None`` or a local file; nothing is ever downloaded.
"""

from __future__ import annotations

import math

import keras
from keras import layers

from zoo.layers.log_sum_exp_pooling import GlobalLogSumExpPooling2D

MIN_SIZE = 32
FEATURES = "features"
ACTIVATIONS = ("sigmoid", "softmax", None, "linear", "logits")
# "linear" and "logits" are spellings of None that survive the registry, which drops None kwargs
# so that unset CLI flags fall back to a variant's default: get_model(name, activation="logits").


def is_positive_int(value) -> bool:
    """True for an ``int`` >= 1 (``True`` is not a number of filters)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def is_number(value) -> bool:
    """True for an ``int`` or ``float`` that is not a ``bool``."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_positive_int(value, name: str, *, where: str = "") -> int:
    """``value`` if it is a positive integer, else a ValueError naming ``name`` (and ``where``)."""
    if not is_positive_int(value):
        prefix = f"{where}: " if where else ""
        raise ValueError(f"{prefix}{name} must be a positive integer, got {value!r}.")
    return value


def check_choice(value, name: str, choices):
    """``value`` if it is one of ``choices``, else a ValueError listing them."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(str, choices))}, got {value!r}.")
    return value


def check_common(*, input_shape, num_classes, activation, dropout, min_size: int = MIN_SIZE):
    """Validate the keyword arguments every model takes; returns ``input_shape`` as a tuple."""
    try:
        shape = tuple(int(s) for s in input_shape)
    except (TypeError, ValueError):
        raise ValueError(
            f"input_shape must be (height, width, channels) of integers, got {input_shape!r}."
        ) from None
    if len(shape) != 3:
        raise ValueError(f"input_shape must be (height, width, channels), got {input_shape!r}.")
    h, w, c = shape
    if h < min_size or w < min_size:
        raise ValueError(
            f"input_shape {shape} is too small: height and width must be at least {min_size}."
        )
    if c < 1:
        raise ValueError(f"input_shape {shape} needs at least one channel.")
    if not is_positive_int(num_classes):
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}.")
    if activation not in ACTIVATIONS:
        raise ValueError(
            f"activation must be 'sigmoid' (multi-label), 'softmax' (multi-class) or None / "
            f"'logits' (raw scores), got {activation!r}."
        )
    if not 0.0 <= float(dropout) < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}.")
    return shape


POOLINGS = ("avg", "lse", "max")


def image_input(shape):
    """The model input: ``keras.Input(shape)`` named ``image``."""
    return keras.Input(shape, name="image")


def conv(x, filters, kernel, strides=1, *, name):
    """A bias-free "same" convolution with He-normal initialisation (BN follows it)."""
    return layers.Conv2D(
        filters,
        kernel,
        strides=strides,
        padding="same",
        use_bias=False,
        kernel_initializer="he_normal",
        name=name,
    )(x)


def conv_bn_act(
    x,
    filters,
    kernel,
    strides=1,
    *,
    prefix,
    act=layers.ReLU,
    momentum=0.99,
    epsilon=1e-3,
    zero_gamma=False,
):
    """:func:`conv` -> BN -> activation, named ``{prefix}_conv``, ``{prefix}_bn``, ``{prefix}_relu``.

    ``act`` makes the activation layer from its name (default ``layers.ReLU``); ``None`` leaves
    the output linear. ``zero_gamma`` starts the BN scale at zero (a residual branch that begins
    as the identity).
    """
    x = conv(x, filters, kernel, strides, name=f"{prefix}_conv")
    x = layers.BatchNormalization(
        momentum=momentum,
        epsilon=epsilon,
        gamma_initializer="zeros" if zero_gamma else "ones",
        name=f"{prefix}_bn",
    )(x)
    return act(name=f"{prefix}_relu")(x) if act is not None else x


def depthwise_bn_relu(x, strides=1, *, prefix):
    """3x3 depthwise (He-normal, no bias) -> BN -> ReLU: ``{prefix}_dw``, ``_dw_bn``, ``_dw_relu``."""
    x = layers.DepthwiseConv2D(
        3,
        strides=strides,
        padding="same",
        use_bias=False,
        depthwise_initializer="he_normal",
        name=f"{prefix}_dw",
    )(x)
    x = layers.BatchNormalization(name=f"{prefix}_dw_bn")(x)
    return layers.ReLU(name=f"{prefix}_dw_relu")(x)


def check_pooling(pooling, lse_r=5.0):
    """Validate the head's pooling arguments (see :func:`classifier_head`)."""
    if pooling not in POOLINGS:
        raise ValueError(
            f"pooling must be 'avg' (global average of the features), 'lse' (log-sum-exp of a "
            f"class evidence map, for small lesions) or 'max', got {pooling!r}."
        )
    if not (is_number(lse_r) and math.isfinite(lse_r) and lse_r > 0):
        raise ValueError(f"lse_r must be a positive finite number, got {lse_r!r}.")


def classifier_head(
    x, *, num_classes, activation, dropout, pooling="avg", lse_r=5.0, name_prefix="head"
):
    """The classifier on the ``features`` map; the output layer is named ``predictions``.

    * ``pooling="avg"``: GAP -> dropout -> Dense(num_classes) -> activation.
    * ``pooling="lse"`` / ``"max"``: dropout -> 1x1 conv to a class evidence map
      ``head_class_map`` [B, h, w, num_classes] -> log-sum-exp (sharpness ``lse_r``) or max
      over positions -> activation. Same parameter count as the Dense head. A lesion is scored by
      where it is, not diluted by the area around it, and Grad-CAM on ``features`` equals the
      rectified class evidence map (up to its bias).
    """
    check_pooling(pooling, lse_r)
    if pooling == "avg":
        x = layers.GlobalAveragePooling2D(name=f"{name_prefix}_gap")(x)
        if dropout:
            x = layers.Dropout(dropout, name=f"{name_prefix}_dropout")(x)
        x = layers.Dense(num_classes, name=f"{name_prefix}_logits")(x)
        return predictions(x, activation)
    if dropout:
        x = layers.Dropout(dropout, name=f"{name_prefix}_dropout")(x)
    # zero kernel: every position scores the same at the start, so the first steps train like
    # GAP instead of pushing down whichever random position happens to be the maximum
    x = layers.Conv2D(num_classes, 1, kernel_initializer="zeros", name=f"{name_prefix}_class_map")(
        x
    )
    if pooling == "lse":
        x = GlobalLogSumExpPooling2D(lse_r, name=f"{name_prefix}_logits")(x)
    else:
        x = layers.GlobalMaxPooling2D(name=f"{name_prefix}_logits")(x)
    return predictions(x, activation)


def predictions(logits, activation):
    """The output layer: named ``predictions``, float32 whatever the compute policy."""
    if activation in (None, "logits"):
        activation = "linear"
    return layers.Activation(activation, dtype="float32", name="predictions")(logits)


def features(x):
    """Mark ``x`` as the model's last spatial feature map (an identity layer named ``features``)."""
    return layers.Identity(name=FEATURES)(x)


def classifier_model(
    inputs,
    x,
    *,
    name,
    num_classes,
    activation,
    dropout,
    pooling="avg",
    lse_r=5.0,
):
    """The closing sequence of every builder: ``x`` -> ``features`` -> head -> ``keras.Model``.

    The builder then loads its ``weights`` (:func:`zoo.models.weights.load_weights`), which
    lives apart because it reaches the backbone and ImageNet loaders, and those use this module.
    """
    x = features(x)
    outputs = classifier_head(
        x,
        num_classes=num_classes,
        activation=activation,
        dropout=dropout,
        pooling=pooling,
        lse_r=lse_r,
    )
    return keras.Model(inputs, outputs, name=name)

