"""medzoo: compact CNNs for medical image classification, for Keras 3 / TensorFlow.

    import zoo
    model = zoo.get_model("rensenet", input_shape=(256, 256, 1), num_classes=2)
    zoo.list_models("res*"); zoo.model_info("ichnet")
    zoo.list_families(); zoo.list_models(family="cpmid"); zoo.model_family("resnet18")
"""

import sys as _sys

if _sys.argv[:1] == ["-m"]:  # `python -m zoo.<cli>`: quiet TensorFlow before Keras loads it
    from pipelines.cli import quiet_tf_startup

    quiet_tf_startup()

from zoo import layers, models  # noqa: F401  (importing models registers every variant)
from zoo.registry import (
    get_model,
    list_families,
    list_models,
    model_entry,
    model_family,
    model_info,
    register_model,
)

__all__ = [
    "get_model",
    "list_families",
    "list_models",
    "model_entry",
    "model_family",
    "model_info",
    "register_model",
    "layers",
    "models",
]
__version__ = "0.1.0"
