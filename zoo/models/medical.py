"""Shipped medical backbones: ``zoo.get_model(name, weights="medical")``, offline.

medzoo ships pretrained backbones of its compact models as package data in ``zoo/weights/``.
Each one is two files, written by the producer of the weights::

    <model>-medical-<size>.weights.h5   a backbone file (zoo.models.backbone.save_backbone):
                                        the medzoo_backbone marker and metadata (model,
                                        image_size, channels, corpus, ...)
    <model>-medical-<size>.json         its card (write_card): model, file, sha256, image_size,
                                        channels, corpus {name, sources, held_out, card},
                                        command, date, versions, corpus_metric, curve

``weights="medical"`` picks the card of the model whose ``image_size`` is nearest the model's
input (:func:`resolve`), checks the file against the card's sha256 (:func:`verify`) and loads
it under a fresh head (:func:`zoo.models.backbone.load_backbone`, which adapts the first
convolution to any channel count). Nothing is downloaded. The folder is :data:`WEIGHTS_DIR`,
or the folder named by the environment variable ``MEDZOO_WEIGHTS_DIR`` (tests, or weights
kept outside the install). :func:`available` reads the cards only, so it is cheap:
``zoo.model_info(name)["weights"]`` lists them (:func:`shipped`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from pathlib import Path

from pipelines.fs import atomic_write_json
from zoo.models.backbone import is_backbone_file, read_metadata
from zoo.registry import add_info_field, list_models

__all__ = ["MEDICAL", "ENV_VAR", "WEIGHTS_DIR", "MedicalWeightsError", "weights_dir",
           "file_name", "available", "resolve", "verify", "sha256_of", "write_card",
           "describe", "describe_line", "shipped"]

MEDICAL = "medical"
ENV_VAR = "MEDZOO_WEIGHTS_DIR"
WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"  # zoo/weights, package data
SUFFIX = ".weights.h5"
REQUIRED = ("model", "file", "sha256", "image_size", "channels")
_HEX64 = re.compile(r"[0-9a-f]{64}")


class MedicalWeightsError(ValueError):
    """Shipped weights that are absent, changed or unusable: one sentence naming the fix."""


def weights_dir() -> Path:
    """The folder of shipped weights: ``$MEDZOO_WEIGHTS_DIR`` if set, else :data:`WEIGHTS_DIR`."""
    return Path(os.environ[ENV_VAR]) if os.environ.get(ENV_VAR) else WEIGHTS_DIR


def file_name(model: str, image_size: int) -> str:
    """``<model>-medical-<size>.weights.h5``: the name a shipped backbone file has."""
    return f"{model}-medical-{int(image_size)}{SUFFIX}"


def sha256_of(path) -> str:
    """Hex sha256 of the bytes of ``path``."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _size(card: dict) -> int:
    """A card's image size as one int (``64`` or ``[64, 64]``)."""
    size = card["image_size"]
    return int(size[0] if isinstance(size, (list, tuple)) else size)


def _problem(card, folder: Path) -> str | None:
    """Why ``card`` cannot be used (None when it can)."""
    if not isinstance(card, dict):
        return f"it holds a JSON {type(card).__name__}, not an object"
    missing = [key for key in REQUIRED if key not in card]
    if missing:
        return f"it lacks {', '.join(missing)}"
    name = card["file"]
    if not isinstance(name, str) or Path(name).name != name or not name.endswith(SUFFIX):
        return f"its file {name!r} is not a bare *{SUFFIX} name"
    if not isinstance(card["model"], str) or not _HEX64.fullmatch(str(card["sha256"])):
        return "its model or sha256 is not valid"
    try:
        if _size(card) < 1 or int(card["channels"]) < 1:
            return "its image_size or channels is not positive"
    except (TypeError, ValueError, IndexError):
        return "its image_size or channels is not a number"
    if not (folder / name).is_file():
        return f"its weights file {name} is missing"
    return None


def available() -> dict[str, list[dict]]:
    """Model name -> its usable cards, sorted by image size; a card that cannot be read or
    used is skipped with a one-line warning."""
    folder = weights_dir()
    found: dict[str, list[dict]] = {}
    if not folder.is_dir():
        return found
    for path in sorted(folder.glob("*.json")):
        try:
            card = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError):
            card, problem = None, "it is not valid JSON"
        else:
            problem = _problem(card, folder)
        if problem:
            warnings.warn(f"Skipping the medical weights card {path.name}: {problem}.", stacklevel=2)
            continue
        found.setdefault(card["model"], []).append(card)
    return {model: sorted(cards, key=_size) for model, cards in sorted(found.items())}


def resolve(model: str, image_size: int | None = None, *, channels: int | None = None
            ) -> tuple[Path, dict]:
    """``(path, card)`` of ``model``'s shipped backbone whose image size is nearest
    ``image_size`` (ties: the card with ``channels``, then the larger size; None: the largest).
    MedicalWeightsError (one sentence) when the model has none."""
    shipped_cards = available()
    cards = shipped_cards.get(model)
    if not cards:
        if not shipped_cards:
            raise MedicalWeightsError(
                f"weights='medical' needs shipped medical weights, and none are shipped in this "
                f"install ({weights_dir().name}/ holds no card); pass weights=None or a local "
                ".weights.h5 file.")
        have = ", ".join(shipped_cards)
        hint = ("" if model in list_models() else
                f" ('{model}' is not a registered name: build the model without name=)")
        raise MedicalWeightsError(
            f"No medical weights are shipped for {model!r}{hint}; weights='medical' exists for "
            f"{have} only, so build one of those or pass weights=None.")
    want = image_size if image_size is not None else max(_size(c) for c in cards)

    def rank(card):
        same = channels is not None and int(card["channels"]) == int(channels)
        return (abs(_size(card) - int(want)), not same, -_size(card))

    card = min(cards, key=rank)
    return weights_dir() / card["file"], card


def verify(path, card: dict) -> None:
    """MedicalWeightsError (one sentence) unless ``path`` exists and its sha256 is the card's."""
    path = Path(path)
    if not path.is_file():
        raise MedicalWeightsError(f"The shipped weights file {path.name} is missing; reinstall "
                                  "medzoo (or pass weights=None).")
    if sha256_of(path) != str(card.get("sha256")):
        raise MedicalWeightsError(
            f"The shipped weights file {path.name} does not match the sha256 in its card, so it "
            "was changed or is corrupt; reinstall medzoo.")


def write_card(weights_path, card: dict) -> Path:
    """Write ``card`` beside ``weights_path`` as ``<name without .weights.h5>.json``
    (atomically), with ``file`` and ``sha256`` filled in from the file; returns the JSON path."""
    weights_path = Path(weights_path)
    name = weights_path.name
    stem = name[: -len(SUFFIX)] if name.endswith(SUFFIX) else weights_path.stem
    full = {**card, "file": name, "sha256": sha256_of(weights_path)}
    missing = [key for key in REQUIRED if key not in full]
    if missing:
        raise ValueError(f"The card for {name} lacks {', '.join(missing)}; add them before "
                         "writing it.")
    return atomic_write_json(weights_path.with_name(stem + ".json"), full)


def _corpus_summary(corpus) -> dict:
    """A corpus record without paths: name, sources, held_out."""
    if not isinstance(corpus, dict):
        return {}
    return {key: corpus[key] for key in ("name", "sources", "held_out") if corpus.get(key)}


def describe(weights, model_name: str | None = None, input_shape=None) -> dict | None:
    """What ``weights`` (as given to ``get_model``) starts a model from, for records and logs:
    ``{"weights", "file", "sha256", "corpus", ...}`` with file names only (never a folder's
    path); None for ``weights=None``. ``"medical"`` resolves as ``get_model`` does, for
    ``model_name`` at ``input_shape`` ``(H, W, C)``."""
    if weights is None:
        return None
    shape = tuple(input_shape) if input_shape is not None else (None, None, None)
    if str(weights) == MEDICAL:
        path, card = resolve(model_name, shape[0], channels=shape[2])
        return {"weights": MEDICAL, "file": path.name, "sha256": card["sha256"],
                "model": card["model"], "image_size": card["image_size"],
                "channels": card["channels"], "corpus": _corpus_summary(card.get("corpus")),
                "corpus_metric": card.get("corpus_metric")}
    path = Path(os.fspath(weights))
    record = {"weights": path.name, "file": path.name,
              "sha256": sha256_of(path) if path.is_file() else None}
    if is_backbone_file(path):
        meta = read_metadata(path)
        record.update(kind="backbone", model=meta.get("model"),
                      corpus=_corpus_summary(meta.get("corpus")))
    return record


def describe_line(record: dict | None) -> str:
    """One console line for a :func:`describe` record."""
    if not record:
        return "Weights: none (random initialisation)."
    sources = (record.get("corpus") or {}).get("sources")
    corpus = f", corpus {', '.join(map(str, sources))}" if sources else ""
    name = "medical " if record["weights"] == MEDICAL else ""
    return f"Weights: {name}{record['file']} (sha256 {record['sha256']}{corpus})."


def shipped(model: str) -> list[dict]:
    """The shipped weights of ``model`` as ``model_info`` lists them (cards only, cheap)."""
    return [{"name": MEDICAL, "file": card["file"], "image_size": card["image_size"],
             "channels": card["channels"], "sha256": card["sha256"],
             "corpus_metric": card.get("corpus_metric")}
            for card in available().get(model, [])]


add_info_field("weights", shipped)
