"""Named presets of retrain's flags (--recipe). Any flag given on the command line wins.

`poets` is tensorflow-for-poets' recipe (the default, so old command lines behave as
before); `strong` is the best top layer we measured on frozen features; `finetune`
trains the whole backbone with fresh augmentation every epoch, our best model (see
README for the figures and what each costs).
"""

from __future__ import annotations

from retrain.errors import UserError

RECIPES: dict[str, dict] = {
    "poets": {},
    "strong": {
        "optimizer": "adam",
        "learning_rate": 0.001,
        "learning_rate_schedule": "cosine",
        "weight_decay": 1e-3,
        "dropout": 0.5,
        "early_stopping_patience": 40,
        "early_stopping_metric": "auc",
    },
    "finetune": {
        # The top layer first, on cached bottlenecks ...
        "optimizer": "adam",
        "learning_rate": 0.001,
        "how_many_training_steps": 300,
        "dropout": 0.3,
        "label_smoothing": 0.1,
        # ... then every layer with it, on a fresh random version of each image every epoch.
        "fine_tune_layers": "all",
        "fine_tune_epochs": 12,
        "fine_tune_learning_rate": 5e-5,
        "fine_tune_batch_size": 32,
        "fine_tune_weight_decay": 1e-4,
        "crop_area": 0.5,
        "crop_aspect": 4 / 3,
        "flip_left_right": True,
        "flip_up_down": True,
        "rotate90": True,
        "random_brightness": 15,
        "random_contrast": 20,
        "random_saturation": 20,
        "random_hue": 3,
    },
}


# Settings of a recipe for one backbone only. EfficientNet-Lite0 fine-tunes at 256 px: on
# our held-out ISIC set that scored about 0.01 AUC above 224 px, for 1.3 times the time.
BACKBONE_SETTINGS: dict[tuple[str, str], dict] = {
    ("finetune", "efficientnet_lite0"): {"image_size": 256},
}


def apply_recipe(name: str, flags: dict, explicit: set[str]) -> dict:
    """`flags` with the recipe's value for every flag the user did not give."""
    if name not in RECIPES:
        raise UserError(f"--recipe must be one of {', '.join(RECIPES)}, got {name!r}")
    preset = dict(RECIPES[name])
    if not flags.get("tfhub_module"):
        preset.update(BACKBONE_SETTINGS.get((name, str(flags.get("architecture", "")).strip().lower()), {}))
    return {**flags, **{flag: value for flag, value in preset.items() if flag not in explicit}}
