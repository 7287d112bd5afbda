"""FLOPs of a Keras model, counted by the TensorFlow profiler (2 FLOPs per multiply-add)."""

from __future__ import annotations


def count_flops(model, input_shape=None, batch_size: int = 1) -> int:
    """Float operations of one forward pass at ``input_shape`` (without batch), batch 1.

    Traces ``model`` into a frozen graph and asks ``tf.compat.v1.profiler`` for ``float_ops``,
    the figure papers quote as FLOPs (2 per multiply-add).
    """
    import tensorflow as tf

    from zoo.export.onnx import freeze

    shape = tuple(input_shape or model.input_shape[1:])
    spec = tf.TensorSpec((batch_size, *shape), tf.float32)
    fn = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
    graph_def = freeze(fn).graph.as_graph_def()
    with tf.Graph().as_default() as graph:
        tf.graph_util.import_graph_def(graph_def, name="")
        opts = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
        opts["output"] = "none"
        info = tf.compat.v1.profiler.profile(graph=graph, run_meta=tf.compat.v1.RunMetadata(), cmd="op", options=opts)
    return int(info.total_float_ops)
