"""The one model registry: names -> builders, with the facts for a model card.

Modelled on timm's registry with tf-models' strictness: names are keyed by the variant
function's name, duplicates raise, unknown names raise with close matches, ``None`` kwargs are
dropped (so unset CLI flags fall back to model defaults) and caller kwargs override the
variant's defaults. Where ``None`` is itself a documented value (``activation=None``: logits, for
every model; a switch such as myositisnet's ``attention=None``: no attention), dropping it would
silently build the default instead, so :data:`NONE_MEANS` and a variant's ``none_means`` name the
spelling that ``None`` stands for there, and ``get_model`` passes that spelling. Like timm's, each entry records the module that registered it and its
family (the card's ``family``, else that module's last name), and the lookups are public:
:func:`model_entry`, :func:`model_family`, :func:`list_families`. Each entry also carries its
training recipe (:class:`zoo.recipes.Recipe`, the only module of ours imported here: a plain
record): the variant's own, else its family's, else the default.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from zoo.recipes import Recipe, family_recipe

__all__ = [
    "register_model",
    "get_model",
    "list_models",
    "list_families",
    "model_entry",
    "model_family",
    "model_info",
    "add_info_field",
    "ModelEntry",
    "NONE_MEANS",
]

# Keyword arguments every model takes whose None is a value, not "unset": the spelling passed
# instead (the builders accept both; only the spelling survives the dropping of None kwargs).
NONE_MEANS = {"activation": "logits"}


@dataclass(frozen=True)
class ModelEntry:
    """One registered variant: its builder, defaults, card facts, family, defining module and
    training recipe."""

    name: str
    fn: Callable[..., Any]
    defaults: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    family: str = ""
    module: str = ""
    none_means: dict = field(default_factory=dict)  # the variant's own, beside NONE_MEANS
    recipe: Recipe = field(default_factory=Recipe)


_REGISTRY: dict[str, ModelEntry] = {}
_PARAM_CACHE: dict[str, int] = {}
_INFO_FIELDS: dict[str, Callable[[str], Any]] = {}


def register_model(fn=None, *, info: dict | None = None, none_means: dict | None = None,
                   recipe: Recipe | None = None,
                   **defaults):
    """Register a model variant; use bare (``@register_model``) or with card facts and defaults.

    ``@register_model(info=CARD, depth=18)`` registers the decorated function under its own name;
    ``get_model(name, **kw)`` then calls it with ``{**defaults, **kw}``. ``none_means`` maps a
    switch whose ``None`` is a documented value to the spelling of it that ``get_model`` passes
    (``{"attention": "none"}``), as :data:`NONE_MEANS` does for every model's ``activation``.
    ``recipe`` is how ``train.py`` trains it unless flags say otherwise (default: the family's
    recipe).
    """
    if recipe is not None and not isinstance(recipe, Recipe):
        raise TypeError(f"recipe must be a zoo.recipes.Recipe, got {type(recipe).__name__}.")

    def wrap(f):
        name = f.__name__
        if name in _REGISTRY:
            raise ValueError(
                f"Model name {name!r} is already registered; pick another function name."
            )
        module = f.__module__
        family = str((info or {}).get("family") or module.rsplit(".", 1)[-1])
        _REGISTRY[name] = ModelEntry(
            name=name,
            fn=f,
            defaults=dict(defaults),
            info=dict(info or {}),
            family=family,
            module=module,
            none_means=dict(none_means or {}),
            recipe=recipe or family_recipe(family),
        )
        return f

    return wrap(fn) if fn is not None else wrap


def model_entry(name: str) -> ModelEntry:
    """The :class:`ModelEntry` of ``name``; a KeyError with close matches and the list if unknown."""
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, _REGISTRY, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise KeyError(
            f"Unknown model {name!r}.{hint} Available models: {', '.join(sorted(_REGISTRY))}."
        )
    return _REGISTRY[name]


def model_family(name: str) -> str:
    """The family of ``name`` (``"cpmid"`` for ``resnet18``, ``"ichnet"`` for ``ichnet_small``)."""
    return model_entry(name).family


def list_families() -> list[str]:
    """Sorted names of the families that have at least one registered model."""
    return sorted({e.family for e in _REGISTRY.values()})


def list_models(pattern: str = "*", *, family: str | None = None) -> list[str]:
    """Sorted registered names matching an fnmatch ``pattern`` (``"res*"``) [and of ``family``]."""
    return sorted(
        n
        for n, e in _REGISTRY.items()
        if fnmatch.fnmatchcase(n, pattern) and (family is None or e.family == family)
    )


def get_model(name: str, **kwargs):
    """Build the registered model ``name``; ``None``-valued kwargs are ignored (unset), except
    where ``None`` is a documented value (:data:`NONE_MEANS`, the variant's ``none_means``): there
    it is passed as the spelling it stands for, so ``activation=None`` builds logits."""
    entry = model_entry(name)
    spelled = {**NONE_MEANS, **entry.none_means}
    given = {k: (spelled[k] if v is None else v) for k, v in kwargs.items()
             if v is not None or k in spelled}
    return entry.fn(**{**entry.defaults, **given})


def add_info_field(key: str, fn: Callable[[str], Any]) -> None:
    """Make ``model_info(name)[key]`` be ``fn(name)``, computed at each call (it must be cheap).

    How a module this one may not import adds a fact: :mod:`zoo.models.medical` adds
    ``weights``, the medical backbones shipped for the model (read from their JSON cards).
    """
    old = _INFO_FIELDS.get(key)
    if old is not None and old.__module__ != fn.__module__:  # a reload of the same module is fine
        raise ValueError(f"model_info field {key!r} is already provided by {old.__module__}; "
                         "pick another key.")
    _INFO_FIELDS[key] = fn


def model_info(name: str, *, count_params: bool = True) -> dict:
    """The card facts for ``name``: paper, DOI, task, labels, default input, parameters, family,
    module, shipped pretrained ``weights`` (``[]`` when none), ...

    ``parameters`` counts the model built with its defaults (built once, then cached); with
    ``count_params=False`` nothing is built and ``parameters`` is left out unless already cached.
    """
    entry = model_entry(name)
    info = {
        "name": name,
        **entry.info,
        "family": entry.family,
        "module": entry.module,
        "defaults": dict(entry.defaults),
        "recipe": entry.recipe.to_dict(),
    }
    if "summary" not in info:
        doc = (entry.fn.__doc__ or "").strip()
        info["summary"] = doc.splitlines()[0] if doc else ""
    for key, fn in _INFO_FIELDS.items():
        info[key] = fn(name)
    if name not in _PARAM_CACHE and not count_params:
        return info
    if name not in _PARAM_CACHE:
        model = get_model(name)
        _PARAM_CACHE[name] = int(model.count_params())
        info.setdefault("input_shape", tuple(model.input_shape[1:]))
        del model
    info["parameters"] = _PARAM_CACHE[name]
    return info
