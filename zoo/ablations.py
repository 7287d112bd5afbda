"""The papers' claims and the ablation switches that test them: one table, read by the twin tests
and by ``python -m benchmarks.ablations``.

Each :class:`Claim` names a model, a builder switch whose first value is the paper's form, the
alternatives (the "twins", same widths and head, different only in the switched part), the
phantom built to test the claim, and a regular expression for the layer names of the switched
part (everything else must match the paper form layer by layer, name and shape).

    from zoo.ablations import CLAIMS, twins
    twins()              # [("rensenet", {"downsample": "avg"}), ...] every registered twin
    twins("ichnet*")     # those of matching models

Nothing here imports TensorFlow or Keras.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

__all__ = ["Claim", "CLAIMS", "SWITCHES", "claim", "twins"]


@dataclass(frozen=True)
class Claim:
    """One paper claim: ``switch=paper`` on ``models`` against ``switch=twin`` for each twin."""

    key: str
    paper: str  # the paper the claim comes from
    text: str  # the claim, in a sentence
    models: tuple  # registered variants that have the switch
    switch: str  # the builder argument
    paper_value: str
    twin_values: tuple
    phantom: str  # "small_lesion" or "speckle"
    switched: str  # regex (re.search) of the layer names of the switched part

    @property
    def values(self) -> tuple:
        return (self.paper_value, *self.twin_values)


CLAIMS = (
    Claim(
        key="edge_conservative",
        paper="RenseNet",
        text="the edge-conservative module keeps the detail pooling throws away, so small "
        "lesions are classified better",
        models=("rensenet", "rensenet_small"),
        switch="downsample",
        paper_value="edge",
        twin_values=("avg", "max", "strided"),
        phantom="small_lesion",
        switched=r"^(stem|stage\d+)_pool(_conv|_bn|_relu)?$",
    ),
    Claim(
        key="rense_block",
        paper="RenseNet",
        text="Rense blocks (residual + dense) beat either alone",
        models=("rensenet", "rensenet_small"),
        switch="block",
        paper_value="rense",
        twin_values=("dense", "residual"),
        phantom="small_lesion",
        switched=r"^stage\d+_(rense|dense|residual)$",
    ),
    Claim(
        key="soft_threshold",
        paper="Myositis CNN",
        text="soft-threshold attention removes redundant features",
        models=("myositisnet",),
        switch="attention",
        paper_value="soft_threshold",
        twin_values=("se", "none"),
        phantom="speckle",
        switched=r"_(shrink|se|se_gap|se_fc1|se_fc2)$",
    ),
    Claim(
        key="alternating_convs",
        paper="Myositis CNN",
        text="alternating depthwise-separable and conventional convolutions gives the accuracy "
        "at a fraction of the compute",
        models=("myositisnet",),
        switch="convs",
        paper_value="alternating",
        twin_values=("dsc", "conventional"),
        phantom="speckle",
        switched=r"^stage\d+_",
    ),
    Claim(
        key="multi_receptive_field",
        paper="ICH classifier",
        text="the multi-receptive-field block lets a tiny depthwise-separable network match "
        "large ones",
        models=("ichnet", "ichnet_small"),
        switch="receptive_field",
        paper_value="multi",
        twin_values=("single",),
        phantom="small_lesion",
        switched=r"^stage\d+_(mrf|single)\d+$",
    ),
)

# switch name -> its claim
SWITCHES = {c.switch: c for c in CLAIMS}


def claim(key: str) -> Claim:
    """The claim called ``key`` (a KeyError listing the keys otherwise)."""
    for c in CLAIMS:
        if c.key == key:
            return c
    raise KeyError(f"Unknown claim {key!r}; claims are {', '.join(c.key for c in CLAIMS)}.")


def twins(pattern: str = "*") -> list[tuple[str, dict]]:
    """Every (model, kwargs) twin of a claim, for models matching the fnmatch ``pattern``."""
    return [
        (model, {c.switch: value})
        for c in CLAIMS
        for model in c.models
        if fnmatch.fnmatchcase(model, pattern)
        for value in c.twin_values
    ]
