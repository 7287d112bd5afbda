"""The two private Keras/TensorFlow APIs behind zoo.export.onnx are still where it imports them.

If one of these fails after a Keras or TensorFlow upgrade, the fix is in one function of
zoo/export/onnx.py (named in the message), not scattered over the code.
"""

import importlib

import numpy as np
import pytest
import tensorflow as tf

from zoo.export import onnx as zonnx


@pytest.mark.parametrize("wrapper", sorted(zonnx.PRIVATE_APIS))
def test_private_api_still_exists(wrapper):
    module, attr = zonnx.PRIVATE_APIS[wrapper]
    try:
        found = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as err:
        pytest.fail(
            f"{module}.{attr} moved or vanished in this Keras/TensorFlow ({err}); zoo.export "
            f"needs it for ONNX export: update {wrapper}() in zoo/export/onnx.py "
            "(and benchmarks/flops.py keeps working through freeze())."
        )
    assert callable(found), f"{module}.{attr} is no longer a function; update {wrapper}()."


def test_freeze_turns_variables_into_constants():
    v = tf.Variable([[2.0, 3.0]])
    fn = tf.function(lambda x: x * v).get_concrete_function(tf.TensorSpec([None, 2], tf.float32))
    frozen = zonnx.freeze(fn)
    ops = {node.op for node in frozen.graph.as_graph_def().node}
    assert "ReadVariableOp" not in ops and "VarHandleOp" not in ops
    out = frozen(tf.constant([[1.0, 1.0]]))
    out = out[0] if isinstance(out, (list, tuple)) else out
    np.testing.assert_allclose(out.numpy(), [[2.0, 3.0]])


def test_patch_tf2onnx_applies():
    assert zonnx.patch_tf2onnx() is True


def test_a_moved_api_fails_with_the_place_to_fix(monkeypatch):
    monkeypatch.setitem(zonnx.PRIVATE_APIS, "freeze", ("tensorflow.nowhere", "gone"))
    with pytest.raises(ImportError, match=r"update freeze\(\) in zoo/export/onnx.py"):
        zonnx.freeze(None)
