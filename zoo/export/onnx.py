"""ONNX export: ``model.onnx`` beside the SavedModel, via tf2onnx from the frozen graph.

The two private APIs this needs live behind one function each, so a Keras or TensorFlow release
that moves them breaks one place (and ``tests/export/test_onnx_private_apis.py`` says which):

* :func:`patch_tf2onnx`: ``keras.src.export.tf2onnx_lib.patch_tf2onnx`` (tf2onnx 1.17 still
  uses NumPy 1 names; Keras ships the shim it uses for its own ONNX export);
* :func:`freeze`: ``tensorflow.python.framework.convert_to_constants.
  convert_variables_to_constants_v2`` (variables and captured constants become constants; also
  used by ``benchmarks.flops``).
"""

from __future__ import annotations

import importlib
import warnings
from pathlib import Path

import numpy as np

from zoo.export.signatures import OUTPUT_KEY

# (module, attribute) of each private API used here; the test imports exactly these.
PRIVATE_APIS = {
    "patch_tf2onnx": ("keras.src.export.tf2onnx_lib", "patch_tf2onnx"),
    "freeze": ("tensorflow.python.framework.convert_to_constants",
               "convert_variables_to_constants_v2"),
}


def _private(name: str):
    """The private function behind ``PRIVATE_APIS[name]``; ImportError naming it if it moved."""
    module, attr = PRIVATE_APIS[name]
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as err:
        raise ImportError(
            f"{module}.{attr} is gone from this Keras/TensorFlow; update {name}() in "
            f"zoo/export/onnx.py to where it moved."
        ) from err


def patch_tf2onnx() -> bool:
    """Apply Keras's NumPy-2 shim to tf2onnx; False (and nothing done) where Keras lacks it."""
    try:
        patch = _private("patch_tf2onnx")
    except ImportError:
        return False  # a newer tf2onnx may not need it; the conversion says if it does
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        patch()
    return True


def freeze(concrete_fn):
    """``concrete_fn`` with its variables and captured constants turned into graph constants."""
    return _private("freeze")(concrete_fn)


def _onnx_erfc(ctx, node, name, args):
    """tf2onnx handler for TF's Erfc (exact GELU), which ONNX lacks: erfc(x) = 1 - erf(x)."""
    from tf2onnx import utils

    dtype = utils.map_onnx_to_numpy_type(ctx.get_dtype(node.input[0]))
    erf = ctx.make_node("Erf", [node.input[0]])
    one = ctx.make_const(utils.make_name(f"{node.name}_one"), np.array(1, dtype=dtype))
    node.type = "Sub"
    ctx.replace_inputs(node, [one.output[0], erf.output[0]])


def export_onnx(model, path: Path, input_shape) -> None:
    """``model.onnx`` via tf2onnx from the frozen graph; input ``image``, output ``probabilities``.

    The graph is frozen first (variables and captured constants become constants):
    ``model.export(format="onnx")`` leaves constants that a layer captured outside the graph
    (e.g. a Normalization layer's mean) as extra ONNX inputs that nobody could feed.
    """
    import onnx
    import tensorflow as tf
    import tf2onnx

    h, w, c = input_shape
    policy = getattr(getattr(model, "dtype_policy", None), "name", "float32")
    if policy != "float32":
        raise ValueError(
            f"ONNX export needs a float32 model, but {model.name!r} uses the {policy!r} policy; "
            "rebuild it under keras.mixed_precision.set_global_policy('float32') and load the weights."
        )
    patch_tf2onnx()
    fn = tf.function(
        lambda image: tf.cast(model(image, training=False), tf.float32), autograph=False
    ).get_concrete_function(tf.TensorSpec([None, h, w, c], tf.float32, name="image"))
    verbosity = tf.get_logger().level
    tf.get_logger().setLevel("ERROR")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            frozen = freeze(fn)
            tf2onnx.convert.from_graph_def(
                frozen.graph.as_graph_def(),
                input_names=[t.name for t in frozen.inputs],
                output_names=[t.name for t in frozen.outputs],
                output_path=str(path),
                custom_op_handlers={"Erfc": (_onnx_erfc, [])},
            )
    except Exception as err:  # tf2onnx failures are long and deep; name the model and the way out
        raise RuntimeError(
            f"ONNX export of {model.name!r} failed ({type(err).__name__}: {err}); export the "
            "SavedModel alone (formats=('savedmodel',)) or convert it later with tf2onnx."
        ) from err
    finally:
        tf.get_logger().setLevel(verbosity)
    proto = onnx.load(str(path))
    graph = proto.graph
    if len(graph.input) != 1 or len(graph.output) != 1:
        raise RuntimeError(
            f"ONNX export of {model.name!r} produced inputs {[i.name for i in graph.input]} and "
            f"outputs {[o.name for o in graph.output]}; expected one image input and one output."
        )
    renames = {graph.input[0].name: "image", graph.output[0].name: OUTPUT_KEY}
    for node in graph.node:
        node.input[:] = [renames.get(i, i) for i in node.input]
        node.output[:] = [renames.get(o, o) for o in node.output]
    graph.input[0].name, graph.output[0].name = "image", OUTPUT_KEY
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
