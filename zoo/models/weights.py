"""Local weights into a built model: a whole model's file, a backbone, an ImageNet file, or the
medical backbone shipped with medzoo (``weights="medical"``, :mod:`zoo.models.medical`).

Every builder ends with ``load_weights(model, weights)``. It lives apart from
:mod:`zoo.models.common` because it reaches the backbone loader (:mod:`zoo.models.backbone`) and
the keras.applications loader (:mod:`zoo.models.imagenet`), and both of those use ``common``:
kept here, the models package has no import cycle. Nothing is ever downloaded.
"""

from __future__ import annotations

import os

import keras
import numpy as np

from zoo.models import backbone, imagenet, medical
from zoo.models.weightfile import check_declared_size, check_finite, open_h5

__all__ = ["load_weights"]


def load_weights(model: keras.Model, weights):
    """Load ``weights`` (None, ``"medical"`` or a local ``.weights.h5``/``.keras`` file) into
    ``model``.

    ``"medical"``: the backbone shipped with medzoo for the model's registered name
    (``model.name``), at the shipped image size nearest the model's input, checked against its
    card's sha256 and loaded under a fresh head (:func:`zoo.models.medical.resolve`).

    A backbone file (``backbone.weights.h5`` from ``train.py --pretrain``) loads every layer up
    to ``features`` and leaves the head fresh (:mod:`zoo.models.backbone`); so does a local
    keras.applications ImageNet file (legacy ``.h5``) for the architectures that have one
    (:mod:`zoo.models.imagenet`).
    """
    if weights is None:
        return model
    if isinstance(weights, str) and weights == medical.MEDICAL:
        _, height, _, channels = tuple(model.input_shape)
        path, card = medical.resolve(model.name, height, channels=channels)
        medical.verify(path, card)
        return backbone.load_backbone(model, path)
    if not isinstance(weights, (str, os.PathLike)) or str(weights) in ("imagenet",):
        raise ValueError(
            f"weights={weights!r} would need a download, and medzoo never downloads: pass None, "
            "'medical' (the shipped medical backbones) or the path of a local .weights.h5 / "
            ".keras file."
        )
    path = os.fspath(weights)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"Weights file {path!r} does not exist; pass the path of a local .weights.h5 or "
            ".keras file (or weights=None to start from scratch)."
        )
    if backbone.is_backbone_file(path):
        return backbone.load_backbone(model, path)  # a pretrained backbone under a fresh head
    if imagenet.is_applications_file(path):  # a keras.applications (ImageNet) file: fresh head
        return imagenet.load_imagenet(model, model.name, path)
    if path.endswith(".keras"):
        src = keras.saving.load_model(path, compile=False)
        try:
            model.set_weights(src.get_weights())
        except ValueError as err:
            raise ValueError(
                f"Weights in {path!r} do not fit {model.name!r} ({err}); were they saved from the "
                "same model with the same input channels and num_classes?"
            ) from None
        return model
    with open_h5(path) as f:  # truncated or foreign, oversized: refused before keras reads it
        limit = 2 * sum(int(np.prod(w.shape)) * 8 for w in model.weights) + 2**20
        check_declared_size(f, path, limit)
    try:
        model.load_weights(path)
    except ValueError as err:
        raise ValueError(
            f"Weights in {path!r} do not fit {model.name!r} ({err}); were they saved from the same "
            "model with the same input channels and num_classes?"
        ) from None
    check_finite(model.get_weights(), path, model.name)
    return model
