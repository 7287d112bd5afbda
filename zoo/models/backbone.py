"""Pretrained backbones: the weights up to ``features``, saved alone and loaded under a new head.

A backbone file (``backbone.weights.h5``, written by ``train.py --pretrain``) is HDF5::

    attrs: medzoo_backbone = 1, metadata = JSON (model, kwargs, input size, channels, corpus ...)
    layers/<layer name>/<i>   the i-th weight of each layer up to and including ``features``

:func:`load_backbone` puts it into a model of the same architecture with any head: every layer
up to ``features`` that has weights must be in the file with the same shapes, and is loaded;
the head (the layers after ``features``) keeps its fresh initialisation. The one tolerated
difference is the input channel count of the first convolution, adapted as timm's
``in_chans`` does: summed over the input channels for a 1-channel model, repeated and rescaled
by ``C_file / C_model`` for more. Anything else is one sentence naming the layer and both
shapes.

A file may store its floating-point weights in a narrower type than the model's
(:func:`recast_backbone`, ``stored_dtype`` in the metadata): the shipped ``mobilenetv3_small``
backbone is float16 to fit the package's 2 MB budget per compact model. Loading casts every
weight to the model's own dtype, so the model trains in float32 from the rounded values.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np

from pipelines.fs import atomic_path
from zoo.models.common import FEATURES
from zoo.models.weightfile import (
    WeightsFileError,
    check_declared_size,
    check_finite,
    open_h5,
    parse_metadata,
)

__all__ = ["backbone_layers", "save_backbone", "load_backbone", "read_metadata", "recast_backbone",
           "is_backbone_file", "adapt_input_kernel", "BackboneError"]

MARKER = "medzoo_backbone"


class BackboneError(WeightsFileError):
    """A backbone file that does not fit the model, or is not a backbone file at all."""


def backbone_layers(model) -> list:
    """The layers of ``model`` up to and including ``features`` (in graph order)."""
    names = [layer.name for layer in model.layers]
    if FEATURES not in names:
        raise BackboneError(f"Model {model.name!r} has no layer named {FEATURES!r}; only zoo models can hold a backbone.")
    return model.layers[: names.index(FEATURES) + 1]


def head_layers(model) -> list:
    """The layers after ``features`` (the classifier head)."""
    names = [layer.name for layer in model.layers]
    return model.layers[names.index(FEATURES) + 1:]


def save_backbone(model, path, metadata: dict | None = None) -> str:
    """Write the weights of :func:`backbone_layers` to ``path`` (atomically); returns the path."""
    arrays = {}
    for layer in backbone_layers(model):
        weights = layer.get_weights()
        if weights:
            arrays[layer.name] = [np.asarray(w) for w in weights]
    return _write(path, metadata or {}, arrays)


def _write(path, metadata: dict, arrays: dict, libver=None) -> str:
    import h5py

    with atomic_path(path) as tmp, h5py.File(tmp, "w", libver=libver) as f:
        f.attrs[MARKER] = 1
        f.attrs["metadata"] = json.dumps(metadata)
        group = f.create_group("layers")
        for name, weights in arrays.items():
            sub = group.create_group(name)
            for i, w in enumerate(weights):
                sub.create_dataset(str(i), data=w)
    return os.fspath(path)


def recast_backbone(src, dst, dtype: str = "float16") -> str:
    """Write the backbone file ``src`` to ``dst`` with every floating-point weight stored as
    ``dtype`` (integers untouched) and ``stored_dtype`` in the metadata; returns ``dst``.

    For the size of shipped files: float16 halves the data, and the compact HDF5 layout
    (``libver="latest"``) trims the per-dataset headers (``mobilenetv3_small`` at 64 px:
    3.9 MB as float32, 1.96 MB here). :func:`load_backbone` casts back to the model's dtype.
    """
    with _open(src) as f:  # one read: the marker, the metadata and every weight
        if not f.attrs.get(MARKER, 0):
            raise BackboneError(f"{os.fspath(src)!r} is not a medzoo backbone file (no {MARKER} marker).")
        meta = parse_metadata(f.attrs.get("metadata", "{}"), src, BackboneError)
        arrays = {name: [np.asarray(group[str(i)][()]) for i in range(len(group))]
                  for name, group in f["layers"].items()}
    for weights in arrays.values():
        weights[:] = [w.astype(dtype) if w.dtype.kind == "f" else w for w in weights]
    return _write(dst, {**meta, "stored_dtype": np.dtype(dtype).name}, arrays, libver="latest")


def _open(path):
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Backbone file {path!r} does not exist; pass the backbone.weights.h5 of a --pretrain run.")
    return open_h5(path, "Backbone file", BackboneError)


def is_backbone_file(path) -> bool:
    """True for a file written by :func:`save_backbone` (False for other .h5 files)."""
    path = os.fspath(path)
    if not (os.path.isfile(path) and path.endswith(".h5")):
        return False
    try:
        with _open(path) as f:
            return bool(f.attrs.get(MARKER, 0))
    except (BackboneError, OSError, KeyError, TypeError, ValueError):
        return path.endswith("backbone.weights.h5")  # truncated: load_backbone says so


def read_metadata(path) -> dict:
    """The metadata stored in a backbone file."""
    with _open(path) as f:
        try:
            marker, text = f.attrs.get(MARKER, 0), f.attrs.get("metadata", "{}")
        except (OSError, KeyError, TypeError, ValueError):  # h5py on a corrupt attribute table
            raise BackboneError(f"Backbone file {os.fspath(path)!r} is truncated or corrupt; copy it "
                                "again or re-run the pretraining.") from None
        if not marker:
            raise BackboneError(f"{os.fspath(path)!r} is not a medzoo backbone file (no {MARKER} marker).")
        return parse_metadata(text, path, BackboneError)


def adapt_input_kernel(kernel: np.ndarray, channels: int) -> np.ndarray:
    """A conv kernel ``[kh, kw, C, out]`` for ``channels`` inputs (timm's ``adapt_input_conv``).

    1 channel: sum over C (a grey image through an RGB-trained filter gives the same response
    as the grey image repeated C times). More: repeat C to ``channels`` (cut to length), scaled
    by ``C / channels`` so the response to a constant image keeps its size.
    """
    kernel = np.asarray(kernel)
    c = kernel.shape[2]
    if channels == c:
        return kernel
    if channels == 1:
        return kernel.sum(axis=2, keepdims=True)
    reps = math.ceil(channels / c)
    out = np.concatenate([kernel] * reps, axis=2)[:, :, :channels]
    return out * (c / channels)


def _checked_dataset(group, i: int, w, path, layer: str, where: str, *, adapt: bool):
    """Weight ``i`` of ``layer`` as an unread dataset, its shape compared from the file's
    metadata (the first convolution may differ in input channels only)."""
    try:
        dataset = group[str(i)]
        shape = tuple(dataset.shape)
    except (KeyError, OSError, AttributeError, TypeError):
        raise BackboneError(f"Backbone file {path!r} is truncated (layer {layer!r} weight {i} cannot be read); copy it again.") from None
    adaptable = adapt and len(shape) == 4 and shape[:2] + shape[3:] == w.shape[:2] + w.shape[3:]
    if shape != tuple(w.shape) and not adaptable:
        raise BackboneError(
            f"Layer {layer!r} weight {i} has shape {tuple(w.shape)} in {where.replace('{shape}', str(shape))}; build "
            "the model with the backbone's input size and architecture."
        )
    return dataset


def _read_weight(dataset, i: int, w, path, layer: str):
    """The checked ``dataset`` read, refused if not finite, adapted to ``w``'s input channels."""
    try:
        v = np.asarray(dataset[()])
    except (OSError, TypeError, ValueError):
        raise BackboneError(f"Backbone file {path!r} is truncated (layer {layer!r} weight {i} cannot be read); copy it again.") from None
    check_finite([v], path, f"layer {layer!r} weight {i}", BackboneError)
    if v.shape != w.shape:
        v = adapt_input_kernel(v, w.shape[2])
    return v.astype(w.dtype)


def load_backbone(model, path):
    """Load the backbone file ``path`` into ``model`` (head left fresh); returns the model."""
    path = os.fspath(path)
    layers = [layer for layer in backbone_layers(model) if layer.weights]
    try:
        with _open(path) as f:
            if not f.attrs.get(MARKER, 0):
                raise BackboneError(f"{path!r} is not a medzoo backbone file; pass the backbone.weights.h5 of a --pretrain run.")
            meta = parse_metadata(f.attrs.get("metadata", "{}"), path, BackboneError)
            origin = meta.get("model", "another model")
            # sizes from the file's metadata first: the input adaptation may read up to 64x a
            # layer's own kernel (64 file channels for 1), nothing more
            budget = 64 * sum(int(np.prod(w.shape)) * 8 for layer in layers for w in layer.weights)
            check_declared_size(f, path, budget + 2**20, BackboneError)
            stored = f["layers"]
            wanted = {layer.name for layer in layers}
            extra = sorted(set(stored) - wanted)
            if extra:
                raise BackboneError(
                    f"Backbone file {path!r} (from {origin}) has weights for layer {extra[0]!r}, "
                    f"which {model.name} does not have; it belongs to another architecture."
                )
            first_conv = next((layer.name for layer in layers if any(len(w.shape) == 4 for w in layer.weights)), None)
            values = {}
            for layer in layers:
                if layer.name not in stored:
                    raise BackboneError(
                        f"Backbone file {path!r} (from {origin}) has no weights for layer "
                        f"{layer.name!r} of {model.name}; it belongs to another architecture."
                    )
                group = stored[layer.name]
                current = layer.get_weights()
                if len(group) != len(current):
                    raise BackboneError(
                        f"Layer {layer.name!r} has {len(current)} weights in {model.name} but "
                        f"{len(group)} in the backbone file {path!r} (from {origin})."
                    )
                where = f"{model.name} but {{shape}} in the backbone file {path!r} (from {origin})"
                values[layer.name] = [_checked_dataset(group, i, w, path, layer.name, where,
                                                       adapt=layer.name == first_conv)
                                      for i, w in enumerate(current)]
            for layer in layers:  # every shape checked: now the data
                values[layer.name] = [_read_weight(d, i, w, path, layer.name)
                                      for i, (d, w) in enumerate(zip(values[layer.name], layer.get_weights()))]
    except BackboneError:
        raise
    except (OSError, KeyError, TypeError, ValueError, AttributeError, RuntimeError):  # h5py, corrupt file
        raise BackboneError(f"Backbone file {path!r} is truncated or corrupt; copy it again or re-run the pretraining.") from None
    for layer in layers:
        layer.set_weights(values[layer.name])
    return model
