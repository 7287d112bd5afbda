"""The paper blocks, one per file; keras.ops only, so they run on any Keras backend."""

from zoo.layers.edge_conservative_pooling import EdgeConservativePooling
from zoo.layers.log_sum_exp_pooling import GlobalLogSumExpPooling2D
from zoo.layers.multi_receptive_field_block import MultiReceptiveFieldBlock
from zoo.layers.rense_block import RenseBlock
from zoo.layers.soft_threshold_attention import SoftThresholdAttention
from zoo.layers.token_position_embedding import TokenPositionEmbedding

__all__ = [
    "EdgeConservativePooling",
    "GlobalLogSumExpPooling2D",
    "MultiReceptiveFieldBlock",
    "RenseBlock",
    "SoftThresholdAttention",
    "TokenPositionEmbedding",
]
