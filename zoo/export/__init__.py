"""Export a trained model for TensorFlow Serving (SavedModel) and for ONNX runtimes.

    from zoo.export import export_saved_model, load_export
    path = export_saved_model(model, "saved_models", model_name="ichnet", labels=RSNA_ICH)
    served = load_export(path)                 # saved_models/ichnet/<version>/
    served.predict(images)                     # float32 [N, H, W, C] in [0, 1] -> probabilities

    python -m zoo.export --model ichnet --input-shape 96,96,3 --format savedmodel onnx
    python -m zoo.export --run-dir runs/ichnet --export-dir saved_models

What an export directory holds (``<base_dir>/<model_name>/<version>/``)::

    saved_model.pb  variables/        the serving graph (two signatures, below)
    assets/labels.txt                 class names, one a line, in output order
    assets.extra/config.yaml          the resolved training config
    assets.extra/preprocessing.json   what the signatures expect and do to their inputs
    assets.extra/model_card.{md,json} card facts from the registry; metrics filled by evaluation
    assets.extra/tf_serving_warmup_requests   PredictionLog records, one per signature
    assets.extra/model.keras          the Keras model (Grad-CAM in zoo.explain, fine-tuning)
    model.onnx                        with ``formats=("savedmodel", "onnx")``

Signatures (built with ``tf.Module`` + ``tf.function``, standard TF ops only):

* ``serving_default``: ``image`` float32 ``[batch, height, width, channels]`` in [0, 1], any
  height and width (resized in the graph to the model's input size with bilinear
  ``tf.image.resize``) -> ``{"probabilities": float32 [batch, num_classes]}``.
* ``serving_bytes``: ``image_bytes`` string ``[batch]`` of encoded PNG/JPEG/BMP/GIF, decoded in
  the graph (``tf.io.decode_image``, 8-bit / 255, 16-bit PNG / 65535), converted to the model's
  channel count, resized -> ``{"probabilities": ...}``.

A new export takes the next integer version and never overwrites one. It is written to a hidden
``.tmp-*`` directory beside the versions (TF Serving only loads integer names) and renamed into
place when complete, so a crash never leaves a half-written version. ``models.config`` (a
``ModelServerConfig`` listing every exported model) and ``batching.config`` (``BatchingParameters``)
beside the models are regenerated on every export.

Where things live: ``signatures`` (the serving graph, its resize and decode steps,
preprocessing.json, warmup records), ``archive`` (``export_saved_model``: what one version
holds), ``publish`` (atomic versions, TF Serving configs), ``onnx`` (model.onnx), ``loader``
(``load_export``), ``cli`` (``python -m zoo.export``); the model card is ``zoo.card``'s.
"""

from __future__ import annotations

from zoo.card import render_card as render_model_card
from zoo.card import update_model_card
from zoo.export.archive import FORMATS, export_saved_model
from zoo.export.cli import main  # noqa: F401  (zoo.export.main, as before the split)
from zoo.export.loader import ExportedModel, load_export
from zoo.export.publish import batching_parameters_class, write_server_configs
from zoo.export.signatures import OUTPUT_KEY, SIGNATURE_BYTES, SIGNATURE_IMAGE  # noqa: F401

__all__ = [
    "export_saved_model",
    "load_export",
    "ExportedModel",
    "update_model_card",
    "render_model_card",
    "write_server_configs",
    "batching_parameters_class",
    "SIGNATURE_IMAGE",
    "SIGNATURE_BYTES",
    "FORMATS",
]
