"""The serving graph: the two signatures, their resize and decode steps, and what they document.

* :func:`resize_to_input` and :func:`decode_image` are the preprocessing the signatures do in the
  graph (kept as two small named functions: they are the place to swap in a shared
  preprocessing implementation);
* :func:`_serving_module` wraps a Keras model into a ``tf.Module`` plus ``{name: function}``;
* :func:`preprocessing_doc` is the ``assets.extra/preprocessing.json`` document that says what
  the signatures expect and do;
* :func:`warmup_records` are the ``tf_serving_warmup_requests`` records, one per signature.
"""

from __future__ import annotations

import numpy as np

from zoo.card import plain_data

SIGNATURE_IMAGE = "serving_default"
SIGNATURE_BYTES = "serving_bytes"
OUTPUT_KEY = "probabilities"


# --------------------------------------------------------------------------------------------
# Preprocessing in the graph
# --------------------------------------------------------------------------------------------


def resize_to_input(images, height: int, width: int, channels: int):
    """Bilinear resize of float images [N, H, W, C] to the model's input size.

    Skipped (bit-exact) when the images already have that size.
    """
    import tensorflow as tf

    size = tf.constant([height, width], tf.int32)
    same = tf.reduce_all(tf.equal(tf.shape(images)[1:3], size))
    out = tf.cond(
        same,
        lambda: tf.identity(images),
        lambda: tf.image.resize(images, size, method="bilinear"),
    )
    return tf.ensure_shape(out, [None, height, width, channels])


def decode_image(contents, height: int, width: int, channels: int):
    """One encoded PNG/JPEG/BMP/GIF -> float32 [height, width, channels] in [0, 1].

    8-bit images are divided by 255, 16-bit PNGs by 65535 (``tf.io.decode_image``). A model with
    other than 1, 3 or 4 channels (e.g. 2 CT windows) gets a grey image repeated over them.
    """
    import tensorflow as tf

    if channels in (1, 3, 4):
        image = tf.io.decode_image(
            contents, channels=channels, dtype=tf.float32, expand_animations=False
        )
    else:
        image = tf.io.decode_image(contents, channels=1, dtype=tf.float32, expand_animations=False)
        image = tf.tile(image, [1, 1, channels])
    image = tf.ensure_shape(image, [None, None, channels])
    return resize_to_input(image[tf.newaxis], height, width, channels)[0]


# --------------------------------------------------------------------------------------------
# The serving module
# --------------------------------------------------------------------------------------------


def _serving_module(model, labels_path: str):
    """(tf.Module holding ``model``'s variables and the labels asset, {signature: function})."""
    import tensorflow as tf

    height, width, channels = (int(d) for d in model.input_shape[1:])

    # The model is traced once, inside `predict`, which both signatures call.
    predict = tf.function(
        lambda images: tf.cast(model(images, training=False), tf.float32),
        input_signature=[tf.TensorSpec([None, height, width, channels], tf.float32)],
        autograph=False,
    )

    def serve_image(image):
        return {OUTPUT_KEY: predict(resize_to_input(image, height, width, channels))}

    def serve_bytes(image_bytes):
        images = tf.map_fn(
            lambda contents: decode_image(contents, height, width, channels),
            image_bytes,
            fn_output_signature=tf.TensorSpec([height, width, channels], tf.float32),
        )
        return {OUTPUT_KEY: predict(images)}

    # The module holds the model's variables and the labels asset, not the Keras object (as
    # keras.export.ExportArchive does) and not the functions (only the signatures are exported),
    # so saving neither walks every Keras layer nor retraces anything.
    module = tf.Module(name="zoo_serving")
    module.model_variables = list(model.variables)
    module.labels_file = tf.saved_model.Asset(labels_path)
    signatures = {
        SIGNATURE_IMAGE: tf.function(serve_image, autograph=False).get_concrete_function(
            tf.TensorSpec([None, None, None, channels], tf.float32, name="image")
        ),
        SIGNATURE_BYTES: tf.function(serve_bytes, autograph=False).get_concrete_function(
            tf.TensorSpec([None], tf.string, name="image_bytes")
        ),
    }
    return module, signatures


def signature_docs(channels: int, num_classes: int) -> dict:
    """One line per signature, for the model card."""
    return {
        SIGNATURE_IMAGE: f"image float32 [batch, H, W, {channels}] in [0, 1] -> probabilities "
        f"float32 [batch, {num_classes}]",
        SIGNATURE_BYTES: f"image_bytes string [batch] (PNG/JPEG) -> probabilities float32 "
        f"[batch, {num_classes}]",
    }


# --------------------------------------------------------------------------------------------
# preprocessing.json and the warmup records
# --------------------------------------------------------------------------------------------


def preprocessing_doc(input_shape, preprocessing, config) -> dict:
    """The ``assets.extra/preprocessing.json`` document: the model input, what each signature
    expects and does, the output, and (when known) how the training inputs were made."""
    h, w, c = input_shape
    resize = {"op": "tf.image.resize", "method": "bilinear", "antialias": False,
              "to": [h, w], "skipped_when_size_matches": True}
    doc = {
        "layout": "NHWC",
        "model_input": {"height": h, "width": w, "channels": c, "dtype": "float32",
                        "range": [0.0, 1.0]},
        SIGNATURE_IMAGE: {
            "input": "image", "dtype": "float32", "shape": [None, None, None, c],
            "intensity": "same as training: windowed CT or 8-bit images / 255, in [0, 1]",
            "resize": dict(resize),
        },
        SIGNATURE_BYTES: {
            "input": "image_bytes", "dtype": "string", "shape": [None],
            "decode": "tf.io.decode_image(expand_animations=False): PNG, JPEG, BMP, GIF",
            "scale": "8-bit / 255, 16-bit PNG / 65535",
            "channels": (f"converted to {c} by tf.io.decode_image" if c in (1, 3, 4)
                         else f"decoded as grey and repeated {c} times"),
            "resize": dict(resize),
        },
        "output": {"key": OUTPUT_KEY, "dtype": "float32", "labels": "assets/labels.txt"},
    }
    training = {}
    if isinstance(config, dict):
        training.update({k: config[k] for k in ("dataset", "image_size", "windows") if k in config})
    if preprocessing:
        training.update(plain_data(preprocessing))
    if training:
        doc["training_data"] = training
    return doc


def warmup_records(model_name: str, input_shape) -> list[bytes]:
    """Serialized PredictionLog records: one request per signature at the model's input size."""
    import tensorflow as tf
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    h, w, c = input_shape
    image = np.full((1, h, w, c), 0.5, np.float32)
    png = tf.io.encode_png(np.full((h, w, c if c in (1, 3, 4) else 1), 128, np.uint8)).numpy()
    requests = [
        (SIGNATURE_IMAGE, "image", tf.make_tensor_proto(image)),
        (SIGNATURE_BYTES, "image_bytes", tf.make_tensor_proto([png], dtype=tf.string, shape=[1])),
    ]
    records = []
    for signature, key, tensor in requests:
        request = predict_pb2.PredictRequest(
            model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signature)
        )
        request.inputs[key].CopyFrom(tensor)
        log = prediction_log_pb2.PredictionLog(
            predict_log=prediction_log_pb2.PredictLog(request=request)
        )
        records.append(log.SerializeToString())
    return records
