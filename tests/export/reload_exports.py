"""Child process for the export contract tests: reload exports with TensorFlow alone.

    python tests/export/reload_exports.py job.json

``job.json``: ``{"out": "results.npz", "exports": [{"key": K, "path": VERSION_DIR,
"images": {case: "x.npy"}, "encoded": {case: ["a.png", ...]}}]}``. For each export it calls
``serving_default`` on every ``images`` case and ``serving_bytes`` on every ``encoded`` case, and
replays the warmup records of ``assets.extra/tf_serving_warmup_requests`` against the signatures
they name. Arrays go to ``out`` as ``"<key>/<case>"``; a JSON report (warmup requests, modules
loaded) goes beside it. It imports neither zoo nor keras: a SavedModel must serve without them.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow_serving.apis import prediction_log_pb2  # noqa: E402


def main(job_path):
    with open(job_path) as f:
        job = json.load(f)
    arrays, report = {}, {"exports": {}}
    for item in job["exports"]:
        loaded = tf.saved_model.load(item["path"])
        sigs = loaded.signatures
        entry = {"signatures": sorted(sigs.keys()), "warmup": []}
        for case, npy in item.get("images", {}).items():
            out = sigs["serving_default"](image=tf.constant(np.load(npy), tf.float32))
            arrays[f"{item['key']}/{case}"] = out["probabilities"].numpy()
        for case, files in item.get("encoded", {}).items():
            blobs = [open(p, "rb").read() for p in files]
            out = sigs["serving_bytes"](image_bytes=tf.constant(blobs, tf.string))
            arrays[f"{item['key']}/{case}"] = out["probabilities"].numpy()
        warmup = os.path.join(item["path"], "assets.extra", "tf_serving_warmup_requests")
        for record in tf.data.TFRecordDataset(warmup):
            log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
            request = log.predict_log.request
            inputs = {k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()}
            out = sigs[request.model_spec.signature_name](**inputs)["probabilities"].numpy()
            entry["warmup"].append({
                "model": request.model_spec.name,
                "signature": request.model_spec.signature_name,
                "inputs": {k: [str(v.dtype.name), list(v.shape)] for k, v in inputs.items()},
                "output_shape": list(out.shape),
                "finite": bool(np.all(np.isfinite(out))),
            })
        report["exports"][item["key"]] = entry
    report["zoo_imported"] = any(m == "zoo" or m.startswith("zoo.") for m in sys.modules)
    np.savez(job["out"], **arrays)
    with open(job["out"] + ".json", "w") as f:
        json.dump(report, f)


if __name__ == "__main__":
    main(sys.argv[1])
