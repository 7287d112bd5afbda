"""Explicit label mappings between datasets, for external validation.

A model trained on RSNA (labels ``any, epidural, intraparenchymal, intraventricular,
subarachnoid, subdural``) is validated on CQ500, whose readers mark ``ICH, IPH, IVH, SDH, EDH,
SAH`` per scan, and on PhysioNet CT-ICH, whose CSV has ``Intraventricular, Intraparenchymal,
Subarachnoid, Epidural, Subdural, No_Hemorrhage``. The tables below are the single written-down
correspondence; the ``cq500`` and ``physionet`` adapters already rename their columns to the RSNA
names (a test checks they agree with these tables), and :func:`resolve` uses the tables to pair a
model's outputs with the label columns of any other table (e.g. a ``csv`` dataset that kept the
CQ500 codes).

    pairs = resolve(model_labels, dataset_labels)     # [LabelPair(model, dataset, negate), ...]

A pair with ``negate=True`` means the truth for the model label is ``1 - column`` (PhysioNet's
``No_Hemorrhage`` is the complement of RSNA's ``any``).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "RSNA_TO_CQ500",
    "CQ500_READER_COLUMNS",
    "RSNA_TO_PHYSIONET",
    "PHYSIONET_NEGATED",
    "LabelPair",
    "LabelMappingError",
    "resolve",
    "parse_label_map",
    "describe",
]

# RSNA subtype -> CQ500 reads.csv finding code (columns "R1:ICH", "R2:ICH", ...; positive when a
# majority of the readers marked it).
RSNA_TO_CQ500 = {
    "any": "ICH",
    "epidural": "EDH",
    "intraparenchymal": "IPH",
    "intraventricular": "IVH",
    "subarachnoid": "SAH",
    "subdural": "SDH",
}
CQ500_READER_COLUMNS = ("R1", "R2", "R3")

# RSNA subtype -> PhysioNet CT-ICH hemorrhage_diagnosis_raw_ct.csv column.
RSNA_TO_PHYSIONET = {
    "any": "No_Hemorrhage",
    "epidural": "Epidural",
    "intraparenchymal": "Intraparenchymal",
    "intraventricular": "Intraventricular",
    "subarachnoid": "Subarachnoid",
    "subdural": "Subdural",
}
# PhysioNet columns that hold the complement of the RSNA label they map to.
PHYSIONET_NEGATED = frozenset({"No_Hemorrhage"})

# Every (name A, name B, negate) correspondence known; applied in both directions.
_TABLES = (
    tuple((r, c, False) for r, c in RSNA_TO_CQ500.items()),
    tuple((r, p, p in PHYSIONET_NEGATED) for r, p in RSNA_TO_PHYSIONET.items()),
)


class LabelMappingError(ValueError):
    """The model's outputs cannot be paired with the dataset's label columns."""


@dataclass(frozen=True)
class LabelPair:
    model: str  # the model output's name
    dataset: str  # the dataset column holding the truth for it
    negate: bool = False  # truth = 1 - column
    how: str = "same name"  # "same name", "CQ500 code", "PhysioNet column", "given"

    def text(self) -> str:
        col = f"1 - {self.dataset}" if self.negate else self.dataset
        return f"{self.model} <- {col} ({self.how})"


def _norm(name: str) -> str:
    return str(name).strip().lower().replace(" ", "_").replace("-", "_")


def _known_pairs():
    for table, how in zip(_TABLES, ("CQ500 code", "PhysioNet column")):
        for a, b, negate in table:
            yield a, b, negate, how
            yield b, a, negate, how


def parse_label_map(text: str | None) -> dict[str, str]:
    """``"abnormal=stone,any=ICH"`` -> ``{"abnormal": "stone", "any": "ICH"}`` (model=dataset)."""
    if not text:
        return {}
    out = {}
    for item in str(text).split(","):
        if not item.strip():
            continue
        if item.count("=") != 1 or not all(p.strip() for p in item.split("=")):
            raise LabelMappingError(
                f"--label-map entry {item.strip()!r} is not MODEL_LABEL=DATASET_LABEL; write e.g. "
                "'abnormal=stone,any=ICH'."
            )
        model, dataset = (p.strip() for p in item.split("="))
        out[model] = dataset
    return out


def resolve(model_labels, dataset_labels, *, given: dict[str, str] | None = None) -> list[LabelPair]:
    """Pair each model output with the dataset column that holds its truth.

    Order of preference per model label: ``given`` (explicit ``model=dataset`` names), the same
    name (case-insensitive), then the RSNA <-> CQ500 / PhysioNet tables. The result keeps the
    model's output order. Either every model label or every dataset label must be paired
    (a model may be scored on a subset of its outputs, or a dataset on a subset of its columns),
    unless ``given`` pairs them explicitly (``abnormal=stone`` scores a 2-class model's positive
    output alone); anything less raises :class:`LabelMappingError` with one sentence naming both label sets.
    """
    model_labels = [str(x) for x in model_labels]
    dataset_labels = [str(x) for x in dataset_labels]
    given = dict(given or {})
    by_norm = {_norm(d): d for d in dataset_labels}
    for m, d in given.items():
        if m not in model_labels:
            raise LabelMappingError(
                f"--label-map names model label {m!r}, but the model's labels are "
                f"{', '.join(model_labels)}."
            )
        if d not in dataset_labels:
            raise LabelMappingError(
                f"--label-map names dataset label {d!r}, but the dataset's labels are "
                f"{', '.join(dataset_labels)}."
            )
    pairs: list[LabelPair] = []
    used: set[str] = set()
    for m in model_labels:
        pair = None
        if m in given:
            pair = LabelPair(m, given[m], False, "given")
        elif _norm(m) in by_norm:
            pair = LabelPair(m, by_norm[_norm(m)], False, "same name")
        else:
            for a, b, negate, how in _known_pairs():
                if _norm(a) == _norm(m) and _norm(b) in by_norm:
                    pair = LabelPair(m, by_norm[_norm(b)], negate, how)
                    break
        if pair is not None and pair.dataset not in used:
            pairs.append(pair)
            used.add(pair.dataset)
    partial = len(pairs) < len(model_labels) and len(used) < len(dataset_labels)
    if not pairs or (partial and not given):
        paired = f" (paired only {', '.join(p.text() for p in pairs)})" if pairs else ""
        raise LabelMappingError(
            f"The model's labels ({', '.join(model_labels)}) do not match the dataset's labels "
            f"({', '.join(dataset_labels)}){paired}; evaluate on a dataset with these labels, or "
            "pass --label-map MODEL_LABEL=DATASET_LABEL,... to pair them explicitly."
        )
    return pairs


def describe(pairs) -> list[str]:
    """Human-readable lines for a report: ``"any <- ICH (CQ500 code)"``."""
    return [p.text() for p in pairs]
