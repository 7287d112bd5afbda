"""RenseNet: Rense blocks with edge-conservative downsampling, for small lesions on CT.

Spec table -> ``build_rensenet()`` -> registered variants ``rensenet`` and ``rensenet_small``.

Layout (default ``rensenet``, strides relative to the input; ``c`` = running channels)::

    image [B, H, W, C]
    stem          3x3 conv -> BN -> ReLU (stem filters), full resolution          /1
    stem_pool     EdgeConservativePooling 2 -> stem filters                        /2
    stage1        RenseBlock(units[0], growth[0])        c += units[0] * growth[0] /2
    stage1_pool   EdgeConservativePooling 2 -> round(c * compression)              /4
    stage2 ..     RenseBlock, EdgeConservativePooling, ...
    stage4        RenseBlock(units[3], growth[3])  = "features" [B, H/16, W/16, c]
    head          GAP -> dropout -> Dense(num_classes) -> softmax = "predictions"

Every downsampling step is an EdgeConservativePooling (no strided convolution, no plain
pooling; ``downsample=`` and ``block=`` build the ablation twins), so a one-pixel stone survives to the last feature map; four stages end at stride 16
(a 64x64 input gives a 4x4 Grad-CAM grid, 32x32 gives 2x2). Sizes not divisible by two are
edge-padded (``padding="same"``), so any H, W >= 32 works.
"""

from __future__ import annotations

from keras import layers

from zoo.labels import BINARY
from zoo.layers.edge_conservative_pooling import EdgeConservativePooling
from zoo.layers.rense_block import RenseBlock
from zoo.models.common import (
    check_choice,
    check_common,
    classifier_model,
    conv,
    conv_bn_act,
    image_input,
    is_number,
    is_positive_int,
)
from zoo.models.weights import load_weights
from zoo.registry import register_model

__all__ = ["build_rensenet", "RENSENET_SPECS", "DOWNSAMPLES", "BLOCKS", "rensenet",
           "rensenet_small"]

# ablation switches (python -m benchmarks.ablations); the first value is the paper's form
DOWNSAMPLES = ("edge", "avg", "max", "strided")
BLOCKS = ("rense", "dense", "residual")
MAX_STAGES = 5  # stride 2 ** MAX_STAGES = 32: the coarsest last feature map we allow

# name -> stem filters, growth rate per stage, Rense units per stage, transition compression.
# Growth rises with depth (cheap at high resolution, wide where the map is small).
RENSENET_SPECS = {
    "rensenet": {
        "stem": 16,
        "growth_rate": (12, 16, 24, 32),
        "units": (2, 3, 4, 3),
        "compression": 0.5,
    },
    "rensenet_small": {
        "stem": 12,
        "growth_rate": (8, 12, 16, 24),
        "units": (1, 2, 3, 2),
        "compression": 0.5,
    },
}

CARD = {
    "paper": "H. Seo, S. Lee, S. Yun, S. Leem, S. So, D. H. Han: RenseNet: A Deep Learning Network "
    "Incorporating Residual and Dense Blocks with Edge Conservative Module to Improve "
    "Small-Lesion Classification and Model Interpretation. Cancers 16(3):570, 2024.",
    "doi": "10.3390/cancers16030570",
    "task": "binary",
    "labels": BINARY,
    "input_shape": (256, 256, 1),
    "feature_layer": "features",
    "from_paper": [
        "a backbone of Rense blocks that combine residual (additive) and dense (concatenating) "
        "skip connections",
        "an edge conservative module: a compensation path that carries the image detail lost "
        "by pooling and merges it with the pooled features",
        "aimed at small lesions on CT (kidney stones, lung tumours) with Grad-CAM heatmaps for "
        "interpretation",
    ],
    "our_reading": [
        "a Rense unit is two 3x3 conv-BN (ReLU between) plus a 1x1 conv-BN projection shortcut, "
        "added, ReLU, producing growth_rate channels concatenated onto the running feature map",
        "the compensation path is the residual x - nearest_upsample(avgpool2(x)), moved to the "
        "pooled grid losslessly by space-to-depth, concatenated with the pooled map and merged "
        "by a 1x1 conv + BN + ReLU; it also sets the transition width (DenseNet-style "
        "compression 0.5)",
        "a full-resolution 3x3 stem followed by an edge-conservative downsampling, four stages, "
        "last feature map at stride 16 (edge padding for odd sizes)",
        "growth rates, unit counts, widths and He initialisation chosen by us for a compact "
        "CPU-trainable model (~0.3M parameters, ~0.85 GFLOPs at 256x256x1), not the paper's configuration",
        "a GAP -> dropout -> Dense head with two softmax outputs (normal, abnormal)",
        "BatchNorm momentum 0.9 (PyTorch's default) so short runs on small datasets evaluate "
        "with settled statistics",
        "explanation: on the head-CT phantom (python -m benchmarks.explain) Grad-CAM on "
        "features (stride 16) seldom puts its maximum inside the bleed and the best single "
        "earlier layer (stage2 or stage3) changes with the seed; LayerCAM fused over the stage "
        "outputs (python -m zoo.explain --method layercam) is the map to read for localisation; "
        "see the measured pointing game in the model card's results",
        "ablation (python -m benchmarks.ablations at convergence: early stopping, 3 seeds, "
        "rensenet_small; the table is in this card's results and docs/RESULTS.md): the "
        "edge-conservative module lost on real kidney stones a few pixels across at 64 px: a "
        "1x1 conv + average-pooling transition (downsample='avg'), max pooling and a strided "
        "convolution all scored a higher test AUROC with CIs above zero, and the pooling twins "
        "stayed ahead as the stones shrank; on BreastMNIST no difference was shown. Rense blocks showed no difference "
        "from dense-only or residual-only blocks on either set",
        "edge_detail_init (ours): the paper gives no initialisation for the module; with one "
        "He-normal draw over pooled and detail channels (the default) the detail dominates at "
        "the start, and that is what lost on the kidney stones: edge_detail_init='zeros' starts "
        "the detail path switched off and drew level with average pooling on the same stones "
        "(docs/RESULTS.md, 'Do the paper blocks help?'); use it for small lesions",
    ],
}


def _check_spec(stem, growth_rate, units, compression):
    if not is_positive_int(stem):
        raise ValueError(f"build_rensenet: stem must be a positive integer, got {stem!r}.")
    given = units
    try:
        units = tuple(units)
    except TypeError:
        units = None
    if not units or not all(is_positive_int(u) for u in units):
        raise ValueError(
            f"build_rensenet: units must be a non-empty sequence of positive integers (units "
            f"per stage, e.g. (2, 3, 4, 3)), got {given!r}."
        )
    if len(units) > MAX_STAGES:
        raise ValueError(
            f"build_rensenet: at most {MAX_STAGES} stages (last feature map at stride 32), got "
            f"{len(units)} in units={units!r}."
        )
    if not (is_number(compression) and 0.0 < compression <= 1.0):
        raise ValueError(
            f"build_rensenet: compression must be a number in (0, 1], got {compression!r}."
        )
    growth = (growth_rate,) * len(units) if is_positive_int(growth_rate) else growth_rate
    try:
        growth = tuple(growth)
    except TypeError:
        growth = None
    if not growth or len(growth) != len(units) or not all(is_positive_int(g) for g in growth):
        raise ValueError(
            f"build_rensenet: growth_rate must be a positive integer or one positive integer per "
            f"stage ({len(units)} for units={units!r}), got {growth_rate!r}."
        )
    return units, growth


def _downsample(x, filters, kind, momentum, name, detail_init=None):
    """One downsampling step by 2 to ``filters`` channels; its output layer is named ``name``."""
    if kind == "edge":
        return EdgeConservativePooling(filters=filters, momentum=momentum, detail_init=detail_init,
                                       name=name)(x)
    if kind == "strided":
        x = conv(x, filters, 3, 2, name=f"{name}_conv")
        x = layers.BatchNormalization(momentum=momentum, name=f"{name}_bn")(x)
        return layers.ReLU(name=name)(x)
    x = conv_bn_act(x, filters, 1, prefix=name, momentum=momentum)
    pool = layers.AveragePooling2D if kind == "avg" else layers.MaxPooling2D
    return pool(2, padding="same", name=name)(x)


def build_rensenet(
    *,
    input_shape=(256, 256, 1),
    num_classes=len(BINARY),
    activation="softmax",
    dropout=0.2,
    weights=None,
    stem=RENSENET_SPECS["rensenet"]["stem"],
    growth_rate=RENSENET_SPECS["rensenet"]["growth_rate"],
    units=RENSENET_SPECS["rensenet"]["units"],
    compression=RENSENET_SPECS["rensenet"]["compression"],
    bn_momentum=0.9,
    pooling="avg",
    lse_r=5.0,
    downsample="edge",
    edge_detail_init=None,
    block="rense",
    name="rensenet",
):
    """Build a RenseNet as a flat functional model.

    Args:
        input_shape: (H, W, C), H and W >= 32; default (256, 256, 1) for one CT window.
        num_classes: outputs; default 2 (``zoo.labels.BINARY``: normal, abnormal).
        activation: "softmax" (default), "sigmoid" or None (logits).
        dropout: dropout rate before the classifier, in [0, 1).
        weights: None or a local ``.weights.h5`` / ``.keras`` file.
        stem: filters of the full-resolution 3x3 stem and of the first downsampling.
        growth_rate: channels each Rense unit adds; one int for every stage or one per stage.
        units: Rense units per stage (1 to 5 stages); each stage but the last is followed by
            an EdgeConservativePooling, so the last feature map is at stride 2 ** len(units).
        compression: a transition keeps ``round(channels * compression)`` channels.
        bn_momentum: momentum of every BatchNorm (default 0.9, PyTorch's 0.1: the moving
            statistics settle within a few hundred steps, which small datasets need).
        pooling, lse_r: the head (:func:`zoo.models.common.classifier_head`): "avg" (GAP,
            default) or "lse" / "max" over a class evidence map.
        downsample: ablation switch for every downsampling step (the stem's and each
            transition), each giving the same width at the same grid; the layer that gives the
            step's output keeps the name ``stem_pool`` / ``stage{s}_pool``:

            * ``"edge"`` (default, the paper): ``EdgeConservativePooling``;
            * ``"avg"`` / ``"max"``: 1x1 conv -> BN -> ReLU, then 2x2 average / max pooling
              (a DenseNet transition);
            * ``"strided"``: 3x3 conv stride 2 -> BN -> ReLU.
        edge_detail_init: ``EdgeConservativePooling(detail_init=)`` of every edge step: None
            (default, one initialiser for the whole merge kernel) or ``"zeros"`` (the detail
            path starts switched off); refused with another ``downsample``.
        block: ablation switch for the blocks' skip connections (``RenseBlock(connection=)``),
            same widths: ``"rense"`` (default, the paper: residual + dense), ``"dense"``
            (concatenation only) or ``"residual"`` (addition only). Blocks are named
            ``stage{s}_{block}``.
        name: the model name.

    Returns:
        ``keras.Model`` from ``image`` [B, H, W, C] to ``predictions`` [B, num_classes]; the
        layer ``features`` is the last spatial map [B, ceil(H / s), ceil(W / s), c] with
        s = 2 ** len(units).
    """
    shape = check_common(
        input_shape=input_shape, num_classes=num_classes, activation=activation, dropout=dropout
    )
    units, growth = _check_spec(stem, growth_rate, units, compression)
    if not (is_number(bn_momentum) and 0.0 <= bn_momentum < 1.0):
        raise ValueError(f"build_rensenet: bn_momentum must be in [0, 1), got {bn_momentum!r}.")
    check_choice(downsample, "build_rensenet: downsample", DOWNSAMPLES)
    check_choice(block, "build_rensenet: block", BLOCKS)
    if edge_detail_init is not None and downsample != "edge":
        raise ValueError(f"build_rensenet: edge_detail_init applies to downsample='edge' only, "
                         f"got downsample={downsample!r}; leave edge_detail_init at None.")
    inputs = image_input(shape)
    x = conv_bn_act(inputs, stem, 3, prefix="stem", momentum=bn_momentum)
    x = _downsample(x, stem, downsample, bn_momentum, "stem_pool", edge_detail_init)
    channels = stem
    for s, (n, g) in enumerate(zip(units, growth), start=1):
        x = RenseBlock(n, g, momentum=bn_momentum, connection=block, name=f"stage{s}_{block}")(x)
        channels += n * g
        if s < len(units):
            channels = max(1, round(channels * compression))
            x = _downsample(x, channels, downsample, bn_momentum, f"stage{s}_pool", edge_detail_init)
    model = classifier_model(
        inputs,
        x,
        name=name,
        num_classes=num_classes,
        activation=activation,
        dropout=dropout,
        pooling=pooling,
        lse_r=lse_r,
    )
    return load_weights(model, weights)


@register_model(info=CARD, **RENSENET_SPECS["rensenet"])
def rensenet(**kwargs):
    """RenseNet (~0.3M parameters): Rense blocks, edge-conservative pooling, binary softmax."""
    return build_rensenet(**kwargs)


@register_model(
    info={
        **CARD,
        "our_reading": [
            *CARD["our_reading"],
            "rensenet_small: stem 12, growth (8, 12, 16, 24), units (1, 2, 3, 2)",
        ],
    },
    name="rensenet_small",
    **RENSENET_SPECS["rensenet_small"],
)
def rensenet_small(**kwargs):
    """RenseNet-small (~80k parameters): narrower growth, fewer units, same layout as rensenet."""
    return build_rensenet(**kwargs)
