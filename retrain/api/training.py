"""`retrain` from start to finish, as a short list of stages: scan the trees, extract the
features, split, train the top layer, fine-tune, fuse patient metadata, test, export.

From Python:

    from retrain.api import DataConfig, RetrainConfig, train
    result = train(RetrainConfig(DataConfig(Path("~/lesions"))))
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import retrain.api.model_stages as model
import retrain.api.stages as stages
from retrain.api.config import RetrainConfig
from retrain.api.decision_stages import decide
from retrain.card.model_card import ModelCard
from retrain.data.augmentation import check_copy_augmentation, copies_to_make
from retrain.data.dataset import check_percentages
from retrain.errors import UserError
from retrain.native_logs import import_tensorflow
from retrain.reporter import Reporter
from retrain.decisions.operating_points import distinct_specs


@dataclass(frozen=True)
class RetrainResult:
    labels: list[str]
    test_accuracy: float | None
    test_count: int
    bottlenecks_computed: int
    bottlenecks_reused: int
    failures: int
    files: model.ExportedFiles


def train(config: RetrainConfig, reporter: Reporter = Reporter()) -> RetrainResult:
    """Train and export a classifier for `config.data.image_dir`; a user's mistake raises UserError."""
    import_tensorflow()  # first (the checks import it too), so its native log lines stay off the terminal
    check_config(config)
    table = stages.read_patient_table(config.patient, _copies_cached(config), config.fine_tuning.active,
                                      reporter.warn) if config.patient else None
    strategy = _strategy(config)  # before any other TensorFlow work, as multi_worker needs
    trees = stages.scan_trees(config.data, reporter)
    if config.class_weights:
        config.class_weights.check(trees.image_tree.labels)  # a typo fails before slow work
    specs, notes = distinct_specs(config.decisions.operating_points, trees.image_tree.labels)
    for note in notes:
        reporter.warn(note)
    config = dataclasses.replace(config, decisions=dataclasses.replace(config.decisions, operating_points=specs))
    trees = stages.scan_held_out(trees, config.data, reporter)
    backbone = stages.build_backbone(config.backbone, config.fine_tuning.layers)
    features = stages.extract_features(trees, backbone, config.features.bottleneck_dir, reporter)
    sets = stages.split_sets(trees, features, config.data, reporter)
    patients = stages.encode_patients(table, config.patient, sets.split, reporter) if table is not None else None
    rows = patients.rows if patients else (None, None, None)
    plain, validation, test = (stages.set_arrays(pairs, features, backbone.feature_size, patient) for pairs, patient
                               in zip((sets.split.training, sets.split.validation, sets.split.test), rows))
    training = stages.with_distorted_copies(plain, [p for p, _ in sets.split.training], config.features.augmentation,
                                            config.features.distorted_copies, backbone, features, reporter)
    trained = model.fit_top_layer(sets, training, validation, config.top_layer, config.class_weights, backbone,
                                  config.export, config.monitor, reporter)
    layer, card = trained.layer, {"recipe": config.export.recipe, "top_layer": _top_layer_card(trained)}
    if config.fine_tuning.active:
        tuned = model.fine_tune_network(backbone, config.backbone, trained, sets, config.fine_tuning, trained.config,
                                        config.export.output_graph, strategy, reporter)
        layer, card = tuned.layer, {**card, "fine_tuning": tuned.card}
        plain = training = tuned.training.apply(plain)
        sets, validation, test = tuned.applied(sets, validation, test)
        stages.log_validation_auc("Fine-tuned validation", layer, validation, sets.labels, reporter)
    if patients:
        layer = model.fuse_patient_metadata(layer, config.patient.fusion, sets, training, validation, trained.config,
                                            config.fine_tuning.active, reporter)
        card["patient_metadata"] = stages.patient_card(patients, config.patient.fusion)
    decisions = decide(layer, sets, plain, validation, config.decisions, trained.config,
                       not config.fine_tuning.active and not patients, reporter,
                       stages.metadata_rows(table, sets.split.validation) if table is not None else None)
    figures = model.test_top_layer(decisions.layer, test, sets, config.test, config.top_layer.random_seed, reporter,
                                   uncalibrated=layer)
    card = {**card, **decisions.card, "test_figures": figures.card, "training_data": stages.data_card(sets, config.data)}
    files = model.export_model(backbone, decisions.layer, _model_card(backbone, sets, config, card), sets, validation,
                               trained.history, config.export, config.top_layer.random_seed, reporter, decisions.ood)
    return RetrainResult(sets.labels, figures.accuracy, figures.count, features.computed, features.reused,
                         features.failures, files)


def _top_layer_card(trained: model.TrainedTopLayer) -> dict:
    """Which step of the top layer was kept, and whether validation chose it, for the model card."""
    config = trained.config
    stopped = trained.layer.step is not None
    return {"steps": config.steps, "kept_step": trained.layer.step if stopped else config.steps - 1,
            "early_stopping_metric": config.early_stopping_metric if stopped else None}


def _model_card(backbone, sets: stages.Sets, config: RetrainConfig, extra: dict) -> ModelCard:
    """Made once training is done: a tuned backbone has a new identity."""
    from retrain.export.graph import model_card

    described = model_card(backbone, sets.labels, config.export.final_tensor_name).to_json()
    return ModelCard.from_json({**described, **extra}, "the model card")


def _copies_cached(config: RetrainConfig) -> int:
    return copies_to_make(config.features.augmentation, config.features.distorted_copies)


def _strategy(config: RetrainConfig):
    if not config.fine_tuning.active:
        return None
    from retrain.train.distribution import make_strategy

    return make_strategy(config.fine_tuning.distribute)


def check_config(config: RetrainConfig) -> None:
    """Every mistake that can be seen in the config alone, before any slow work."""
    from retrain.backbones import DEFAULT_ARCHITECTURE, check_image_size, sized_config
    from retrain.train.fine_tuning import check_fine_tuning
    from retrain.train.top_layer import check_config as check_top_layer

    choice = config.backbone
    if choice.tfhub_module and choice.architecture.strip().lower() != DEFAULT_ARCHITECTURE:
        raise UserError("--tfhub_module and --architecture both name a backbone; pass only one")
    check_image_size(choice.image_size)
    check_top_layer(config.top_layer)
    check_percentages(config.data.validation_percentage, config.data.testing_percentage)
    _check_counts(config)
    check_fine_tuning(config.fine_tuning, None if choice.tfhub_module else sized_config(choice.architecture,
                                                                                        choice.image_size))
    for value, flag in ((config.top_layer.steps, "how_many_training_steps"),
                        (config.top_layer.train_batch_size, "train_batch_size"),
                        (config.top_layer.eval_step_interval, "eval_step_interval")):
        if value < 1:
            raise UserError(f"--{flag} must be at least 1, got {value}")
    if config.export.tflite is not None:
        _check_tflite(config.export.tflite)
    check_copy_augmentation(config.features.augmentation, config.features.distorted_copies)
    check_retrain_outputs(config)


def _check_counts(config: RetrainConfig) -> None:
    if config.test.batch_size == 0 or config.test.batch_size < -1:
        raise UserError(f"--test_batch_size must be -1 (the whole test set) or >= 1, got {config.test.batch_size}")
    if config.monitor.intermediate_store_frequency < 0:
        raise UserError(f"--intermediate_store_frequency must be >= 0 (0 = none), "
                        f"got {config.monitor.intermediate_store_frequency}")
    if config.export.tflite is not None and config.export.tflite.representative_images < 0:
        raise UserError(f"--tflite_representative_images must be >= 0, got {config.export.tflite.representative_images}")


def _check_tflite(tflite) -> None:
    from retrain.export.tflite_format import QUANTIZATIONS

    if Path(tflite.output).suffix.lower() != ".tflite":
        raise UserError(f"--tflite_output {tflite.output}: must end in .tflite (label_image recognises the model by it)")
    if tflite.quantization not in QUANTIZATIONS:
        raise UserError(f"--tflite_quantization {tflite.quantization!r}: choose one of {', '.join(QUANTIZATIONS)}")
    if tflite.quantization == "int8" and tflite.representative_images < 1:
        raise UserError("--tflite_representative_images must be at least 1: int8 calibration needs a representative set")


def check_retrain_outputs(config: RetrainConfig) -> None:
    """Every file and folder the run will write, against its inputs and each other, before any slow work."""
    from retrain.export.graph import check_saved_model_dir
    from retrain.card.markdown import model_card_markdown_path
    from retrain.card.formats import sidecar_path
    from retrain.outputs import check_outputs

    data, export, monitor = config.data, config.export, config.monitor
    graph = Path(export.output_graph).expanduser()
    hub = config.backbone.tfhub_module
    inputs = {"--image_dir": data.image_dir, "--validation_dir": data.validation_dir, "--test_dir": data.test_dir,
              "--metadata": config.patient.files if config.patient else None,
              "--tfhub_module": hub if hub and Path(hub).expanduser().exists() else None}
    tflite = Path(export.tflite.output).expanduser() if export.tflite else None
    outputs = {"--output_graph": graph, "--output_labels": export.output_labels,
               "--output_graph's training plot": graph.with_suffix(".training.png"),
               "--output_graph's model card": model_card_markdown_path(graph), "--tflite_output": tflite,
               "--tflite_output's sidecar": sidecar_path(tflite) if tflite else None,
               "--tflite_output's model card": model_card_markdown_path(tflite) if tflite else None}
    folders = {"--saved_model_dir": export.saved_model_dir, "--summaries_dir": monitor.summaries_dir,
               "--bottleneck_dir": config.features.bottleneck_dir,
               "--intermediate_output_graphs_dir": monitor.intermediate_graphs_dir
               if monitor.intermediate_store_frequency else None,
               "--output_graph's fine-tuning folder": graph.with_suffix(".finetune")
               if config.fine_tuning.active else None}
    check_outputs(inputs, outputs, folders, replaced=("--saved_model_dir",))
    if export.saved_model_dir:
        check_saved_model_dir(Path(export.saved_model_dir).expanduser())
