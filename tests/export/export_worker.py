"""Child process for the every-model test: export registered models and record Keras outputs.

    python tests/export/export_worker.py job.json

``job.json``: ``{"names": [...], "shape": [H, W, C], "base": EXPORT_ROOT, "images": "x.npy",
"pngs": ["a.png", ...], "out": "expected.npz"}``. For each name: build at ``shape`` with two
classes, compute the Keras outputs (eager call) on the float images and on the PNG pixels / 255,
export with zoo.export. Outputs go to ``out`` as ``"<name>/images"`` and ``"<name>/png"``;
``out + ".json"`` maps each name to its version directory or its error.
"""

import gc
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import zoo  # noqa: E402
from zoo.export import export_saved_model  # noqa: E402


def main(job_path):
    with open(job_path) as f:
        job = json.load(f)
    # serving_default rounds float inputs to k/255 as the cache stores them (the preprocessing
    # spec), so the Keras reference sees the rounded images
    from pipelines.preprocessing import quantize

    images = quantize(np.load(job["images"]))
    pixels = np.stack([tf.io.decode_png(open(p, "rb").read()).numpy() for p in job["pngs"]])
    arrays, result = {}, {}
    for name in job["names"]:
        try:
            model = zoo.get_model(name, input_shape=tuple(job["shape"]), num_classes=2)
            arrays[f"{name}/images"] = keras.ops.convert_to_numpy(model(images, training=False))
            arrays[f"{name}/png"] = keras.ops.convert_to_numpy(
                model(pixels.astype(np.float32) / np.float32(255), training=False)
            )
            path = export_saved_model(model, job["base"], model_name=name,
                                      labels=("normal", "abnormal"))
            result[name] = {"path": str(path)}
        except Exception as err:  # reported per model by the test
            result[name] = {"error": f"{type(err).__name__}: {err}"}
        keras.backend.clear_session()
        gc.collect()
    np.savez(job["out"], **arrays)
    with open(job["out"] + ".json", "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main(sys.argv[1])
