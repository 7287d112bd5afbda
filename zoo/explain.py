"""Grad-CAM, Grad-CAM++ and token maps for the zoo's models.

Every registered model exposes its last spatial feature map as the layer ``features``
(``[batch, h, w, c]``; for ViTs the patch-token grid), so one implementation serves all of them:

    heat = grad_cam(model, images, class_index=0)           # [batch, H, W] in [0, 1]
    heat = grad_cam(model, images, class_index=0, plus=True)  # Grad-CAM++

Grad-CAM (Selvaraju et al., ICCV 2017): weights_c = mean over h, w of d y_c / d A; map =
ReLU(sum_c weights_c A_c). Grad-CAM++ (Chattopadhay et al., WACV 2018) weights the positive
gradients with alpha = g^2 / (2 g^2 + sum(A) g^3). ``y_c`` is the class score before the output
activation (the ``head_logits`` layer when present), so saturated sigmoids do not flatten the map.
"""

from __future__ import annotations

import numpy as np

FEATURES = "features"


def _score_model(model, feature_layer: str):
    import keras

    try:
        feats = model.get_layer(feature_layer).output
    except ValueError:
        raise ValueError(
            f"Model {model.name!r} has no layer {feature_layer!r}; zoo models name their last "
            "spatial feature map 'features' (pass feature_layer= for other models)."
        ) from None
    out_layer = model.get_layer("predictions") if _has_layer(model, "predictions") else None
    if out_layer is not None and getattr(out_layer, "activation", None) is not None:
        # score = the input of the output activation (logits), when the model ends in one
        score = out_layer.input
    else:
        score = model.output
    return keras.Model(model.inputs, [feats, score])


def _has_layer(model, name):
    try:
        model.get_layer(name)
        return True
    except ValueError:
        return False


def grad_cam(
    model,
    images,
    class_index: int = 0,
    *,
    feature_layer: str = FEATURES,
    plus: bool = False,
    upsample: bool = True,
) -> np.ndarray:
    """Heatmaps ``[batch, H, W]`` (or ``[batch, h, w]`` without upsampling), each scaled to [0, 1].

    A map that is zero everywhere (no positive evidence) stays zero.
    """
    import tensorflow as tf

    images = tf.convert_to_tensor(np.asarray(images, dtype="float32"))
    if images.shape.rank == 3:
        images = images[None]
    n_out = int(model.output.shape[-1])
    if not 0 <= int(class_index) < n_out:
        raise ValueError(f"class_index {class_index} is out of range for {n_out} outputs.")
    sub = _score_model(model, feature_layer)
    with tf.GradientTape() as tape:
        tape.watch(images)  # record every op, also those before the first variable
        feats, score = sub(images, training=False)
        target = score[:, int(class_index)]
    grads = tape.gradient(target, feats)
    feats = tf.cast(feats, tf.float32)
    grads = tf.cast(grads, tf.float32)
    if plus:
        g2, g3 = grads**2, grads**3
        denom = 2.0 * g2 + tf.reduce_sum(feats, axis=(1, 2), keepdims=True) * g3
        alpha = tf.math.divide_no_nan(g2, denom)
        weights = tf.reduce_sum(alpha * tf.nn.relu(grads), axis=(1, 2))
    else:
        weights = tf.reduce_mean(grads, axis=(1, 2))
    cam = tf.nn.relu(tf.einsum("bhwc,bc->bhw", feats, weights))
    if upsample:
        cam = tf.image.resize(cam[..., None], tf.shape(images)[1:3], method="bilinear")[..., 0]
    cam = cam.numpy()
    peak = cam.reshape(len(cam), -1).max(axis=1)
    return cam / np.where(peak > 0, peak, 1.0)[:, None, None]


def pointing_game(heatmaps, masks) -> np.ndarray:
    """Per image: 1.0 when the heatmap's maximum falls inside the lesion mask, else 0.0.

    Images whose mask is empty are NaN (nothing to point at).
    """
    heatmaps, masks = np.asarray(heatmaps), np.asarray(masks) > 0
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
