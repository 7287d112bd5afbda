"""Model families: one file a family, each with a spec table, build_<family>() and variants.

Importing this package registers every variant in :mod:`zoo.registry`.
"""

from zoo.models import (  # noqa: F401
    baselines,
    cpmid,
    cxr,
    ichnet,
    myositisnet,
    rensenet,
)
