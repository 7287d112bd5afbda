"""The gRPC client of docs/SERVING.md (linked from the README's Serve section) works against an export.

TF Serving cannot be installed here, so a minimal PredictionService runs in this process over a
real gRPC channel: like TF Serving, it looks up the requested signature of the loaded SavedModel
and feeds it the request's named input tensors. The client code is taken verbatim from the doc,
with only the address, the export path and the image file swapped in.
"""

from __future__ import annotations

import re
from concurrent import futures
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from tests.export.support import keras_probs, served_input, tiny_model
from zoo import export as zx

DOC = Path(__file__).resolve().parents[2] / "docs" / "SERVING.md"


class _PredictionService:
    def __init__(self, path):
        self.loaded = tf.saved_model.load(str(path))
        self.requests = []

    def Predict(self, request, context):
        from tensorflow_serving.apis import predict_pb2

        self.requests.append((request.model_spec.name, request.model_spec.signature_name))
        fn = self.loaded.signatures[request.model_spec.signature_name or "serving_default"]
        inputs = {k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()}
        response = predict_pb2.PredictResponse()
        for key, value in fn(**inputs).items():
            response.outputs[key].CopyFrom(tf.make_tensor_proto(value.numpy()))
        return response


def test_doc_grpc_client_against_export(tmp_path, monkeypatch):
    grpc = pytest.importorskip("grpc")
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    model = tiny_model(3, 3)
    version = zx.export_saved_model(model, tmp_path / "saved_models", model_name="ichnet",
                                    labels=("any", "epidural", "subdural"))
    pixels = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    (tmp_path / "slice.png").write_bytes(tf.io.encode_png(pixels).numpy())

    service = _PredictionService(version)
    servicer = type("Servicer", (prediction_service_pb2_grpc.PredictionServiceServicer,),
                    {"Predict": service.Predict})()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        text = DOC.read_text()
        block = re.search(r"## gRPC \(Python\).*?```python\n(.*?)```", text, re.S).group(1)
        code = (block.replace("localhost:8500", f"127.0.0.1:{port}")
                .replace("saved_models/ichnet/1", str(version)))
        monkeypatch.chdir(tmp_path)  # the doc opens slice.png from the working directory
        scope: dict = {}
        exec(compile(code, str(DOC), "exec"), scope)  # noqa: S102 - the documented client
    finally:
        server.stop(None)

    assert service.requests == [("ichnet", "serving_default"), ("ichnet", "serving_bytes")]
    assert scope["labels"] == ["any", "epidural", "subdural"]
    float_probs = tf.make_ndarray(scope["response"].outputs["probabilities"])
    want = keras_probs(model, served_input(scope["images"], (32, 32)))
    np.testing.assert_allclose(float_probs, want, rtol=0, atol=1e-5)
    want_png = keras_probs(model, served_input(pixels[None] / 255.0, (32, 32)))
    np.testing.assert_allclose(scope["probs"], want_png, rtol=0, atol=1e-5)
