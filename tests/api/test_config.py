"""Recipes are functions of the config: applied from Python they set their fields, keep the
fields named, and record their name; the training they give is the recipe's."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from retrain.api.config import (
    RECIPES,
    BackboneChoice,
    DataConfig,
    ExportConfig,
    RetrainConfig,
    recipe,
    with_recipe,
)
from retrain.data.augmentation import EpochAugmentation
from retrain.errors import UserError
from retrain.train.fine_tuning import FineTuneConfig
from retrain.train.top_layer import TrainingConfig

CONFIG = RetrainConfig(DataConfig(Path("lesions")))


def test_recipe_sets_its_fields_and_keeps_the_fields_named():
    config = dataclasses.replace(CONFIG, top_layer=TrainingConfig(optimizer="sgd", learning_rate=0.05))
    strong = with_recipe(config, "strong")
    assert strong.top_layer.optimizer == "adam" and strong.top_layer.early_stopping_patience > 0
    assert strong.top_layer.learning_rate == RECIPES["strong"][TrainingConfig]["learning_rate"]
    assert with_recipe(config, "strong", keep={"TrainingConfig.learning_rate"}).top_layer.learning_rate == 0.05
    assert with_recipe(config, "poets") == config


def test_a_recipe_is_a_function_of_the_config_that_records_its_name():
    finetune = recipe("finetune")(CONFIG)
    assert finetune == with_recipe(CONFIG, "finetune")
    assert finetune.export.recipe == "finetune"
    assert finetune.fine_tuning.active and finetune.fine_tuning.epochs == FineTuneConfig().epochs
    assert finetune.top_layer.steps == 300


def test_recipe_settings_can_be_turned_off_by_keeping_the_field():
    config = dataclasses.replace(CONFIG, fine_tuning=FineTuneConfig(augmentation=EpochAugmentation(flip_left_right=False)))
    applied = with_recipe(config, "finetune", keep={"EpochAugmentation.flip_left_right"})
    assert applied.fine_tuning.augmentation.flip_left_right is False
    assert applied.fine_tuning.augmentation.flip_up_down is True
    assert applied.top_layer.learning_rate == RECIPES["finetune"][TrainingConfig]["learning_rate"]


def test_recipe_finetune_runs_efficientnet_lite0_at_256_px_unless_told_otherwise():
    lite = dataclasses.replace(CONFIG, backbone=BackboneChoice("EfficientNet_Lite0"))
    assert with_recipe(lite, "finetune").backbone.image_size == 256
    sized = dataclasses.replace(lite, backbone=BackboneChoice("EfficientNet_Lite0", image_size=224))
    assert with_recipe(sized, "finetune", keep={"BackboneChoice.image_size"}).backbone.image_size == 224
    assert with_recipe(dataclasses.replace(lite, backbone=BackboneChoice("resnet50")), "finetune").backbone.image_size is None
    hub = dataclasses.replace(lite, backbone=BackboneChoice("efficientnet_lite0", tfhub_module="https://tfhub.dev/x"))
    assert with_recipe(hub, "finetune").backbone.image_size is None
    assert with_recipe(lite, "strong").backbone.image_size is None


def test_an_unknown_recipe_names_the_config_field():
    with pytest.raises(UserError, match="ExportConfig.recipe must be one of poets, strong, finetune, got 'best'"):
        recipe("best")


def test_a_recipe_applied_from_python_trains_with_its_settings_and_records_its_name(make_tree, tmp_path):
    from retrain.api.training import train
    from retrain.card.formats import model_kind, read_model_card

    tree = make_tree({"red": 12, "blue": 12})
    config = RetrainConfig(DataConfig(tree, validation_percentage=40.0),
                           top_layer=TrainingConfig(steps=80, eval_step_interval=1, random_seed=0),
                           export=ExportConfig(tmp_path / "g.pb", tmp_path / "l.txt"))
    train(with_recipe(config, "strong", keep={"TrainingConfig.steps", "TrainingConfig.eval_step_interval"}))
    card = read_model_card(tmp_path / "g.pb", model_kind(tmp_path / "g.pb"))
    assert card.recipe == "strong"
    # strong stops early (40 evaluations without improvement) and keeps the best step; poets trains every step
    assert card.top_layer.steps == 80 and card.top_layer.early_stopping_metric == "auc"
    assert card.top_layer.kept_step < 79
