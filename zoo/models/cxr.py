"""EfficientNet multi-label chest X-ray classifiers (ChestX-ray14, 14 findings).

Spec table -> ``build_cxr_efficientnet()`` -> variants ``cxr_efficientnet_b0`` ... ``_b3``::

    image [B, H, W, C] in [0, 1]        default (224, 224, 1): radiographs are grey
      -> EfficientNet-Bn backbone (keras.applications, include_top=False, weights=None,
         built flat on `image`)
      -> features [B, H/32, W/32, 1280..1536]
      -> GlobalAveragePooling2D                     cxr_head_gap
      -> Dense(head_units, no bias)                 cxr_head_dense
      -> BatchNormalization -> ReLU                 cxr_head_bn, cxr_head_relu
      -> Dropout(dropout)                           cxr_head_dropout
      -> Dense(num_classes) -> sigmoid              cxr_head_logits, predictions
         (14 outputs in zoo.labels.CXR14 order)

Channels: keras' EfficientNet normalises with an adaptable ``Normalization`` layer that is built
for whatever channel count arrives and starts as the identity (mean 0, variance 1); the
ImageNet RGB mean/std are only used when keras loads ImageNet weights, which the zoo never does.
So 1-channel radiographs go straight in: no grey-to-RGB tiling, no 3x first-convolution cost.
keras' ``Rescaling(1/255)`` is neutralised because zoo inputs are already in [0, 1]
(see :func:`zoo.models.baselines.flat_application`).

Feature extraction: ``keras.Model(m.input, m.get_layer("features").output)``.
"""

from __future__ import annotations

import keras
from keras import layers

from zoo.labels import CXR14
from zoo.models import common
from zoo.models.baselines import flat_application
from zoo.models.weights import load_weights
from zoo.registry import register_model

__all__ = ["build_cxr_efficientnet", "CXR_SPECS"]

# variant -> (keras.applications backbone, native resolution of that EfficientNet scale)
CXR_SPECS = {
    "b0": ("efficientnet_b0", 224),
    "b1": ("efficientnet_b1", 240),
    "b2": ("efficientnet_b2", 260),
    "b3": ("efficientnet_b3", 300),
}


def build_cxr_efficientnet(
    *,
    variant: str = "b0",
    input_shape=(224, 224, 1),
    num_classes: int = len(CXR14),
    activation: str | None = "sigmoid",
    dropout: float = 0.2,
    head_units: int = 512,
    weights=None,
    name: str | None = None,
):
    """EfficientNet-Bn -> GAP -> Dense -> BN -> 14 sigmoid outputs (ChestX-ray14 order).

    Args:
        variant: "b0", "b1", "b2" or "b3". Default "b0".
        input_shape: (H, W, C), H and W >= 32, any C. Default (224, 224, 1).
        num_classes: outputs. Default 14 (zoo.labels.CXR14).
        activation: "sigmoid" (multi-label), "softmax" or None (logits). Default "sigmoid".
        dropout: between the BN'd hidden layer and the classifier. Default 0.2.
        head_units: width of the Dense -> BN hidden layer. Default 512.
        weights: None or a local .weights.h5/.keras file from the same model (no downloads).
    Returns:
        a flat functional keras.Model; input "image", last feature map "features".
    """
    common.check_choice(variant, "variant", CXR_SPECS)
    common.check_positive_int(head_units, "head_units")
    shape = common.check_common(
        input_shape=input_shape, num_classes=num_classes, activation=activation, dropout=dropout
    )
    arch, _ = CXR_SPECS[variant]
    image = common.image_input(shape)
    x = flat_application(arch, image, prefix=f"{arch}_")
    x = common.features(x)
    x = layers.GlobalAveragePooling2D(name="cxr_head_gap")(x)
    x = layers.Dense(head_units, use_bias=False, name="cxr_head_dense")(x)
    x = layers.BatchNormalization(name="cxr_head_bn")(x)
    x = layers.Activation("relu", name="cxr_head_relu")(x)
    if dropout:
        x = layers.Dropout(dropout, name="cxr_head_dropout")(x)
    x = layers.Dense(num_classes, name="cxr_head_logits")(x)
    out = common.predictions(x, activation)
    model = keras.Model(image, out, name=name or f"cxr_efficientnet_{variant}")
    return load_weights(model, weights)


def _card(variant: str) -> dict:
    return {
        "family": "cxr",
        "paper": "Ucan et al., Comparison of EfficientNet CNN models for multi-label chest X-ray "
        "disease diagnosis, PeerJ Computer Science 11:e2968, 2025",
        "doi": "10.7717/peerj-cs.2968",
        "task": "multi-label",
        "labels": CXR14,
        "input_shape": (CXR_SPECS[variant][1], CXR_SPECS[variant][1], 1),
        "feature_layer": common.FEATURES,
        "from_paper": [
            f"EfficientNet-{variant.upper()} backbone (the paper compares B0-B7 on ChestX-ray14)",
            "head: global average pooling -> dense -> batch normalisation -> 14 sigmoid outputs",
            "multi-label: one independent sigmoid per ChestX-ray14 finding",
        ],
        "our_reading": [
            f"hidden dense width 512 without bias, ReLU after the BN, dropout 0.2 before a "
            f"Dense(14) + sigmoid; default input {CXR_SPECS[variant][1]}px (EfficientNet's native "
            "resolution for this scale) with one grey channel",
            "randomly initialised (the paper starts from ImageNet; the zoo never downloads); "
            "keras' ImageNet normalisation is not applied, inputs in [0, 1] go straight in",
            "the paper's coordinate-attention variant is not included",
        ],
    }


def _defaults(variant: str) -> dict:
    size = CXR_SPECS[variant][1]
    return {"variant": variant, "input_shape": (size, size, 1)}


@register_model(info=_card("b0"), **_defaults("b0"))
def cxr_efficientnet_b0(**kwargs):
    """EfficientNet-B0 multi-label chest X-ray classifier (14 ChestX-ray14 findings)."""
    return build_cxr_efficientnet(**kwargs)


@register_model(info=_card("b1"), **_defaults("b1"))
def cxr_efficientnet_b1(**kwargs):
    """EfficientNet-B1 multi-label chest X-ray classifier (14 ChestX-ray14 findings)."""
    return build_cxr_efficientnet(**kwargs)


@register_model(info=_card("b2"), **_defaults("b2"))
def cxr_efficientnet_b2(**kwargs):
    """EfficientNet-B2 multi-label chest X-ray classifier (14 ChestX-ray14 findings)."""
    return build_cxr_efficientnet(**kwargs)


@register_model(info=_card("b3"), **_defaults("b3"))
def cxr_efficientnet_b3(**kwargs):
    """EfficientNet-B3 multi-label chest X-ray classifier (14 ChestX-ray14 findings)."""
    return build_cxr_efficientnet(**kwargs)
