"""TokenPositionEmbedding: a learned position embedding added to a sequence of patch tokens."""

from __future__ import annotations

import keras
from keras import layers, ops


@keras.saving.register_keras_serializable(package="zoo")
class TokenPositionEmbedding(layers.Layer):
    """Adds a learned position embedding (one row per token position) to a token sequence.

    ::

        tokens [B, N, D] ----------------------(+)--> [B, N, D]
                                                ^
        table [N, D] (learned; sized at build --+
        from N and D, truncated-normal init)

    The table has one row per position, so a model with this layer only takes weights from a
    model with the same number of tokens (for a ViT: the same patch grid).

    Args:
        stddev: standard deviation of the truncated-normal initialiser of the table, > 0.
            Default 0.02.

    Input shape: ``[batch, N, D]`` with ``N`` and ``D`` known when the layer is built.
    Output shape: the input shape.

    Reference: A. Dosovitskiy et al., "An Image is Worth 16x16 Words: Transformers for Image
    Recognition at Scale", ICLR 2021 (learned 1-D position embeddings added to patch tokens).
    """

    def __init__(self, stddev: float = 0.02, **kwargs):
        super().__init__(**kwargs)
        self.stddev = float(stddev)
        if not self.stddev > 0:
            raise ValueError(f"stddev must be positive, got {stddev!r}.")

    def build(self, input_shape):
        if len(input_shape) != 3 or input_shape[1] is None or input_shape[2] is None:
            raise ValueError(
                f"TokenPositionEmbedding needs [batch, tokens, dim] with known tokens and dim, "
                f"got {tuple(input_shape)}."
            )
        self.table = self.add_weight(
            name="table",
            shape=(int(input_shape[1]), int(input_shape[2])),
            initializer=keras.initializers.TruncatedNormal(stddev=self.stddev),
        )

    def call(self, tokens):
        return tokens + ops.cast(ops.expand_dims(self.table, 0), tokens.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "stddev": self.stddev}
