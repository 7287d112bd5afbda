"""Label sets of the default outputs; defined in :mod:`pipelines.labels` (no TensorFlow import)."""

from pipelines.labels import BINARY, CXR14, MYOSITIS, RSNA_ICH

__all__ = ["BINARY", "CXR14", "MYOSITIS", "RSNA_ICH"]
