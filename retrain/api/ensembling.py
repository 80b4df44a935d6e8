"""`ensemble`: several models trained by retrain on the same labels, exported as one model that
averages them, in every format retrain exports, with its decisions fitted on a labelled tree.

The ensemble is an ordinary retrain model: its backbone is the members' backbones side by side
(retrain.backbones.ensemble), its top layer the members' exported (temperature-calibrated) top
layers stacked and divided by their number, so its logits are exactly the mean of the members'
calibrated logits: the normalised geometric mean of their calibrated probabilities. Being a
linear layer over concatenated features, the same export, readers, heatmaps (the mean of the
members' maps) and TFLite conversion serve it unchanged. A temperature, the operating points
and the out-of-distribution detector are then fitted for the ensemble as retrain fits them.

    from retrain.api import DataConfig, EnsembleConfig, ensemble
    result = ensemble(EnsembleConfig((Path("a/saved_model"), Path("b/saved_model")), DataConfig(Path("~/lesions"))))
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from retrain.api.config import DataConfig, DecisionConfig, ExportConfig, FeatureConfig
from retrain.api.training import check_export_outputs, check_tflite, export_files
from retrain.card.model_card import EnsembleMember, ModelCard
from retrain.data.dataset import check_percentages
from retrain.data.sets import Folders, scan_held_out, scan_trees, split_sets, training_data
from retrain.decisions.fitting import fit_decisions
from retrain.decisions.operating_points import distinct_specs
from retrain.errors import UserError
from retrain.evaluate.final_test import final_test
from retrain.features.arrays import set_arrays
from retrain.features.bottlenecks import extract_features
from retrain.native_logs import import_tensorflow
from retrain.reporter import Reporter
from retrain.train.top_layer import TopLayer, TrainingConfig

RECIPE = "ensemble"  # the recipe an ensemble's model card records
MEMBERS = "EnsembleConfig.members"


@dataclass(frozen=True)
class EnsembleConfig:
    members: tuple[Path, ...]  # each a SavedModel folder retrain wrote (ExportConfig.saved_model_dir)
    data: DataConfig  # the labelled tree the decisions are fitted and tested on (image_dir, validation_dir)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    decisions: DecisionConfig = field(default_factory=DecisionConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    random_seed: int | None = None


@dataclass(frozen=True)
class EnsembleResult:
    labels: list[str]
    test_accuracy: float | None
    test_count: int
    graph: Path
    saved_model: Path | None
    tflite: Path | None


def ensemble(config: EnsembleConfig, reporter: Reporter = Reporter()) -> EnsembleResult:
    """Write the ensemble of `config.members`; a user's mistake raises UserError before any slow work."""
    import_tensorflow()  # first, so its native log lines stay off the terminal
    from retrain.backbones.ensemble import ensemble_backbone
    from retrain.export.graph import model_card
    from retrain.export.saved_model_reading import read_saved_model

    cards = check_ensemble(config)
    data, export = config.data, config.export
    folders = Folders(data.image_dir, data.validation_dir)
    trees = scan_trees(folders, reporter)
    _check_tree_labels(cards[0], trees.image_tree.labels, data.image_dir)
    specs, notes = distinct_specs(config.decisions.operating_points, trees.image_tree.labels)
    for note in notes:
        reporter.warn(note)
    trees = scan_held_out(trees, folders, reporter)
    _warn_of_other_trees(config, cards, reporter)
    members = [read_saved_model(path, card, MEMBERS) for path, card in zip(config.members, cards)]
    backbone = ensemble_backbone([member.backbone for member in members])
    reporter.log(f"Ensemble of {len(members)} models: " + ", ".join(
        f"{member.card.architecture} at {member.backbone.input_size} px" for member in members)
        + f"; fed at {backbone.input_size} px")
    features = extract_features(trees.paths(), backbone, config.features.bottleneck_dir, reporter)
    sets = split_sets(trees, features.by_path, folders, (data.validation_percentage, data.testing_percentage),
                      data.keep_duplicates, reporter, features.fingerprints)
    layer = ensemble_head([member.top_layer for member in members], [card.labels for card in cards], sets.labels)
    training, validation, test = (set_arrays(pairs, features.by_path, backbone.feature_size, None) for pairs in
                                  (sets.split.training, sets.split.validation, sets.split.test))
    decisions = fit_decisions(layer, sets.labels, training, validation, specs,
                              TrainingConfig(random_seed=config.random_seed), False, reporter)
    figures = final_test(decisions.layer, test, sets, -1, False, config.random_seed, reporter, uncalibrated=layer)
    card = model_card(backbone, sets.labels, export.final_tensor_name).replace(
        recipe=RECIPE, calibration=decisions.calibration, operating_points=decisions.points,
        validation_figures=decisions.validation_figures, ood=decisions.ood.record() if decisions.ood else None,
        test_figures=figures.figures, training_data=training_data(sets, folders),
        members=tuple(member_entry(path, card) for path, card in zip(config.members, cards)))
    tflite = export_files(backbone, decisions, card, sets, export, config.random_seed, reporter)
    return EnsembleResult(sets.labels, figures.accuracy, figures.count, export.output_graph, export.saved_model_dir,
                          tflite)


def ensemble_head(layers: list[TopLayer], label_orders: list[tuple[str, ...]], labels: list[str]) -> TopLayer:
    """The top layer over the members' concatenated features whose logits are the mean of the members'
    logits, each member's classes put in the order of `labels`."""
    columns = [[list(order).index(label) for label in labels] for order in label_orders]
    weights = np.vstack([layer.weights[:, order] for layer, order in zip(layers, columns)]) / len(layers)
    bias = np.mean([layer.bias[order] for layer, order in zip(layers, columns)], axis=0)
    return TopLayer(weights.astype(np.float32), bias.astype(np.float32))


def member_entry(path: Path, card: ModelCard) -> EnsembleMember:
    """What the ensemble's card says of one member, from the member's own card."""
    figures = card.validation_figures
    aucs = [entry.auc for entry in figures.auc.values() if entry.auc is not None] if figures else []
    return EnsembleMember(str(path), card.architecture, card.input_size, card.backbone_identity, card.recipe,
                          card.colour_constancy, float(np.mean(aucs)) if aucs else None)


def check_ensemble(config: EnsembleConfig) -> list[ModelCard]:
    """Every mistake that can be seen before reading an image; the members' cards."""
    from retrain.export.saved_model_reading import lite_config, saved_model_card

    if len(config.members) < 2:
        raise UserError(f"{MEMBERS}: an ensemble needs at least two models, got {len(config.members)}")
    cards = [saved_model_card(path, MEMBERS) for path in config.members]
    for path, card in zip(config.members, cards):
        if lite_config(card) is None:
            raise UserError(f"{MEMBERS} {path}: its backbone {card.architecture} cannot be rebuilt from its weights "
                            "(only EfficientNet-Lite models can be members)")
        if card.patient_metadata is not None:
            raise UserError(f"{MEMBERS} {path}: takes patient metadata, which an ensemble cannot average")
        if set(card.labels) != set(cards[0].labels) or len(card.labels) != len(cards[0].labels):
            raise UserError(f"{MEMBERS} {path}: its labels ({', '.join(card.labels)}) differ from those of "
                            f"{config.members[0]} ({', '.join(cards[0].labels)})")
    if config.data.image_dir is None:
        raise UserError("DataConfig.image_dir: give the labelled tree the ensemble's decisions are fitted on")
    check_percentages(config.data.validation_percentage, config.data.testing_percentage)
    if config.export.tflite is not None:
        check_tflite(config.export.tflite)
    _check_outputs(config)
    return cards


def _warn_of_other_trees(config: EnsembleConfig, cards: list[ModelCard], reporter: Reporter) -> None:
    """A member trained on another tree may have trained on the ensemble's validation and test images."""
    tree = str(Path(config.data.image_dir).expanduser().resolve())
    for path, card in zip(config.members, cards):
        trained_on = card.training_data.image_dir if card.training_data else None
        if trained_on != tree:
            reporter.warn(f"{MEMBERS} {path} was trained on {trained_on or 'a tree its card does not name'}, not "
                          f"DataConfig.image_dir {tree}: the ensemble's validation and test images may include its "
                          "training images, which makes its calibration and figures optimistic")


def _check_tree_labels(card: ModelCard, tree_labels: list[str], image_dir: Path) -> None:
    if set(tree_labels) != set(card.labels):
        raise UserError(f"DataConfig.image_dir {image_dir}: its classes ({', '.join(tree_labels)}) are not the "
                        f"models' labels ({', '.join(card.labels)})")


def _check_outputs(config: EnsembleConfig) -> None:
    data = config.data
    inputs = {MEMBERS: list(config.members), "DataConfig.image_dir": data.image_dir,
              "DataConfig.validation_dir": data.validation_dir}
    check_export_outputs(config.export, inputs, {}, {"FeatureConfig.bottleneck_dir": config.features.bottleneck_dir})
