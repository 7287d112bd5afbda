"""ICHNet: a tiny intracranial-haemorrhage classifier of multi-receptive-field blocks.

Spec table -> ``build_ichnet()`` -> registered variants ``ichnet`` and ``ichnet_small``.

Layout (default ``ichnet``, strides relative to the input)::

    image [B, H, W, C]
    stem        3x3 conv s2 -> BN -> ReLU                                  /2
    stage1      MultiReceptiveFieldBlock x depths[0]                       /2
    stage2..4   down: 3x3 DW s2 -> BN -> ReLU -> 1x1 -> BN -> ReLU,        /4 ... /16
                then MultiReceptiveFieldBlock x depths[i]
    stage5      down at stride 1, blocks dilated x2 (output_stride=16)     /16
                (output_stride=32: stride 2 and plain dilations)           (/32)
    head        1x1 conv -> BN -> ReLU  = "features" [B, H/16, W/16, head_filters]
                GAP -> dropout -> Dense(num_classes) -> sigmoid = "predictions"

Every MultiReceptiveFieldBlock has three depthwise 3x3 branches dilated 1, 2, 3
(receptive fields 3, 5, 7) fused by a pointwise convolution, with an identity residual.
"""

from __future__ import annotations

from zoo.labels import RSNA_ICH
from zoo.layers.multi_receptive_field_block import MultiReceptiveFieldBlock
from zoo.models.common import (
    check_choice,
    check_common,
    classifier_model,
    conv_bn_act,
    depthwise_bn_relu,
    image_input,
    is_positive_int,
)
from zoo.models.weights import load_weights
from zoo.recipes import ICHNET_RECIPE
from zoo.registry import register_model

__all__ = ["build_ichnet", "ICHNET_SPECS", "RECEPTIVE_FIELDS", "ichnet", "ichnet_small"]

# ablation switch (python -m benchmarks.ablations); the first value is the paper's form
RECEPTIVE_FIELDS = ("multi", "single")

# name -> stem filters, per-stage (filters, blocks), head filters. Stage 1 runs at /2, each
# later stage first halves the resolution, so five stages end at /32.
ICHNET_SPECS = {
    "ichnet": {
        "stem": 16,
        "stages": ((16, 1), (24, 1), (40, 2), (64, 2), (96, 2)),
        "head": 192,
    },
    "ichnet_small": {
        "stem": 12,
        "stages": ((12, 1), (16, 1), (24, 1), (40, 2), (64, 1)),
        "head": 128,
    },
}

CARD = {
    "paper": "An efficient intracranial-haemorrhage classifier built from depthwise-separable "
    "convolutions and a multi-receptive-field block (RSNA Intracranial Hemorrhage Detection).",
    "doi": None,
    "task": "multi-label",
    "labels": RSNA_ICH,
    "input_shape": (256, 256, 3),
    "feature_layer": "features",
    "from_paper": [
        "depthwise-separable convolutions throughout for a very small parameter count",
        "a multi-receptive-field block: parallel branches with different receptive fields "
        "over the same input, fused into one feature map",
        "six sigmoid outputs for the RSNA subtypes (any, epidural, intraparenchymal, "
        "intraventricular, subarachnoid, subdural) on three-window CT slices",
    ],
    "our_reading": [
        "branches are 3x3 depthwise convolutions dilated 1, 2, 3, each with BN + ReLU, "
        "concatenated and fused by a 1x1 convolution + BN with a linear output",
        "an identity residual around each block whose input and output shapes agree",
        "downsampling by 3x3 depthwise (stride 2) + 1x1 convolution between stages; the last "
        "stage keeps stride 16 and doubles its dilations (output_stride=16, DeepLab-style) so "
        "Grad-CAM maps are 16x16 at 256 px; output_stride=32 gives the plain stride-32 layout",
        "small inputs: ichnet's training recipe (zoo.recipes.ICHNET_RECIPE) trains, pretrains "
        "and fine-tunes it at output_stride=8 up to 64 px (8x8 features at 64 px rather than "
        "4x4; the shipped 64 px medical backbone too); measured on BreastMNIST, RetinaMNIST and "
        "PneumoniaMNIST (docs/RESULTS.md), not a claim of the paper, which trains at 256 px",
        "stage widths, depths, the 1x1 head convolution and He initialisation were chosen by us "
        "to stay under 3% of MobileNetV3-Large's parameters",
        "a GAP head; pooling='lse' (log-sum-exp over a class evidence map) is an option. On "
        "the head-CT phantom LSE raised the last-layer Grad-CAM hit rate in one configuration "
        "but not in others and left the subtype AUROCs lower, so GAP stays the default (the "
        "figures are in the model card's measured results, pooling=lse)",
        "explanation: on the head-CT phantom (python -m benchmarks.explain) Grad-CAM on features "
        "seldom puts its maximum inside the bleed (the dilated last stages see the whole slice, "
        "so the evidence is spread); LayerCAM fused over the stage outputs (python -m "
        "zoo.explain --method layercam) is the map to read for localisation; see the measured "
        "pointing game in the model card's results",
        "ablation twin: receptive_field='single' keeps one undilated branch per block, same "
        "widths (python -m benchmarks.ablations); at convergence (early stopping, 3 seeds, "
        "ichnet_small) on real 4 px kidney stones at 64 px no difference was shown, and the "
        "twin is about half the parameters; the figures are in docs/RESULTS.md and this "
        "card's results",
    ],
}


def _check_spec(name, stem, stages, head):
    ok = is_positive_int(stem) and is_positive_int(head) and len(stages) >= 1
    ok = ok and all(len(s) == 2 and is_positive_int(s[0]) and is_positive_int(s[1]) for s in stages)
    if not ok:
        raise ValueError(
            f"{name}: stem and head must be positive integers and stages a non-empty list of "
            f"(filters, blocks) pairs of positive integers, got stem={stem!r}, "
            f"stages={stages!r}, head={head!r}."
        )


def _separable_down(x, filters, prefix, strides=2):
    """3x3 depthwise (stride 2, or 1 past the output stride) -> BN -> ReLU -> 1x1 -> BN -> ReLU."""
    x = depthwise_bn_relu(x, strides, prefix=prefix)
    return conv_bn_act(x, filters, 1, prefix=f"{prefix}_pw")


def _check_layout(stem, stages, head, output_stride):
    """The spec and the output stride: one sentence naming the bad value."""
    _check_spec("build_ichnet", stem, stages, head)
    if len(stages) > 5:
        raise ValueError(
            f"build_ichnet: at most 5 stages (total stride 32, so 32x32 inputs still work), "
            f"got {len(stages)}."
        )
    if output_stride not in (8, 16, 32):
        raise ValueError(f"build_ichnet: output_stride must be 8, 16 or 32, got {output_stride!r}.")


def _block_options(receptive_field, dilations, kernel_sizes, merge) -> dict:
    """The block of every stage: ``name`` (``mrf`` or ``single``), ``dilations``,
    ``kernel_sizes`` and ``merge``. ``"single"`` is one undilated 3x3 branch, so it refuses
    branch options other than the defaults."""
    check_choice(receptive_field, "build_ichnet: receptive_field", RECEPTIVE_FIELDS)
    if receptive_field == "single":
        given = {"dilations": (dilations, (1, 2, 3)), "kernel_sizes": (kernel_sizes, (3,)),
                 "merge": (merge, ("concat",))}  # fmt: skip
        for arg, (value, default) in given.items():
            if (tuple(value) if isinstance(value, (tuple, list)) else (value,)) != default:
                raise ValueError(
                    f"build_ichnet: {arg}={value!r} shapes the branches of the multi-receptive-"
                    f"field block, so it makes no sense with receptive_field='single' (one 3x3 "
                    f"branch); drop {arg} or use receptive_field='multi'."
                )
        dilations, kernel_sizes, merge = 1, 3, "concat"
    name = "mrf" if receptive_field == "multi" else "single"
    return {"name": name, "dilations": dilations, "kernel_sizes": kernel_sizes, "merge": merge}


def _stages(x, stages, block, *, output_stride, dilate_past_stride):
    """Stage 1 at /2, then each stage halves the resolution (a separable "down" convolution)
    until ``output_stride``; past it the down convolution keeps stride 1 and the blocks'
    dilations grow instead. Blocks are named ``stage{s}_{block name}{b}``."""
    dilations = block["dilations"]
    stride, rate = 2, 1
    for s, (filters, blocks) in enumerate(stages, start=1):
        if s > 1:
            step = 2 if stride * 2 <= output_stride else 1
            stride = stride * step
            rate = rate * (2 // step) if dilate_past_stride else 1
            x = _separable_down(x, filters, f"stage{s}_down", strides=step)
        for b in range(1, blocks + 1):
            x = MultiReceptiveFieldBlock(
                filters,
                dilations=tuple(d * rate for d in dilations)
                if isinstance(dilations, (tuple, list))
                else dilations * rate,
                kernel_sizes=block["kernel_sizes"],
                merge=block["merge"],
                name=f"stage{s}_{block['name']}{b}",
            )(x)
    return x


def build_ichnet(
    *,
    input_shape=(256, 256, 3),
    num_classes=len(RSNA_ICH),
    activation="sigmoid",
    dropout=0.2,
    weights=None,
    stem=16,
    stages=ICHNET_SPECS["ichnet"]["stages"],
    head=192,
    dilations=(1, 2, 3),
    kernel_sizes=3,
    merge="concat",
    output_stride=16,
    dilate_past_stride=True,
    pooling="avg",
    lse_r=5.0,
    receptive_field="multi",
    name="ichnet",
):
    """Build an ICHNet as a flat functional model.

    Args:
        input_shape: (H, W, C), H and W >= 32; default (256, 256, 3) for three CT windows.
        num_classes: outputs; default 6 (``zoo.labels.RSNA_ICH`` order).
        activation: "sigmoid" (multi-label, default), "softmax" or None (logits).
        dropout: dropout rate before the classifier, in [0, 1).
        weights: None or a local ``.weights.h5`` / ``.keras`` file.
        stem: filters of the stride-2 stem convolution.
        stages: ``((filters, blocks), ...)``; every stage after the first halves the
            resolution with a depthwise-separable convolution.
        head: filters of the 1x1 convolution that gives the ``features`` layer.
        dilations, kernel_sizes, merge: passed to every ``MultiReceptiveFieldBlock``.
        output_stride: 16 (default), 8 or 32: the stride of ``features``. Stages that would go
            past it keep the resolution (stride-1 "down" convolution) and multiply their
            blocks' dilations instead, as in DeepLab, so the receptive field still grows. Stride
            16 doubles the resolution of Grad-CAM maps for ~25% more FLOPs and no parameters.
        dilate_past_stride: multiply the dilations past ``output_stride`` (default True);
            False keeps the blocks' own ``dilations`` there.
        pooling, lse_r: the head (:func:`zoo.models.common.classifier_head`): "avg" (GAP,
            default) or "lse" / "max" over a class evidence map. Measured on the head-CT
            phantom (``python -m benchmarks.explain --pooling lse``), LSE pooling makes the
            last-layer Grad-CAM less diffuse but trains the subtypes more slowly; see the card.
        receptive_field: ablation switch: ``"multi"`` (default, the paper: the
            multi-receptive-field blocks, ``stage{s}_mrf{b}``) or ``"single"``: one undilated
            3x3 depthwise branch per block (dilated only past ``output_stride``, as the multi
            blocks are), same widths and fusion, named ``stage{s}_single{b}``. ``dilations``,
            ``kernel_sizes`` and ``merge`` shape the branches, so "single" refuses them.
        name: the model name.

    Returns:
        ``keras.Model`` from ``image`` [B, H, W, C] to ``predictions`` [B, num_classes];
        the layer ``features`` is the last spatial map [B, ~H/s, ~W/s, head] with
        s = min(2^len(stages), output_stride).
    """
    shape = check_common(
        input_shape=input_shape, num_classes=num_classes, activation=activation, dropout=dropout
    )
    stages = tuple(tuple(s) for s in stages)
    _check_layout(stem, stages, head, output_stride)
    block = _block_options(receptive_field, dilations, kernel_sizes, merge)
    inputs = image_input(shape)
    x = conv_bn_act(inputs, stem, 3, 2, prefix="stem")
    x = _stages(x, stages, block, output_stride=output_stride,
                dilate_past_stride=dilate_past_stride)
    x = conv_bn_act(x, head, 1, prefix="head")
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


@register_model(info=CARD, recipe=ICHNET_RECIPE, **ICHNET_SPECS["ichnet"])
def ichnet(**kwargs):
    """ICHNet (~150k parameters): multi-receptive-field blocks, 6 sigmoid ICH outputs."""
    return build_ichnet(**kwargs)


@register_model(
    info={**CARD, "our_reading": [*CARD["our_reading"], "ichnet_small: narrower stages"]},
    name="ichnet_small",
    **ICHNET_SPECS["ichnet_small"],
)
def ichnet_small(**kwargs):
    """ICHNet-small (~60k parameters): narrower stages, same layout as ichnet."""
    return build_ichnet(**kwargs)
