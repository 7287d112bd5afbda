"""Baselines from keras.applications, rebuilt flat with the zoo's input, head and conventions.

The comparison models the paper models are measured against (``python -m benchmarks.models``):
MobileNetV3-Small/Large, EfficientNet-B0 and DenseNet-121, untouched keras.applications backbones
with the zoo's head on top::

    image [B, H, W, C] in [0, 1]
      -> keras.applications backbone (include_top=False, weights=None, built on `image` itself)
      -> features [B, h, w, c]
      -> GAP -> dropout -> Dense(num_classes) -> predictions

Flat graph: the backbone is built with ``input_tensor=image`` and its output tensor is used
directly, so the returned model holds the backbone's layers themselves (no nested Model); Grad-CAM
and ``model.get_layer(...)`` reach every layer. Layers that keras.applications leaves to Keras'
global name counter (``re_lu_17``, ``rescaling_3``) are renamed ``<family>_<kind>_<k>`` in graph
order, so two builds of the same model have the same layer names.

Input: float32 in [0, 1] with any channel count (1 for grey images, 3 for CT windows). The
keras.applications input preprocessing is neutralised: MobileNetV3 is built with
``include_preprocessing=False``; EfficientNet's ``Rescaling(1/255)`` is set to 1 (its
``Normalization`` layer starts as the identity, mean 0 and variance 1, for any channel count).
ImageNet weights are never downloaded (``weights="imagenet"`` is refused); pass a local
``.weights.h5``/``.keras`` file saved from the same model, or a local keras.applications
``_notop`` ``.h5`` file (ImageNet init under a fresh head, :mod:`zoo.models.imagenet`).
"""

from __future__ import annotations

import re

from keras import layers

from zoo.labels import BINARY
from zoo.models import common
from zoo.models.imagenet import APPLICATIONS
from zoo.models.weights import load_weights
from zoo.recipes import COMPACT_RECIPE
from zoo.registry import register_model

__all__ = ["build_application", "flat_application", "APPLICATIONS"]


def _snake(name: str) -> str:
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def flat_application(arch: str, image, *, prefix: str):
    """Build the keras.applications backbone ``arch`` on the tensor ``image``; return its output.

    The backbone's layers join the caller's graph (no nested Model). Auto-named layers are renamed
    ``{prefix}{kind}_{k}`` so names do not depend on what else the process has built.
    """
    if arch not in APPLICATIONS:
        raise ValueError(f"Unknown backbone {arch!r}; choose one of {', '.join(APPLICATIONS)}.")
    ctor, extra = APPLICATIONS[arch]
    base = ctor()(include_top=False, weights=None, input_tensor=image, **extra)
    counters: dict[str, int] = {}
    for layer in base.layers[1:]:
        kind = _snake(type(layer).__name__)
        if re.fullmatch(rf"{re.escape(kind)}(_\d+)?", layer.name):
            k = counters.get(kind, 0)
            counters[kind] = k + 1
            layer.name = f"{prefix}{kind}_{k}"
        if isinstance(layer, layers.Rescaling) and arch.startswith("efficientnet"):
            # keras' EfficientNet expects 0..255 pixels and divides by 255; zoo inputs are
            # already in [0, 1], so that division would shrink the input 255-fold.
            layer.scale = 1.0
    return base.output


def build_application(
    *,
    arch: str,
    input_shape=(224, 224, 3),
    num_classes: int = 2,
    activation: str | None = "softmax",
    dropout: float = 0.2,
    weights=None,
    name: str | None = None,
):
    """A keras.applications backbone with the zoo head: GAP -> dropout -> Dense -> predictions.

    Args:
        arch: a key of ``APPLICATIONS`` (``"mobilenetv3_small"``, ``"densenet121"``, ...).
        input_shape: (H, W, C), H and W >= 32, any C. Default (224, 224, 3).
        num_classes: outputs. Default 2.
        activation: "sigmoid", "softmax" or None (logits). Default "softmax".
        dropout: before the classifier. Default 0.2.
        weights: None or a local .weights.h5/.keras file from the same model (no downloads).
    Returns:
        a flat functional keras.Model; input "image", last feature map "features" [B, h, w, c].
    """
    shape = common.check_common(
        input_shape=input_shape, num_classes=num_classes, activation=activation, dropout=dropout
    )
    image = common.image_input(shape)
    x = flat_application(arch, image, prefix=f"{arch}_")
    model = common.classifier_model(
        image,
        x,
        name=name or arch,
        num_classes=num_classes,
        activation=activation,
        dropout=dropout,
    )
    return load_weights(model, weights)


def _card(paper: str, doi: str, notes: list[str]) -> dict:
    return {
        "family": "baselines",
        "paper": paper,
        "doi": doi,
        "task": "binary",
        "labels": BINARY,
        "input_shape": (224, 224, 3),
        "feature_layer": common.FEATURES,
        "from_paper": [
            "the backbone, exactly as keras.applications builds it (include_top=False)",
            *notes,
        ],
        "our_reading": [
            "randomly initialised (weights=None); ImageNet weights are never downloaded, but a "
            "local keras.applications '_notop' .h5 file passed as weights= initialises the "
            "backbone under a fresh head (zoo.models.imagenet)",
            "input in [0, 1] fed to the first convolution (keras' 0..255 preprocessing disabled)",
            "zoo head: GAP -> dropout 0.2 -> Dense(num_classes) -> softmax (2 classes by default)",
        ],
    }


MOBILENETV3 = _card(
    "Howard et al., Searching for MobileNetV3, ICCV 2019",
    "10.1109/ICCV.2019.00140",
    ["the paper's 1x1 conv (1024/1280) before the classifier is replaced by the zoo head"],
)
EFFICIENTNET = _card(
    "Tan and Le, EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks, ICML 2019",
    "10.48550/arXiv.1905.11946",
    [],
)
DENSENET = _card(
    "Huang et al., Densely Connected Convolutional Networks, CVPR 2017",
    "10.1109/CVPR.2017.243",
    [],
)
_DEFAULTS = {"input_shape": (224, 224, 3), "num_classes": 2, "activation": "softmax"}


# The one baseline under 1.5 M parameters trains with the compact models' recipe: on BreastMNIST
# the default recipe's 20 epochs stopped it while its validation AUROC still rose.
@register_model(info=MOBILENETV3, arch="mobilenetv3_small", recipe=COMPACT_RECIPE, **_DEFAULTS)
def mobilenetv3_small(**kwargs):
    """MobileNetV3-Small (keras.applications), the reference point of the speed table."""
    return build_application(**kwargs)


@register_model(info=MOBILENETV3, arch="mobilenetv3_large", **_DEFAULTS)
def mobilenetv3_large(**kwargs):
    """MobileNetV3-Large (keras.applications) baseline."""
    return build_application(**kwargs)


@register_model(info=EFFICIENTNET, arch="efficientnet_b0", **_DEFAULTS)
def efficientnet_b0(**kwargs):
    """EfficientNet-B0 (keras.applications) baseline."""
    return build_application(**kwargs)


@register_model(info=DENSENET, arch="densenet121", **_DEFAULTS)
def densenet121(**kwargs):
    """DenseNet-121 (keras.applications) baseline, the CheXNet backbone."""
    return build_application(**kwargs)
