"""ImageNet initialisation from a local keras.applications weights file (never downloaded).

    zoo.get_model("efficientnet_b0", weights="efficientnetb0_notop.h5", num_classes=3,
                  input_shape=(64, 64, 1))

A keras.applications weights file is the legacy Keras HDF5 format (``*.h5``, not
``*.weights.h5``) that ``keras.applications.<Arch>(weights=...)`` downloads and caches
(``~/.keras/models/``); the ``_notop`` files hold the backbone without the ImageNet classifier.
:func:`is_applications_file` recognises one, and :func:`load_imagenet` loads it under the zoo's
fresh head:

* the baselines (``mobilenetv3_small/large``, ``efficientnet_b0..b3``, ``densenet121``) are
  keras.applications models: a reference model is built by the same constructor (3 channels,
  the model's size), the file is loaded into it by keras, and its weighted layers are copied
  one by one, in graph order, into the model's backbone (shapes checked);
* ``resnet50`` is the zoo's own ResNet-50 (:mod:`zoo.models.cpmid`), whose layers correspond to
  keras' ``ResNet50`` by name (``conv{s+1}_block{b}_{i}_conv`` -> ``stage{s}_block{b}_{i}_conv``,
  ``_0_`` -> ``shortcut``). keras' convolutions carry a bias before their BatchNorm and ours
  do not; the bias is folded exactly into the BatchNorm's moving mean (BN(conv + b) with mean
  m equals BN(conv) with mean m - b). Three differences remain, our reading: the zoo's ResNet
  is v1.5 (a first block strides on its 3x3 convolution; keras' v1 strides on the first 1x1,
  same kernel shapes), the zoo's BatchNorm epsilon is 1e-3 against keras' 1.001e-5, and the
  zoo's 7x7 stem uses "same" padding where keras pads 3 pixels and convolves "valid". The
  weights are ImageNet's; the features are close to keras', not equal, so fine-tune.

A different channel count adapts the first convolution as a ``--pretrain`` backbone does
(:func:`zoo.models.backbone.adapt_input_kernel`: sum for 1 channel). Other architectures have no
keras.applications file: one sentence says so. No function here downloads anything.
"""

from __future__ import annotations

import os
import re

import keras
import numpy as np

from zoo.models.backbone import adapt_input_kernel, backbone_layers
from zoo.models.weightfile import WeightsFileError, check_declared_size, check_finite, open_h5

__all__ = ["APPLICATIONS", "ARCHITECTURES", "is_applications_file", "load_imagenet",
           "ImageNetError"]

# name -> (keras.applications constructor (looked up lazily), extra constructor kwargs): the
# baselines (zoo.models.baselines) are built from these, and a reference model for an ImageNet
# file is built by the same constructor
APPLICATIONS = {
    "mobilenetv3_small": (
        lambda: keras.applications.MobileNetV3Small,
        {"include_preprocessing": False, "minimalistic": False},
    ),
    "mobilenetv3_large": (
        lambda: keras.applications.MobileNetV3Large,
        {"include_preprocessing": False, "minimalistic": False},
    ),
    "efficientnet_b0": (lambda: keras.applications.EfficientNetB0, {}),
    "efficientnet_b1": (lambda: keras.applications.EfficientNetB1, {}),
    "efficientnet_b2": (lambda: keras.applications.EfficientNetB2, {}),
    "efficientnet_b3": (lambda: keras.applications.EfficientNetB3, {}),
    "densenet121": (lambda: keras.applications.DenseNet121, {}),
}

# the registered models a keras.applications file can initialise
ARCHITECTURES = ("resnet50", "mobilenetv3_small", "mobilenetv3_large", "efficientnet_b0",
                 "efficientnet_b1", "efficientnet_b2", "efficientnet_b3", "densenet121")


class ImageNetError(WeightsFileError):
    """A keras.applications file that cannot initialise the model (one sentence)."""


def is_applications_file(path) -> bool:
    """True for a legacy Keras HDF5 weights file (``*.h5`` with ``layer_names``), the format of
    the keras.applications downloads; False for Keras 3 ``.weights.h5`` and anything else."""
    path = os.fspath(path)
    if not path.endswith((".h5", ".hdf5")) or path.endswith(".weights.h5"):
        return False
    try:
        import h5py

        with h5py.File(path, "r") as f:
            return "layer_names" in f.attrs
    except (OSError, ValueError):
        return False


def _weighted(layers) -> list:
    return [layer for layer in layers if layer.weights]


def load_imagenet(model, arch: str, path):
    """Load the keras.applications file ``path`` into the backbone of ``model`` (a zoo model
    of architecture ``arch``); the head stays fresh. Returns the model."""
    path = os.fspath(path)
    if arch not in ARCHITECTURES:
        raise ImageNetError(
            f"{path!r} is a keras.applications weights file, but {arch} has no keras.applications "
            f"counterpart; ImageNet files fit {', '.join(ARCHITECTURES)}.")
    height, width, channels = model.input.shape[1:]
    reference = _reference(arch, (height, width, 3))
    with open_h5(path, "ImageNet weights file", ImageNetError) as f:  # sizes before keras reads
        check_declared_size(f, path, 2 * _nbytes(reference) + 2**20, ImageNetError)
    try:
        reference.load_weights(path)
    except Exception as err:  # keras raises ValueError / KeyError / OSError on a foreign file
        raise ImageNetError(
            f"{path!r} does not load into keras.applications' {arch} without its top "
            f"({type(err).__name__}); pass the '_notop' file of that architecture.") from None
    targets = _weighted(backbone_layers(model))
    if arch == "resnet50":
        pairs = _resnet50_pairs(reference, targets)
    else:
        sources = _weighted(reference.layers)
        if len(sources) != len(targets):
            raise ImageNetError(
                f"keras.applications' {arch} has {len(sources)} weighted layers but the zoo's has "
                f"{len(targets)}; the keras version that built the file differs.")
        pairs = [(src, dst, src.get_weights()) for src, dst in zip(sources, targets)]
    first = True
    for src, dst, values in pairs:
        current = dst.get_weights()
        if first and values and values[0].ndim == 4 and values[0].shape[2] != current[0].shape[2]:
            values = [adapt_input_kernel(values[0], int(channels)), *values[1:]]
        first = False
        check_finite(values, path, f"keras' layer {src.name!r}", ImageNetError)
        shapes = [tuple(v.shape) for v in values]
        if shapes != [tuple(w.shape) for w in current]:
            raise ImageNetError(
                f"Layer {dst.name!r} of {model.name} has weights of shapes "
                f"{[tuple(w.shape) for w in current]} but keras' {src.name!r} has {shapes}.")
        dst.set_weights([v.astype(w.dtype) for v, w in zip(values, current)])
    return model


def _nbytes(model) -> int:
    """Bytes of ``model``'s weights as float64 (the most a file of them may declare, halved)."""
    return sum(int(np.prod(w.shape)) * 8 for w in model.weights)


def _reference(arch: str, shape):
    if arch == "resnet50":
        return keras.applications.ResNet50(include_top=False, weights=None, input_shape=shape)
    ctor, extra = APPLICATIONS[arch]
    return ctor()(include_top=False, weights=None, input_shape=shape, **extra)


def _resnet50_pairs(reference, targets) -> list:
    """(keras layer, zoo layer, values) for ResNet-50, the conv biases folded into the BNs."""
    by_name = {layer.name: layer for layer in _weighted(reference.layers)}

    def keras_name(ours: str) -> str:
        if ours.startswith("stem_"):
            return "conv1_" + ours[len("stem_"):]
        m = re.fullmatch(r"stage(\d+)_block(\d+)_(\w+?)_(conv|bn)", ours)
        if not m:
            raise ImageNetError(f"The zoo's resnet50 layer {ours!r} has no counterpart in keras' ResNet50.")
        part = "0" if m.group(3) == "shortcut" else m.group(3)
        return f"conv{int(m.group(1)) + 1}_block{m.group(2)}_{part}_{m.group(4)}"

    pairs, biases = [], {}
    for dst in targets:
        name = keras_name(dst.name)
        src = by_name.get(name)
        if src is None:
            raise ImageNetError(f"keras' ResNet50 has no layer {name!r} for the zoo's {dst.name!r}.")
        values = src.get_weights()
        if name.endswith("_conv"):
            biases[name[: -len("_conv")]] = values[1] if len(values) > 1 else None
            values = values[:1]
        else:  # BN after a biased conv: gamma, beta, moving mean - bias, moving variance
            bias = biases.get(name[: -len("_bn")])
            if bias is not None:
                values = [values[0], values[1], values[2] - bias, values[3]]
        pairs.append((src, dst, [np.asarray(v) for v in values]))
    if len(pairs) != len(by_name):
        raise ImageNetError(f"keras' ResNet50 has {len(by_name)} weighted layers but the zoo's "
                            f"backbone {len(pairs)}.")
    return pairs
