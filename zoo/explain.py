"""Grad-CAM, Grad-CAM++, LayerCAM and token maps for the zoo's models.

Every registered model exposes its last spatial feature map as the layer ``features``
(``[batch, h, w, c]``; for ViTs the patch-token grid), so one implementation serves all of them:

    heat = grad_cam(model, images, class_index=0)           # [batch, H, W] in [0, 1]
    heat = grad_cam(model, images, class_index=0, plus=True)  # Grad-CAM++
    heat = class_activation_map(model, images, 0, method="layercam", feature_layer="scales")

Grad-CAM (Selvaraju et al., ICCV 2017): weights_c = mean over h, w of d y_c / d A; map =
ReLU(sum_c weights_c A_c). Grad-CAM++ (Chattopadhay et al., WACV 2018) weights the positive
gradients with alpha = g^2 / (2 g^2 + sum(A) g^3). LayerCAM (Jiang et al., IEEE TIP 30, 2021)
keeps the gradient's position: map = ReLU(sum_c ReLU(g_c) * A_c), so a map on an early, fine
layer shows where the score is sensitive instead of a spatially averaged weight; ``"scales"``
reads the last layer at every grid and fuses the maps (geometric mean by default: the coarse
layers place the lesion, the fine ones outline it). ``y_c`` is the class score before the
output activation (the ``head_logits`` layer when present), so saturated sigmoids do not
flatten the map.

Why LayerCAM is here: on the head-CT phantom both ichnet's and rensenet's last-layer Grad-CAM
is diffuse (the deep, dilated stages see the whole slice, so with global average pooling the
evidence of a small bleed can sit anywhere); ``python -m benchmarks.explain`` prints the
pointing game of each map next to the ceiling its grid allows.
"""

from __future__ import annotations

import numpy as np

from pipelines import preprocessing
from pipelines.cli import check_writable
from pipelines.manifest import DataError
from zoo import plots
from zoo.evaluation import ModelSource, load_model_source

FEATURES = "features"
METHODS = ("gradcam", "gradcam++", "layercam")
SCALES = "scales"  # feature_layer: the last layer at every grid (see scale_layers)
FUSIONS = ("product", "max")


def _score_model(model, feature_layers):
    import keras

    feats = []
    for name in feature_layers:
        try:
            feats.append(model.get_layer(name).output)
        except ValueError:
            raise ValueError(
                f"Model {model.name!r} has no layer {name!r}; zoo models name their last "
                "spatial feature map 'features' (pass feature_layer= for other models)."
            ) from None
    out_layer = model.get_layer("predictions") if _has_layer(model, "predictions") else None
    if out_layer is not None and getattr(out_layer, "activation", None) is not None:
        # score = the input of the output activation (logits), when the model ends in one
        score = out_layer.input
    else:
        score = model.output
    return keras.Model(model.inputs, [*feats, score])


def _has_layer(model, name):
    try:
        model.get_layer(name)
        return True
    except ValueError:
        return False


def scale_layers(model) -> list[str]:
    """The last layer at each power-of-two grid, finest first, ending with ``features``.

    For the zoo's CNNs these are the stage outputs (ichnet: ``stage1_mrf1`` at /2 ...
    ``features`` at /16): the layers a multi-scale map is fused from (``feature_layer="scales"``).
    Grids are ``ceil(H / 2^k)``, k >= 1, no coarser than ``features``: a full-resolution
    layer (an input normalisation, a single stem convolution) is the image more than a feature
    map, and its map is pixel saliency (on the head-CT phantom it pulled rensenet's fused
    pointing game from 0.85 to 0.71); padding layers and squeeze-excite vectors are not scales,
    and layers after ``features`` (a head's class evidence map) are not explanations of it.
    """
    import math

    import keras

    if not _has_layer(model, FEATURES):
        raise ValueError(f"Model {model.name!r} has no layer 'features', so its scales are unknown; "
                         f"pass layer names instead of {SCALES!r}.")
    h, coarsest = model.input_shape[1], model.get_layer(FEATURES).output.shape[1]
    if h is None or coarsest is None:
        return [FEATURES]
    last = {}  # grid height -> the last layer at it, in graph order up to `features`
    for layer in model.layers:
        if layer.name == FEATURES:
            break
        shape = getattr(getattr(layer, "output", None), "shape", None)
        if (shape is not None and len(shape) == 4 and shape[1] is not None
                and not isinstance(layer, keras.layers.InputLayer)):
            last[int(shape[1])] = layer.name
    grids = sorted({math.ceil(h / 2**k) for k in range(1, 12)}, reverse=True)
    return [last[g] for g in grids if g in last and g > int(coarsest)] + [FEATURES]


def _layer_names(model, feature_layer) -> list[str]:
    if feature_layer == SCALES:
        return scale_layers(model)
    names = [feature_layer] if isinstance(feature_layer, str) else list(feature_layer)
    if not names or not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"feature_layer must be a layer name, a list of names or {SCALES!r}, "
                         f"got {feature_layer!r}.")
    return names


def _one_map(feats, grads, method: str):
    """``[batch, h, w]`` map of one layer from its activations and the score's gradient."""
    import tensorflow as tf

    if method == "layercam":
        # LayerCAM: every position weighted by its own positive gradient, so a map on a
        # shallow (fine) layer stays local instead of averaging the gradient over the image
        return tf.nn.relu(tf.reduce_sum(tf.nn.relu(grads) * feats, axis=-1))
    if method == "gradcam++":
        g2, g3 = grads**2, grads**3
        denom = 2.0 * g2 + tf.reduce_sum(feats, axis=(1, 2), keepdims=True) * g3
        alpha = tf.math.divide_no_nan(g2, denom)
        weights = tf.reduce_sum(alpha * tf.nn.relu(grads), axis=(1, 2))
    else:
        weights = tf.reduce_mean(grads, axis=(1, 2))
    return tf.nn.relu(tf.einsum("bhwc,bc->bhw", feats, weights))


def _scaled(cam):
    """Each map divided by its own maximum (an all-zero map stays zero)."""
    import tensorflow as tf

    peak = tf.reduce_max(cam, axis=(1, 2), keepdims=True)
    return tf.math.divide_no_nan(cam, peak)


def class_activation_map(
    model,
    images,
    class_index: int = 0,
    *,
    method: str = "gradcam",
    feature_layer=FEATURES,
    fusion: str = "product",
    upsample: bool = True,
) -> np.ndarray:
    """Heatmaps ``[batch, H, W]`` (``[batch, h, w]`` without upsampling), each scaled to [0, 1].

    ``method``: ``"gradcam"``, ``"gradcam++"`` or ``"layercam"``. ``feature_layer``: a layer
    name, a list of names, or ``"scales"`` (:func:`scale_layers`: the last layer at every
    grid). Several layers are fused: each layer's map is scaled to [0, 1] and upsampled to the
    image (without ``upsample``, to the finest layer's grid), then ``fusion="product"`` takes
    their geometric mean (a point must be supported at every scale: the coarse maps place the
    lesion, the fine ones outline it) and ``fusion="max"`` their element-wise maximum
    (LayerCAM's own). A map that is zero everywhere (no positive evidence) stays zero.
    """
    import tensorflow as tf

    if method not in METHODS:
        raise ValueError(f"method {method!r} is unknown; use one of {', '.join(METHODS)}.")
    if fusion not in FUSIONS:
        raise ValueError(f"fusion {fusion!r} is unknown; use one of {', '.join(FUSIONS)}.")
    names = _layer_names(model, feature_layer)
    images = tf.convert_to_tensor(np.asarray(images, dtype="float32"))
    if images.shape.rank == 3:
        images = images[None]
    n_out = int(model.output.shape[-1])
    if not 0 <= int(class_index) < n_out:
        raise ValueError(f"class_index {class_index} is out of range for {n_out} outputs.")
    sub = _score_model(model, names)
    with tf.GradientTape() as tape:
        tape.watch(images)  # record every op, also those before the first variable
        *feats, score = sub(images, training=False)
        target = score[:, int(class_index)]
    grads = tape.gradient(target, feats)
    maps = [_one_map(tf.cast(f, tf.float32), tf.cast(g, tf.float32), method)
            for f, g in zip(feats, grads)]
    if upsample:
        size = tf.shape(images)[1:3]
    else:
        size = max((tuple(m.shape[1:3]) for m in maps), key=lambda hw: hw[0] * hw[1])
    if len(maps) == 1:
        cam = upsample_maps(maps[0], size) if upsample else maps[0]
    else:
        stack = tf.stack([_scaled(tf.nn.relu(upsample_maps(m, size))) for m in maps])
        if fusion == "max":
            cam = tf.reduce_max(stack, axis=0)
        else:
            cam = tf.exp(tf.reduce_mean(tf.math.log(stack + 1e-12), axis=0))
            cam = tf.where(tf.reduce_min(stack, axis=0) > 0, cam, 0.0)
    return _scaled(cam).numpy()


def grad_cam(
    model,
    images,
    class_index: int = 0,
    *,
    feature_layer=FEATURES,
    plus: bool = False,
    upsample: bool = True,
) -> np.ndarray:
    """Grad-CAM (``plus=True``: Grad-CAM++) heatmaps ``[batch, H, W]``, each scaled to [0, 1].

    The same as :func:`class_activation_map` with ``method="gradcam"`` / ``"gradcam++"``.
    """
    return class_activation_map(model, images, class_index,
                                method="gradcam++" if plus else "gradcam",
                                feature_layer=feature_layer, upsample=upsample)


def upsample_maps(maps, size):
    """Maps ``[batch, h, w]`` -> ``[batch, *size]``, bilinear: how every heatmap reaches image size.

    Each cell's value lands on the centre of the image patch it covers, so a map's maximum sits
    on a cell centre (what the pointing game's resolution ceiling is computed from).
    """
    import tensorflow as tf

    return tf.image.resize(tf.convert_to_tensor(maps)[..., None], size, method="bilinear")[..., 0]


def pointing_game(heatmaps, masks, *, tolerance: int = 0) -> np.ndarray:
    """Per image: 1.0 when the heatmap's maximum falls inside the lesion mask, else 0.0.

    ``tolerance`` (pixels) counts a maximum within that distance of the mask as a hit (Zhang et
    al., ECCV 2016 use 15 pixels); 0 is the strict game. Images whose mask is empty are NaN
    (nothing to point at).
    """
    heatmaps, masks = np.asarray(heatmaps), np.asarray(masks) > 0
    if tolerance > 0:
        from scipy import ndimage

        r = int(tolerance)
        yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
        disc = yy**2 + xx**2 <= r * r
        masks = np.stack([ndimage.binary_dilation(m, structure=disc) if m.any() else m
                          for m in masks])
    out = []
    for h, m in zip(heatmaps, masks):
        if not m.any():
            out.append(np.nan)
            continue
        out.append(float(m.flat[int(np.argmax(h))]))
    return np.array(out)


def energy_in_mask(heatmaps, masks) -> np.ndarray:
    """Per image: the fraction of heatmap mass inside the mask (NaN for empty masks or maps)."""
    heatmaps, masks = np.asarray(heatmaps, dtype=float), np.asarray(masks) > 0
    out = []
    for h, m in zip(heatmaps, masks):
        total = h.sum()
        out.append(float(h[m].sum() / total) if m.any() and total > 0 else np.nan)
    return np.array(out)


# --------------------------------------------------------------------------------------------
# Reading one image the way the model was trained, and the command line
# --------------------------------------------------------------------------------------------


def read_image_file(path, *, spec) -> np.ndarray:
    """One original file -> float32 (H, W, C) model input, exactly as the model was trained.

    ``spec`` is the model's :class:`pipelines.preprocessing.Preprocessing` (an export's
    ``preprocessing.json``, a run's cache): DICOM / NIfTI through the training windows, pictures
    by the spec's decode and channel rule, ``.npy`` as uint8 / 255 or floats in [0, 1]; then the
    spec's resize and 8-bit rounding. Errors are one sentence naming the file.
    """
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--image {path} does not exist; pass a DICOM, PNG/JPEG or .npy file.")
    try:
        return preprocessing.load_file(path, spec)
    except DataError as err:
        raise ValueError(f"--image {path} cannot be read: {err.problem}.") from None


def default_layers(method: str):
    """Where ``method`` reads the model by default: Grad-CAM(++) the ``features`` layer (as
    published), LayerCAM every scale (:func:`scale_layers`), product-fused."""
    return SCALES if method == "layercam" else FEATURES


def explain_image(source, image_path, *, classes=None, method: str = "gradcam", layers=None,
                  out) -> dict:
    """Heatmaps and overlays for one image; returns a summary (also ``explain.json``).

    ``source`` is a :class:`zoo.evaluation.ModelSource` (or a path to an export / run dir);
    ``classes``: label names, ``["all"]``, or None for the top-scoring class; ``layers``: a
    layer name, a list of names or ``"scales"`` (default :func:`default_layers` of ``method``).
    """
    import hashlib
    import json
    from pathlib import Path

    if method not in METHODS:
        raise ValueError(f"--method {method!r} is unknown; use {' or '.join(METHODS)}.")
    layers = default_layers(method) if layers is None else layers
    if not isinstance(source, ModelSource):
        source = load_model_source(source)
    model = source.keras_model()
    labels = list(source.labels)
    image = read_image_file(image_path, spec=source.spec)
    probs = np.asarray(model(image[None], training=False), dtype=float)[0]
    if not classes:
        wanted = [labels[int(np.argmax(probs))]]
    elif list(classes) == ["all"]:
        wanted = labels
    else:
        wanted = []
        for name in classes:
            if name not in labels:
                raise ValueError(f"--class {name!r} is not a label of {source.model_name}; its "
                                 f"labels are {', '.join(labels)} (or 'all').")
            wanted.append(name)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    top = np.argsort(-probs)[:4]
    prob_text = ", ".join(f"{labels[i]} {probs[i]:.2f}" for i in top)
    try:
        names = _layer_names(model, layers)
        for layer in names:
            model.get_layer(layer)
    except ValueError:
        raise ValueError(f"--layers {layers!r} names no layer of {source.model_name}; pass "
                         f"'features', '{SCALES}' ({', '.join(scale_layers(model))}) or layer "
                         "names from model.summary().") from None
    rgb = source.input_shape[2] == 3 and source.spec.kind == "image"
    written = {}
    for name in wanted:
        k = labels.index(name)
        heat = class_activation_map(model, image[None], class_index=k, method=method,
                                    feature_layer=names)[0]
        stem = f"{method.replace('+', 'pp')}_{_safe(name)}"
        np.save(out / f"{stem}.npy", heat.astype(np.float32))
        title = (f"{source.model_name} {method} for '{name}' (p={probs[k]:.3f})\n"
                 f"probabilities: {prob_text}")
        plots.overlay_png(image, heat, out / f"{stem}.png", title=title, rgb=rgb)
        written[name] = {"png": f"{stem}.png", "heatmap": f"{stem}.npy",
                         "probability": float(probs[k])}
    # the file's digest, not its path: paths often hold patient or study identifiers
    digest = hashlib.sha256(Path(image_path).read_bytes()).hexdigest()
    summary = {"model": str(source.path), "image_sha256": digest, "method": method,
               "layers": names, "probabilities": dict(zip(labels, map(float, probs))), "maps": written}
    (out / "explain.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in str(name))


def main(argv=None) -> int:
    import argparse
    import sys
    from pathlib import Path

    parser = argparse.ArgumentParser(
        prog="python -m zoo.explain",
        description="Grad-CAM / Grad-CAM++ / LayerCAM heatmaps for one image, written as PNG "
        "overlays.",
    )
    parser.add_argument("--model", required=True, type=Path,
                        help="export (saved_models/<model>/<version>) or training run directory")
    parser.add_argument("--image", required=True, type=Path, help="DICOM, PNG/JPEG or .npy file")
    parser.add_argument("--class", dest="classes", action="append",
                        help="label to explain (repeat, comma-separate, or 'all'; default: the "
                        "top-scoring class)")
    parser.add_argument("--method", default="gradcam", choices=tuple(METHODS),
                        help="gradcam (default), gradcam++, or layercam (position-wise gradients, "
                        "fused over every scale: the most faithful on the lesion phantoms, see "
                        "python -m benchmarks.explain)")
    parser.add_argument("--layers", default=None,
                        help=f"'features', '{SCALES}' (the last layer at every grid, fused), or "
                        "comma-separated layer names (default: features for Grad-CAM, "
                        f"{SCALES} for LayerCAM)")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    args = parser.parse_args(argv)
    classes = [c.strip() for item in (args.classes or []) for c in item.split(",") if c.strip()]
    layers = args.layers
    if layers is not None and layers not in (FEATURES, SCALES):
        layers = [name.strip() for name in layers.split(",") if name.strip()]
    try:
        check_writable(args.out, "--out")
        summary = explain_image(args.model, args.image, classes=classes or None,
                                method=args.method, layers=layers, out=args.out)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for name, item in summary["maps"].items():
        print(f"{name}: p={item['probability']:.3f} -> {args.out / item['png']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
