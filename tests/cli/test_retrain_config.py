"""retrain's flags to one RetrainConfig: the recipe's settings for every flag not given, the
flags given winning field by field, and the distortions routed as they always were."""

from __future__ import annotations

import click

from retrain.cli import retrain
from retrain.cli.retrain_command import retrain_config
from retrain.data.augmentation import CopyAugmentation


def _config(*args: str):
    context = retrain.make_context("retrain", ["--image_dir", "lesions", *args])
    explicit = {name for name in context.params
                if context.get_parameter_source(name) != click.core.ParameterSource.DEFAULT}
    with context:
        return retrain_config(dict(context.params), explicit)


def test_the_recipe_sets_every_field_whose_flag_is_not_given_and_records_its_name():
    config = _config("--recipe", "finetune", "--no_flip_left_right", "--how_many_training_steps", "20")
    assert config.export.recipe == "finetune"
    assert config.top_layer.steps == 20 and config.top_layer.optimizer == "adam"
    assert config.fine_tuning.layers == "all" and config.fine_tuning.augmentation.flip_up_down is True
    assert config.fine_tuning.augmentation.flip_left_right is False
    assert config.backbone.image_size == 256 and config.features.augmentation == CopyAugmentation()


def test_a_flag_given_at_its_default_still_wins_over_the_recipe():
    assert _config("--recipe", "strong", "--dropout", "0").top_layer.dropout == 0.0
    assert _config("--recipe", "strong").top_layer.dropout == 0.5


def test_without_fine_tuning_the_distortions_go_to_the_cached_copies():
    config = _config("--flip_left_right")
    assert config.features.augmentation == CopyAugmentation(flip_left_right=True)
    assert not config.fine_tuning.active and config.export.recipe == "poets"


def test_an_explicit_distorted_copies_caches_the_recipes_distortions_when_fine_tuning():
    config = _config("--recipe", "finetune", "--distorted_copies", "2")
    assert config.features.augmentation == CopyAugmentation(flip_left_right=True, flip_up_down=True, rotate90=True,
                                                            random_brightness=15)
