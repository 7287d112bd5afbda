"""CPMID backbones: ResNet-18/34/50 (v1.5) and ViT-Tiny/Small, classifiers and feature extractors.

Zhang et al. (CPMID) pretrain ResNets of several depths and a Vision Transformer on a corpus
assembled from several public medical image datasets, and find that these backbones transfer to
medical classification (and segmentation) better than ImageNet-pretrained or scratch ones. The
zoo gives the same backbones, built flat, for pretraining on your own corpus and fine-tuning.

ResNet v1.5 (``build_resnet``)::

    image [B, H, W, C]
    stem     7x7 conv s2 -> BN -> ReLU -> 3x3 max-pool s2                   /4
    stage1..4  residual blocks, widths 64/128/256/512 (x4 for bottleneck);  /4 /8 /16 /32
             the first block of stages 2-4 strides 2 in its 3x3 conv (v1.5) and projects
             its shortcut with 1x1 conv s2 -> BN
       basic:      3x3 conv -> BN -> ReLU -> 3x3 conv -> BN      (+ shortcut) -> ReLU
       bottleneck: 1x1 -> BN -> ReLU -> 3x3 -> BN -> ReLU -> 1x1 (x4) -> BN (+ shortcut) -> ReLU
    features [B, H/32, W/32, 512 or 2048] -> GAP -> dropout -> Dense -> predictions

ViT (``build_vit``), mean-pooled patch tokens instead of a CLS token::

    image [B, H, W, C]
    patch_embed   conv p x p stride p -> tokens [B, h*w, D]    (h = H // p, w = W // p)
    pos_embed     + learned position embedding [h*w, D] (sized from input_shape)
    block1..L     x + MHA(LN(x));  x + MLP(LN(x))   (MLP: Dense(4D) -> GELU -> Dense(D))
    norm          LN
    features      reshape tokens to the grid [B, h, w, D]  (Grad-CAM works over patches)
    head          GAP (= mean over patch tokens) -> dropout -> Dense -> predictions

As a feature extractor (for pretraining heads, linear probes, retrieval)::

    m = zoo.get_model("resnet50", input_shape=(224, 224, 1))
    extractor = keras.Model(m.input, m.get_layer("features").output)    # [B, 7, 7, 2048]
    pooled = keras.Model(m.input, m.get_layer("head_gap").output)       # [B, 2048]
"""

from __future__ import annotations

from keras import layers

from zoo.labels import BINARY
from zoo.layers.token_position_embedding import TokenPositionEmbedding
from zoo.models import common
from zoo.models.weights import load_weights
from zoo.registry import register_model

__all__ = [
    "build_resnet",
    "build_vit",
    "RESNET_SPECS",
    "VIT_SPECS",
    "TokenPositionEmbedding",
]

# depth -> (block kind, blocks per stage)
RESNET_SPECS = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
}
RESNET_WIDTHS = (64, 128, 256, 512)

# name -> (embedding dim, depth, heads)
VIT_SPECS = {
    "tiny": (192, 12, 3),
    "small": (384, 12, 6),
}


def _relu(name):
    return layers.Activation("relu", name=name)


def _conv_bn(x, filters, kernel, stride, name, *, relu=True, zero_gamma=False):
    return common.conv_bn_act(
        x,
        filters,
        kernel,
        stride,
        prefix=name,
        act=_relu if relu else None,
        epsilon=1e-5,
        zero_gamma=zero_gamma,
    )


def _residual_block(x, kind, width, stride, name):
    out_channels = width * (4 if kind == "bottleneck" else 1)
    shortcut = x
    if stride != 1 or x.shape[-1] != out_channels:
        shortcut = _conv_bn(x, out_channels, 1, stride, f"{name}_shortcut", relu=False)
    if kind == "basic":
        y = _conv_bn(x, width, 3, stride, f"{name}_1")
        y = _conv_bn(y, width, 3, 1, f"{name}_2", relu=False, zero_gamma=True)
    else:
        y = _conv_bn(x, width, 1, 1, f"{name}_1")
        y = _conv_bn(y, width, 3, stride, f"{name}_2")  # v1.5: the stride sits on the 3x3
        y = _conv_bn(y, out_channels, 1, 1, f"{name}_3", relu=False, zero_gamma=True)
    y = layers.Add(name=f"{name}_add")([shortcut, y])
    return layers.Activation("relu", name=f"{name}_out")(y)


def build_resnet(
    *,
    depth: int = 50,
    input_shape=(224, 224, 3),
    num_classes: int = 2,
    activation: str | None = "softmax",
    dropout: float = 0.0,
    weights=None,
    name: str | None = None,
):
    """ResNet v1.5 of ``depth`` 18, 34 or 50, flat, with the zoo head.

    Args:
        depth: 18 or 34 (basic blocks) or 50 (bottleneck blocks). Default 50.
        input_shape: (H, W, C), H and W >= 32, any C. Default (224, 224, 3).
        num_classes: outputs. Default 2.
        activation: "sigmoid", "softmax" or None (logits). Default "softmax".
        dropout: before the classifier. Default 0.0.
        weights: None or a local .weights.h5/.keras file from the same model (no downloads).
    Returns:
        a flat functional keras.Model; input "image", "features" [B, H/32, W/32, 512|2048].
    """
    if depth not in RESNET_SPECS:
        raise ValueError(f"depth must be one of {sorted(RESNET_SPECS)}, got {depth!r}.")
    shape = common.check_common(
        input_shape=input_shape, num_classes=num_classes, activation=activation, dropout=dropout
    )
    kind, blocks = RESNET_SPECS[depth]
    image = common.image_input(shape)
    x = _conv_bn(image, 64, 7, 2, "stem")
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)
    for s, (width, n) in enumerate(zip(RESNET_WIDTHS, blocks), start=1):
        for b in range(1, n + 1):
            stride = 2 if (b == 1 and s > 1) else 1
            x = _residual_block(x, kind, width, stride, f"stage{s}_block{b}")
    model = common.classifier_model(
        image,
        x,
        name=name or f"resnet{depth}",
        num_classes=num_classes,
        activation=activation,
        dropout=dropout,
    )
    return load_weights(model, weights)


def build_vit(
    *,
    size: str = "small",
    patch_size: int = 16,
    input_shape=(224, 224, 3),
    num_classes: int = 2,
    activation: str | None = "softmax",
    dropout: float = 0.0,
    mlp_ratio: int = 4,
    weights=None,
    name: str | None = None,
):
    """Vision Transformer (pre-norm) with mean-pooled patch tokens and a spatial token grid.

    Args:
        size: "tiny" (D=192, 12 blocks, 3 heads) or "small" (D=384, 12 blocks, 6 heads).
        patch_size: square patch side in pixels; H and W must be at least this. Default 16.
            Pixels beyond a multiple of patch_size on the bottom/right are not seen.
        input_shape: (H, W, C), H and W >= 32, any C. Default (224, 224, 3); the position
            embedding has (H // patch_size) * (W // patch_size) rows, so weights transfer
            only between models of the same grid.
        num_classes, activation, dropout, weights: as every zoo model.
        mlp_ratio: MLP hidden width as a multiple of D. Default 4.
    Returns:
        a flat functional keras.Model; input "image", "features" the token grid [B, h, w, D].
    """
    common.check_choice(size, "size", VIT_SPECS)
    shape = common.check_common(
        input_shape=input_shape, num_classes=num_classes, activation=activation, dropout=dropout
    )
    common.check_positive_int(patch_size, "patch_size")
    if shape[0] < patch_size or shape[1] < patch_size:
        raise ValueError(
            f"input_shape {shape} is smaller than one {patch_size}x{patch_size} patch; use a "
            "larger input or a smaller patch_size."
        )
    common.check_positive_int(mlp_ratio, "mlp_ratio")
    dim, depth, heads = VIT_SPECS[size]
    grid_h, grid_w = shape[0] // patch_size, shape[1] // patch_size

    image = common.image_input(shape)
    x = layers.Conv2D(dim, patch_size, strides=patch_size, padding="valid", name="patch_embed")(
        image
    )
    x = layers.Reshape((grid_h * grid_w, dim), name="patch_tokens")(x)
    x = TokenPositionEmbedding(name="pos_embed")(x)
    for i in range(1, depth + 1):
        p = f"block{i}"
        y = layers.LayerNormalization(epsilon=1e-6, name=f"{p}_norm1")(x)
        y = layers.MultiHeadAttention(heads, key_dim=dim // heads, name=f"{p}_attn")(y, y)
        x = layers.Add(name=f"{p}_add1")([x, y])
        y = layers.LayerNormalization(epsilon=1e-6, name=f"{p}_norm2")(x)
        y = layers.Dense(dim * mlp_ratio, activation="gelu", name=f"{p}_mlp_fc1")(y)
        y = layers.Dense(dim, name=f"{p}_mlp_fc2")(y)
        x = layers.Add(name=f"{p}_add2")([x, y])
    x = layers.LayerNormalization(epsilon=1e-6, name="norm")(x)
    x = layers.Reshape((grid_h, grid_w, dim), name="token_grid")(x)
    model = common.classifier_model(
        image,
        x,
        name=name or f"vit_{size}",
        num_classes=num_classes,
        activation=activation,
        dropout=dropout,
    )
    return load_weights(model, weights)


def _card(arch: str, ours: list[str]) -> dict:
    return {
        "family": "cpmid",
        "paper": "Zhang et al., Construction and Validation of a General Medical Image Dataset for "
        "Pretraining (CPMID), Journal of Imaging Informatics in Medicine 38:1051-1061, 2025",
        "doi": "10.1007/s10278-024-01226-3",
        "task": "binary",
        "labels": BINARY,
        "input_shape": (224, 224, 3),
        "feature_layer": common.FEATURES,
        "from_paper": [
            f"{arch} as a backbone pretrained on a corpus of several public medical image "
            "datasets (CPMID) and fine-tuned downstream",
            "finding: CPMID-pretrained ResNet/ViT backbones transfer better than "
            "ImageNet-pretrained or scratch ones on medical classification",
        ],
        "our_reading": [
            *ours,
            "no CPMID weights ship with the zoo (none can be downloaded); pretrain with "
            "train.py on your corpus and pass the file as weights=",
            "zoo head: GAP -> dropout -> Dense(num_classes) -> softmax (2 classes by default)",
        ],
    }


_RESNET_OURS = [
    "ResNet v1.5 (stride on the 3x3 of the first block of each stage), He-normal init",
    "zero-initialised gamma in the last BN of each residual branch (blocks start as identity)",
]
_VIT_OURS = [
    "pre-norm transformer blocks, MLP ratio 4, GELU, patch size 16 (configurable)",
    "mean-pooled patch tokens instead of a CLS token, so the token grid [B, h, w, D] is the "
    "'features' layer and Grad-CAM runs over patches",
    "learned position embedding sized from input_shape (one row per patch)",
]
_DEFAULTS = {"input_shape": (224, 224, 3), "num_classes": 2, "activation": "softmax"}


@register_model(info=_card("ResNet-18", _RESNET_OURS), depth=18, **_DEFAULTS)
def resnet18(**kwargs):
    """ResNet-18 v1.5 (basic blocks 2-2-2-2), a CPMID backbone."""
    return build_resnet(**kwargs)


@register_model(info=_card("ResNet-34", _RESNET_OURS), depth=34, **_DEFAULTS)
def resnet34(**kwargs):
    """ResNet-34 v1.5 (basic blocks 3-4-6-3), a CPMID backbone."""
    return build_resnet(**kwargs)


@register_model(info=_card("ResNet-50", _RESNET_OURS), depth=50, **_DEFAULTS)
def resnet50(**kwargs):
    """ResNet-50 v1.5 (bottleneck blocks 3-4-6-3), a CPMID backbone."""
    return build_resnet(**kwargs)


@register_model(info=_card("ViT-Tiny/16", _VIT_OURS), size="tiny", **_DEFAULTS)
def vit_tiny(**kwargs):
    """ViT-Tiny/16 (D=192, 12 blocks, 3 heads), mean-pooled tokens, a CPMID backbone."""
    return build_vit(**kwargs)


@register_model(info=_card("ViT-Small/16", _VIT_OURS), size="small", **_DEFAULTS)
def vit_small(**kwargs):
    """ViT-Small/16 (D=384, 12 blocks, 6 heads), mean-pooled tokens, a CPMID backbone."""
    return build_vit(**kwargs)
