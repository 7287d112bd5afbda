"""Training recipes: how each registered model is trained unless a flag says otherwise.

A recipe is a typed, frozen record (in the spirit of timm's ``pretrained_cfg``, not a free-form
dict): the optimisation settings a model was tuned with, and the input sizes it was tuned at.
``zoo.register_model(..., recipe=Recipe(...))`` attaches one to a variant; a variant that
declares none gets its family's recipe from :data:`FAMILY_RECIPES`, else :data:`DEFAULT_RECIPE`
(the zoo's long-standing ``train.py`` defaults), so nothing changes unless a model says so.

``train.py`` resolves each optimisation flag left unset from the model's recipe, and the
resolved config saved with the run records the effective value and where it came from
(``origins``). ``zoo.model_info(name)["recipe"]`` and the model card show the recipe.

No TensorFlow, no Keras, nothing of ours: the registry imports this module.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

__all__ = ["COMPACT_RECIPE", "DEFAULT_RECIPE", "FAMILY_RECIPES", "ICHNET_RECIPE", "RECIPE_FIELDS", "RESERVED_MODEL_KWARGS", "Recipe", "family_recipe",
           "off_or_positive"]


# builder arguments a run decides (--image-size, the dataset's labels, --weights): never model_kwargs
RESERVED_MODEL_KWARGS = frozenset({"input_shape", "num_classes", "activation", "weights"})


def off_or_positive(value) -> bool:
    """Whether ``value`` is a number >= 0 (not a bool): the options where 0 means off (``ema``,
    ``mixup``, ``cutmix``), checked alike by a recipe and by the training config."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0


@dataclass(frozen=True)
class Recipe:
    """One model's training recipe; every field but ``input_sizes`` is a ``train.py`` option.

    Args:
        optimizer: ``adam``, ``adamw``, ``sgd`` or ``rmsprop``.
        lr: peak learning rate (after warmup).
        batch_size: the global batch.
        warmup_epochs: linear warmup length, in epochs (may be fractional).
        schedule: ``constant``, ``cosine`` or ``step`` decay after warmup.
        weight_decay: decoupled weight decay (adamw) or L2 factor.
        label_smoothing: in [0, 1).
        augment: True (the default spec), False, or a spec such as ``"flip,rotation=10"``.
        epochs: the ceiling on epochs.
        early_stop: patience in epochs on the scored split's mean AUROC; 0 = off.
        ema: the horizon, in epochs, of an exponential moving average of the weights that is
            evaluated, kept and exported (``zoo.training.ema``); 0 = off.
        mixup: MixUp's Beta(alpha, alpha) parameter: each training image is blended with another
            of its batch, labels in the same proportion (``keras.layers.MixUp``); 0 = off.
        cutmix: CutMix's Beta parameter (a box of another image is pasted in, labels by area,
            ``keras.layers.CutMix``); 0 = off. With both set, batches alternate between them.
        input_sizes: the square input sizes (pixels) the recipe was tuned at; informative, the
            input size itself comes from ``--image-size``.
        model_kwargs: architecture settings the recipe trains the model with (``get_model``
            keyword arguments, e.g. ``{"output_stride": 8}``), under the user's own
            ``--model-kwargs``. They hold where the recipe was tuned: at an input size up to the
            largest of ``input_sizes`` (:meth:`architecture`), for every run there (from scratch,
            ``--pretrain`` and a fine-tune alike, so a backbone pretrained at those sizes is
            fine-tuned in the form it was pretrained in). Above them the model's own defaults hold.
    """

    optimizer: str = "adamw"
    lr: float = 3e-3
    batch_size: int = 32
    warmup_epochs: float = 0.5
    schedule: str = "cosine"
    weight_decay: float = 1e-4
    label_smoothing: float = 0.0
    augment: bool | str = True
    epochs: int = 20
    early_stop: int = 0
    ema: float = 0.0
    mixup: float = 0.0
    cutmix: float = 0.0
    input_sizes: tuple[int, ...] = (96,)
    model_kwargs: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        for name in ("batch_size", "epochs"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"Recipe {name} must be a positive integer, got {value!r}.")
        if not isinstance(self.early_stop, int) or self.early_stop < 0:
            raise ValueError(f"Recipe early_stop must be 0 (off) or a positive integer, got {self.early_stop!r}.")
        if not off_or_positive(self.ema):
            raise ValueError(f"Recipe ema must be 0 (off) or a positive number of epochs, got {self.ema!r}.")
        for name in ("mixup", "cutmix"):
            value = getattr(self, name)
            if not off_or_positive(value):
                raise ValueError(f"Recipe {name} must be 0 (off) or a positive Beta parameter, got {value!r}.")
        if not self.lr > 0:
            raise ValueError(f"Recipe lr must be positive, got {self.lr!r}.")
        sizes = tuple(self.input_sizes)
        if not sizes or not all(isinstance(s, int) and s > 0 for s in sizes):
            raise ValueError(f"Recipe input_sizes must be positive integers, got {self.input_sizes!r}.")
        object.__setattr__(self, "input_sizes", sizes)
        kwargs = self.model_kwargs
        if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
            raise ValueError(f"Recipe model_kwargs must be a mapping of get_model keyword arguments, got {kwargs!r}.")
        reserved = sorted(RESERVED_MODEL_KWARGS & set(kwargs))
        if reserved:
            raise ValueError(f"Recipe model_kwargs may not set {', '.join(reserved)}: the run decides them.")
        object.__setattr__(self, "model_kwargs", dict(kwargs))

    def architecture(self, image_size) -> dict:
        """The ``model_kwargs`` that hold for a run at ``image_size`` px: all of them up to the
        largest size the recipe was tuned at, else none."""
        if not self.model_kwargs:
            return {}
        try:
            tuned = int(image_size) <= max(self.input_sizes)
        except (TypeError, ValueError):
            return {}  # a bad size is validate()'s sentence, not ours
        return dict(self.model_kwargs) if tuned else {}

    def to_dict(self) -> dict:
        """The recipe as plain data (``input_sizes`` as a list), for JSON, YAML and cards."""
        values = dataclasses.asdict(self)
        values["input_sizes"] = list(self.input_sizes)
        return values

    def replace(self, **changes) -> Recipe:
        """A copy with ``changes`` (a family's recipe, adjusted for one variant)."""
        return dataclasses.replace(self, **changes)


# the options a recipe fills in TrainConfig where they are unset (input_sizes is a fact about the
# recipe, not an option; model_kwargs merge under the user's, see Recipe.architecture)
RECIPE_FIELDS = tuple(f.name for f in dataclasses.fields(Recipe) if f.name not in ("input_sizes", "model_kwargs"))

DEFAULT_RECIPE = Recipe()

# The compact paper models on small real sets (MedMNIST BreastMNIST, RetinaMNIST and
# PneumoniaMNIST at 32-64 px, python -m benchmarks.medmnist): with the default recipe they peak
# on validation AUROC after 15-40 epochs and then overfit (BreastMNIST: ichnet's validation
# AUROC 0.93 at epoch 23, 0.90 at 100), and the 20-epoch ceiling stops some runs while they
# still rise. Their recipe is a 60-epoch ceiling with early stopping after 15 epochs without a
# better validation AUROC (the best epoch's weights are kept), decoupled weight decay 0.05 and
# label smoothing 0.1 (ichnet on BreastMNIST, 64 px, seed 0: test AUROC 0.880 -> 0.905 at the
# same accuracy). The figures of record are the three-seed rows in docs/RESULTS.md.
COMPACT_RECIPE = Recipe(weight_decay=0.05, label_smoothing=0.1, epochs=60, early_stop=15,
                        input_sizes=(32, 64))

# ichnet at 32-64 px (``zoo.register_model(recipe=...)`` on the ``ichnet`` variant): the compact
# recipe with output stride 8, i.e. the last two stages keep H/8 and dilate instead of pooling to
# H/16 (8x8 features at 64 px rather than 4x4; no new parameters, about twice the training time).
# Three seeds each, python -m benchmarks.medmnist (docs/RESULTS.md), from scratch: BreastMNIST
# 64 px 0.861 / 0.893 test accuracy / AUROC against 0.842 / 0.872 at stride 16, RetinaMNIST 64 px
# 0.547 / 0.735 against 0.507 / 0.720, PneumoniaMNIST 32 px 0.898 / 0.961 against 0.893 / 0.960.
# It holds for pretraining and fine-tuning too: the shipped 64 px backbone was pretrained at
# stride 8, and fine-tuned at 8 it gave BreastMNIST 0.874 / 0.909 and RetinaMNIST 0.531 / 0.739
# (the stride-16 backbone forced to 8 gave 0.833 / 0.882 and 0.537 / 0.746).
ICHNET_RECIPE = COMPACT_RECIPE.replace(model_kwargs={"output_stride": 8})

# family -> recipe, for variants that declare none (a tuned family's card and runs show it)
FAMILY_RECIPES: dict[str, Recipe] = {
    "ichnet": COMPACT_RECIPE,
    "rensenet": COMPACT_RECIPE,
    "myositisnet": COMPACT_RECIPE,
}


def family_recipe(family: str) -> Recipe:
    """The recipe of ``family``'s variants that declare none: its entry, else the default."""
    return FAMILY_RECIPES.get(family, DEFAULT_RECIPE)
