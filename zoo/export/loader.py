"""Loading an export: :func:`load_export` returns an :class:`ExportedModel` (predict, labels, card).

    served = load_export("saved_models/ichnet")   # a model directory means its latest version
    served.predict(images)                        # float32 [N, H, W, C] in [0, 1] -> [N, K]
    served.predict_bytes([png_bytes])             # the serving_bytes signature
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pipelines import cells
from pipelines.yamlfile import read_yaml
from zoo.card import CARD_JSON
from zoo.export.publish import version_dirs
from zoo.export.signatures import OUTPUT_KEY, SIGNATURE_BYTES, SIGNATURE_IMAGE, resolve_spec

# What every complete export holds besides the SavedModel itself.
REQUIRED_FILES = ("assets/labels.txt", "assets.extra/config.yaml",
                  "assets.extra/preprocessing.json", f"assets.extra/{CARD_JSON}")


class ExportedModel:
    """A loaded export: ``.predict(images)``, ``.predict_bytes(encoded)``, labels, config, card."""

    def __init__(self, path: Path):
        import tensorflow as tf

        self.path = path
        self.model_name = path.parent.name
        self.version = int(path.name) if path.name.isdigit() else None
        self.loaded = tf.saved_model.load(str(path))
        self.signatures = self.loaded.signatures
        self.labels = tuple(cells.read_lines(path / "assets" / "labels.txt"))
        extra = path / "assets.extra"
        self.config = read_yaml(extra / "config.yaml", "export's config") or {}
        self.preprocessing = json.loads((extra / "preprocessing.json").read_text())
        self.card = json.loads((extra / CARD_JSON).read_text())
        model_input = self.preprocessing["model_input"]
        self.input_shape = (model_input["height"], model_input["width"], model_input["channels"])
        # the preprocessing the signatures run (exports older than the spec: derived from facts)
        self.spec = resolve_spec(self.input_shape, self.preprocessing.get("spec")
                                 or self.preprocessing.get("training_data"), self.config)

    def __repr__(self):
        return (f"ExportedModel({self.model_name!r}, version={self.version}, "
                f"input_shape={self.input_shape}, labels={len(self.labels)})")

    def predict(self, images, batch_size: int = 32) -> np.ndarray:
        """Probabilities [N, K] for float images [N, H, W, C] in [0, 1] (uint8 is divided by 255)."""
        import tensorflow as tf

        images = np.asarray(images)
        if images.dtype == np.uint8:
            images = images.astype(np.float32) / 255.0
        if images.ndim == 3:
            images = images[np.newaxis]
        c = self.input_shape[2]
        if images.ndim != 4 or images.shape[-1] != c:
            raise ValueError(
                f"{self.model_name} expects images shaped [N, H, W, {c}] (or one [H, W, {c}]), got "
                f"{images.shape}."
            )
        fn = self.signatures[SIGNATURE_IMAGE]
        out = [
            fn(image=tf.constant(images[i:i + batch_size], tf.float32))[OUTPUT_KEY].numpy()
            for i in range(0, len(images), batch_size)
        ]
        return np.concatenate(out) if out else np.zeros((0, len(self.labels)), np.float32)

    def predict_bytes(self, encoded: Sequence[bytes]) -> np.ndarray:
        """Probabilities [N, K] for encoded PNG/JPEG images (the ``serving_bytes`` signature)."""
        import tensorflow as tf

        fn = self.signatures[SIGNATURE_BYTES]
        return fn(image_bytes=tf.constant(list(encoded), tf.string))[OUTPUT_KEY].numpy()


def load_export(version_dir) -> ExportedModel:
    """Load ``saved_models/<model>/<version>`` (or ``saved_models/<model>``: its latest version)."""
    path = Path(version_dir)
    if not path.is_dir():
        raise FileNotFoundError(
            f"Export directory {path} does not exist; pass saved_models/<model>/<version> written "
            "by zoo.export."
        )
    if not (path / "saved_model.pb").is_file():
        versions = version_dirs(path)
        if not versions:
            raise FileNotFoundError(
                f"{path} holds no saved_model.pb and no integer version directories; pass "
                "saved_models/<model>/<version> written by zoo.export."
            )
        path = versions[max(versions)]
    for needed in REQUIRED_FILES:
        if not (path / needed).is_file():
            raise FileNotFoundError(
                f"{path / needed} is missing; {path} is not a complete zoo export (re-export it "
                "with python -m zoo.export)."
            )
    return ExportedModel(path)
