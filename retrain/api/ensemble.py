"""`ensemble`: several models trained by retrain on the same labels, exported as one model of every
format retrain writes, with its own calibration, operating points and out-of-distribution check.

The ensemble is an ordinary retrain model whose backbone is its members' backbones side by side
(retrain.backbones.ensemble) and whose top layer is fixed: the mean of the members' calibrated
logits, i.e. the normalised geometric mean of their calibrated probabilities. Being linear over
the concatenated features, it goes through the one export path unchanged (.pb, SavedModel, every
.tflite mode, heatmaps where the members share an input size), and every reader loads it as any
other model. A temperature, the operating points and the out-of-distribution detector are then
fitted for the ensemble, as retrain fits them for a model: on the labelled tree's validation
images, and the out-of-distribution detector on its training images' features.

    from retrain.api import DataConfig, EnsembleConfig, ensemble
    ensemble(EnsembleConfig((Path("a/saved_model"), Path("b/saved_model")), DataConfig(Path("~/lesions"))))
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from retrain.api.config import DataConfig, DecisionConfig, ExportConfig, FeatureConfig
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

MEMBERS = "EnsembleConfig.members"


@dataclass(frozen=True)
class EnsembleConfig:
    members: tuple[Path, ...]  # each member's SavedModel folder, as retrain wrote it
    data: DataConfig  # the labelled images the ensemble's decisions are fitted on
    features: FeatureConfig = field(default_factory=FeatureConfig)
    export: ExportConfig = field(default_factory=lambda: ExportConfig(recipe="ensemble"))
    decisions: DecisionConfig = field(default_factory=DecisionConfig)
    random_seed: int | None = None  # the test-split sample and int8 calibration images


@dataclass(frozen=True)
class EnsembleResult:
    labels: list[str]
    members: int
    test_accuracy: float | None
    graph: Path
    saved_model: Path | None
    tflite: Path | None


def ensemble(config: EnsembleConfig, reporter: Reporter = Reporter()) -> EnsembleResult:
    """Write the ensemble of config.members; a user's mistake raises UserError before slow work."""
    import_tensorflow()
    from retrain.api.training import check_image_source, check_tflite, write_exports
    from retrain.backbones.ensemble import ensemble_backbone
    from retrain.export.graph import model_card

    cards = _member_cards(config.members)
    check_image_source(config.data)
    if config.export.tflite is not None:
        check_tflite(config.export.tflite)
    _check_outputs(config)
    folders = Folders(config.data.image_dir, config.data.validation_dir, config.data.test_dir, config.data.image_list)
    trees = scan_trees(folders, reporter)
    labels = trees.image_tree.labels
    _check_labels(cards, labels)
    specs, notes = distinct_specs(config.decisions.operating_points, labels)
    for note in notes:
        reporter.warn(note)
    trees = scan_held_out(trees, folders, reporter)
    members = _read_members(config.members, cards, reporter)
    backbone = ensemble_backbone([member.backbone for member in members])
    layer = mean_of_logits([member.top_layer for member in members], [member.card.labels for member in members], labels)
    reporter.log(f"Ensemble of {len(members)} models at {backbone.input_size} px ({backbone.feature_size} features): "
                 "the mean of their calibrated logits")
    features = extract_features(trees.paths(), backbone, config.features.bottleneck_dir, reporter)
    data = config.data
    sets = split_sets(trees, features.by_path, folders, (data.validation_percentage, data.testing_percentage),
                      data.keep_duplicates, reporter, features.fingerprints)
    training, validation, test = (set_arrays(pairs, features.by_path, backbone.feature_size, None) for pairs in
                                  (sets.split.training, sets.split.validation, sets.split.test))
    decisions = fit_decisions(layer, sets.labels, training, validation, specs, TrainingConfig(random_seed=config.random_seed),
                              False, reporter)
    figures = final_test(decisions.layer, test, sets, -1, False, config.random_seed, reporter, uncalibrated=layer)
    card = model_card(backbone, sets.labels, config.export.final_tensor_name).replace(
        recipe=config.export.recipe, ensemble=tuple(_member_record(path, card) for path, card in zip(config.members, cards)),
        calibration=decisions.calibration, operating_points=decisions.points,
        validation_figures=decisions.validation_figures, ood=decisions.ood.record() if decisions.ood else None,
        test_figures=figures.figures, training_data=training_data(sets, folders))
    tflite = write_exports(config.export, backbone, decisions, card, sets, config.random_seed, reporter)
    return EnsembleResult(sets.labels, len(members), figures.accuracy, config.export.output_graph,
                          config.export.saved_model_dir, tflite)


def mean_of_logits(layers: list[TopLayer], member_labels: list[tuple[str, ...]], labels: list[str]) -> TopLayer:
    """One top layer over the members' concatenated features whose logits are the mean of theirs,
    each member's classes put in the order of `labels`."""
    orders = [[list(own).index(label) for label in labels] for own in member_labels]
    weights = np.vstack([layer.weights[:, order] for layer, order in zip(layers, orders)]) / len(layers)
    bias = np.mean([layer.bias[order] for layer, order in zip(layers, orders)], axis=0)
    return TopLayer(weights.astype(np.float32), bias.astype(np.float32))


def _member_cards(paths: tuple[Path, ...]) -> list:
    """Each member's model card, read from its SavedModel; every mistake is one line naming the member."""
    from retrain.card.formats import is_tflite_file, read_saved_model_card
    from retrain.export.saved_model_reading import lite_config

    if len(paths) < 2:
        raise UserError(f"{MEMBERS}: give at least two models to combine, got {len(paths)}")
    cards = []
    for path in paths:
        path = Path(path).expanduser()
        if not path.exists():
            raise UserError(f"{MEMBERS} {path}: no such file or folder")
        if path.is_file() or not (path / "saved_model.pb").exists():
            kind = "a .tflite" if path.is_file() and is_tflite_file(path) else "a file" if path.is_file() else "a folder"
            raise UserError(f"{MEMBERS} {path}: is {kind}, not a SavedModel; give each member's SavedModel folder "
                            "(written by retrain's ExportConfig.saved_model_dir)")
        card = read_saved_model_card(path)
        if card is None:
            raise UserError(f"{MEMBERS} {path}: a SavedModel not written by retrain (it has no model card)")
        if lite_config(card) is None:
            raise UserError(f"{MEMBERS} {path}: its backbone ({card.architecture or 'a TF Hub module'}) cannot be read "
                            "back from a SavedModel; only EfficientNet-Lite models can be members")
        if card.patient_metadata is not None:
            raise UserError(f"{MEMBERS} {path}: takes patient metadata as a second input; ensembles take images only")
        if card.recipe == "ensemble":
            raise UserError(f"{MEMBERS} {path}: is an ensemble itself; give its members instead")
        cards.append(card)
    if len({Path(p).expanduser().resolve() for p in paths}) < len(paths):
        raise UserError(f"{MEMBERS}: the same model is given twice")
    return cards


def _check_labels(cards: list, labels: list[str]) -> None:
    for card in cards:
        if sorted(card.labels) != sorted(labels):
            raise UserError(f"{MEMBERS}: a member's labels ({', '.join(card.labels)}) are not the image tree's "
                            f"classes ({', '.join(labels)}); every member must be trained on the same classes")


def _read_members(paths: tuple[Path, ...], cards: list, reporter: Reporter) -> list:
    from retrain.export.saved_model_reading import read_retrained

    members = []
    for path, card in zip(paths, cards):
        members.append(read_retrained(Path(path).expanduser(), card))
        reporter.log(f"Member {path}: {card.architecture} at {card.input_size} px, recipe {card.recipe or 'not recorded'}"
                     + (", colour constancy" if card.colour_constancy else ""))
    return members


def _member_record(path: Path, card):
    from retrain.card.model_card import EnsembleMember

    figures = card.validation_figures
    aucs = [entry.auc for entry in figures.auc.values() if entry.auc is not None] if figures else []
    return EnsembleMember(str(path), card.architecture, card.input_size, card.backbone_identity, card.recipe,
                          card.colour_constancy, round(float(np.mean(aucs)), 4) if aucs else None)


def _check_outputs(config: EnsembleConfig) -> None:
    from retrain.card.formats import sidecar_path
    from retrain.card.markdown import model_card_markdown_path
    from retrain.export.graph import check_saved_model_dir
    from retrain.outputs import check_outputs

    export, data = config.export, config.data
    graph = Path(export.output_graph).expanduser()
    tflite = Path(export.tflite.output).expanduser() if export.tflite else None
    inputs = {MEMBERS: list(config.members), "DataConfig.image_dir": data.image_dir,
              "DataConfig.image_list": data.image_list, "DataConfig.validation_dir": data.validation_dir,
              "DataConfig.test_dir": data.test_dir}
    outputs = {"ExportConfig.output_graph": graph, "ExportConfig.output_labels": export.output_labels,
               "ExportConfig.output_graph's model card": model_card_markdown_path(graph),
               "TFLiteConfig.output": tflite, "TFLiteConfig.output's sidecar": sidecar_path(tflite) if tflite else None,
               "TFLiteConfig.output's model card": model_card_markdown_path(tflite) if tflite else None}
    folders = {"ExportConfig.saved_model_dir": export.saved_model_dir,
               "FeatureConfig.bottleneck_dir": config.features.bottleneck_dir}
    check_outputs(inputs, outputs, folders, replaced=("ExportConfig.saved_model_dir",))
    if export.saved_model_dir:
        check_saved_model_dir(Path(export.saved_model_dir).expanduser())
