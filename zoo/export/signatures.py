"""The serving graph: the two signatures, their resize and decode steps, and what they document.

* :func:`resize_to_input` and :func:`decode_image` are the preprocessing the signatures do in the
  graph (kept as two small named functions: they are the place to swap in a shared
  preprocessing implementation);
* :func:`serving_module` wraps a Keras model into a ``tf.Module`` plus ``{name: function}``;
* :func:`preprocessing_doc` is the ``assets.extra/preprocessing.json`` document that says what
  the signatures expect and do;
* :func:`warmup_records` are the ``tf_serving_warmup_requests`` records, one per signature.
"""

from __future__ import annotations

import numpy as np

from pipelines.formats import SERVING_FORMATS, format_list
from pipelines.preprocessing import (
    MAX_IMAGE_PIXELS,
    Preprocessing,
    tf_declared_pixels,
    tf_decode_image,
    tf_finish,
    tf_image_format_ok,
)
from pipelines.transforms import parse_windows
from zoo.card import plain_data

SIGNATURE_IMAGE = "serving_default"
SIGNATURE_BYTES = "serving_bytes"
OUTPUT_KEY = "probabilities"


# --------------------------------------------------------------------------------------------
# Preprocessing in the graph: pipelines.preprocessing's TF twin, plus the input checks
# --------------------------------------------------------------------------------------------

# serving_default accepts values this far outside [0, 1] (float round-off of a client's scaling).
RANGE_TOLERANCE = 1e-3
# serving_bytes refuses an encoded image declaring more pixels than pipelines.preprocessing's
# MAX_IMAGE_PIXELS (the decode budget prepare, explain and evaluate keep too), before decoding it.
# Both signatures refuse a request of more than this many images (export option max_batch): with
# the per-image cap it bounds what one request may cost.
MAX_BATCH = 64
# The per-image cap, under the name serving has always used.
MAX_PIXELS = MAX_IMAGE_PIXELS


def check_image(images):
    """InvalidArgument (a message saying what to send) for non-finite or unscaled pixels."""
    import tensorflow as tf

    finite = tf.debugging.assert_all_finite(
        images, "serving_default got NaN or infinite pixels; send finite float32 values in "
        "[0, 1] (8-bit values divided by 255, CT windowed as in preprocessing.json)")
    with tf.control_dependencies([finite]):
        low = tf.debugging.assert_greater_equal(
            tf.reduce_min(images), -RANGE_TOLERANCE,
            message="serving_default got negative pixels; send float32 values in [0, 1] "
            "(CT: Hounsfield units through the windows in preprocessing.json)")
        high = tf.debugging.assert_less_equal(
            tf.reduce_max(images), 1.0 + RANGE_TOLERANCE,
            message="serving_default got pixels above 1; send float32 values in [0, 1] "
            "(8-bit images divided by 255), or encoded files to serving_bytes")
    with tf.control_dependencies([low, high]):
        return tf.identity(images)


def resize_to_input(images, spec):
    """Float images [N, H, W, C] at any size -> the model input: the spec's resize and rounding
    (bilinear, antialiased; skipped when the size fits), as the cache made them."""
    return tf_finish(images, spec)


def check_batch(images, max_batch: int):
    """InvalidArgument for a request of more than ``max_batch`` images."""
    import tensorflow as tf

    guard = tf.debugging.assert_less_equal(
        tf.shape(images)[0], tf.constant(max_batch, tf.int32),
        message=f"the request holds more than {max_batch} images (this export's max_batch); "
        "split it into smaller requests")
    with tf.control_dependencies([guard]):
        return tf.identity(images)


def decode_image(contents, spec, max_pixels: int = MAX_IMAGE_PIXELS):
    """One encoded image -> the model input [h, w, C]: the spec's decode, channel rule, resize
    and rounding. A file whose first bytes are not a served format of
    :data:`pipelines.formats.FORMATS`, or that declares more than ``max_pixels`` in its header,
    is refused before any pixel is decoded."""
    import tensorflow as tf

    known = tf.debugging.Assert(tf_image_format_ok(contents), [
        f"serving_bytes takes {format_list(serving=True)} files (told by their first bytes); "
        "decode other formats (TIFF, DICOM) yourself and send the pixels to serving_default"])
    with tf.control_dependencies([known]):
        pixels = tf_declared_pixels(contents)
    guard = tf.debugging.assert_less_equal(
        pixels, tf.constant(max_pixels, tf.int64),
        message=f"serving_bytes refuses images above {max_pixels} pixels (declared in the file "
        "header); downscale the image before sending it")
    with tf.control_dependencies([guard]):
        image = tf_decode_image(contents, spec.channels)
    return resize_to_input(image[tf.newaxis], spec)[0]


# --------------------------------------------------------------------------------------------
# The serving module
# --------------------------------------------------------------------------------------------


def serving_module(model, labels_path: str, spec, *, max_batch: int = MAX_BATCH):
    """(tf.Module holding ``model``'s variables and the labels asset, {signature: function}).

    ``spec`` is the :class:`pipelines.preprocessing.Preprocessing` the model was trained with;
    both signatures refuse a request of more than ``max_batch`` images.
    """
    import tensorflow as tf

    height, width, channels = (int(d) for d in model.input_shape[1:])
    num_classes = int(model.output_shape[-1])

    # The model is traced once, inside `predict`, which both signatures call.
    predict = tf.function(
        lambda images: tf.cast(model(images, training=False), tf.float32),
        input_signature=[tf.TensorSpec([None, height, width, channels], tf.float32)],
        autograph=False,
    )

    def predict_any(images):
        # an empty batch answers [0, K] without running the model (oneDNN rejects batch 0)
        return tf.cond(tf.shape(images)[0] > 0, lambda: predict(images),
                       lambda: tf.zeros([0, num_classes], tf.float32))

    def serve_image(image):
        image = check_batch(check_image(image), max_batch)
        return {OUTPUT_KEY: predict_any(resize_to_input(image, spec))}

    def serve_bytes(image_bytes):
        images = tf.map_fn(  # one image decoded at a time: the memory of one, not of ten
            lambda contents: decode_image(contents, spec),
            check_batch(image_bytes, max_batch),
            fn_output_signature=tf.TensorSpec([height, width, channels], tf.float32),
            parallel_iterations=1,
        )
        return {OUTPUT_KEY: predict_any(images)}

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


def signature_docs(channels: int, num_classes: int, max_batch: int = MAX_BATCH) -> dict:
    """One line per signature, for the model card."""
    served = "/".join(f.upper() if f != "webp" else "WebP" for f in SERVING_FORMATS)
    return {
        SIGNATURE_IMAGE: f"image float32 [batch <= {max_batch}, H, W, {channels}] in [0, 1] -> "
        f"probabilities float32 [batch, {num_classes}]",
        SIGNATURE_BYTES: f"image_bytes string [batch <= {max_batch}] ({served}) -> probabilities "
        f"float32 [batch, {num_classes}]",
    }


# --------------------------------------------------------------------------------------------
# preprocessing.json and the warmup records
# --------------------------------------------------------------------------------------------


def resolve_spec(input_shape, preprocessing=None, config=None):
    """The :class:`pipelines.preprocessing.Preprocessing` an export serves with.

    ``preprocessing`` is a spec, a spec's dict, or (older callers) a dict of training facts;
    without a spec one is derived from the facts: CT windows -> a CT spec, else pictures. The
    size is always the model's input size.
    """
    h, w, c = input_shape
    if isinstance(preprocessing, Preprocessing):
        spec = preprocessing
    elif isinstance(preprocessing, dict) and "kind" in preprocessing:
        spec = Preprocessing.from_dict(preprocessing)
    else:
        facts = {}
        if isinstance(config, dict):
            facts.update(config)
        if isinstance(preprocessing, dict):
            facts.update(preprocessing)
        windows = facts.get("windows")
        try:
            count = len(parse_windows(windows)) if windows else 0
        except ValueError:
            count = 0
        is_ct = count == c
        spec = Preprocessing(kind="ct" if is_ct else "image", size=(h, w), channels=c,
                             windows=windows if is_ct else None)
    if spec.channels != c:
        raise ValueError(
            f"The preprocessing gives {spec.channels} channel(s) but the model takes {c}; export "
            "with the spec of the cache the model was trained on."
        )
    return spec.at_size((h, w)) if tuple(spec.size) != (h, w) else spec


def preprocessing_doc(input_shape, spec, preprocessing=None, config=None, *,
                      max_batch: int = MAX_BATCH) -> dict:
    """The ``assets.extra/preprocessing.json`` document: the spec (what
    ``Preprocessing.load`` reads back), the model input, what each signature expects and does,
    the output, and (when known) how the training inputs were made."""
    h, w, c = input_shape
    resize = {"method": "bilinear", "antialias": spec.antialias, "to": [h, w],
              "skipped_when_size_matches": True, "then": "rounded to k/255 as the cache stores"}
    doc = {
        "spec": spec.to_dict(),
        "layout": "NHWC",
        "model_input": {"height": h, "width": w, "channels": c, "dtype": "float32",
                        "range": [0.0, 1.0]},
        SIGNATURE_IMAGE: {
            "input": "image", "dtype": "float32", "shape": [None, None, None, c],
            "intensity": ("CT windows " + str(spec.windows) if spec.kind == "ct" else
                          "8-bit values / 255 (16-bit / 65535)") + ", in [0, 1]",
            "checks": f"non-finite values or values outside [0, 1] (+-{RANGE_TOLERANCE}) are "
            f"an InvalidArgument error; an empty batch returns [0, K]; at most {max_batch} "
            "images a request",
            "max_batch": max_batch,
            "resize": dict(resize),
        },
        SIGNATURE_BYTES: {
            "input": "image_bytes", "dtype": "string", "shape": [None],
            "formats": list(SERVING_FORMATS),
            "decode": "pipelines.preprocessing.tf_decode_image: 8-bit / 255, 16-bit PNG / 65535, "
            "JPEG with the accurate integer IDCT, alpha dropped",
            "channels": spec.to_dict()["steps"]["channels"],
            "max_pixels": MAX_IMAGE_PIXELS,
            "max_batch": max_batch,
            "resize": dict(resize),
        },
        "output": {"key": OUTPUT_KEY, "dtype": "float32", "labels": "assets/labels.txt"},
    }
    training = {}
    if isinstance(config, dict):
        training.update({k: config[k] for k in ("dataset", "image_size", "windows") if k in config})
    if isinstance(preprocessing, dict) and "kind" not in preprocessing:
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
