"""`retrain` from start to finish, as a short list of stages: scan the trees, extract the
features, split, train the top layer, fine-tune, fuse patient metadata, decide, test, export.

From Python:

    from retrain.api import DataConfig, RetrainConfig, train
    result = train(RetrainConfig(DataConfig(Path("~/lesions"))))
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from retrain.api.config import BackboneChoice, ExportConfig, RetrainConfig
from retrain.backbones import build_backbone
from retrain.card.model_card import ModelCard, PatientInput
from retrain.data.augmentation import check_copy_augmentation, copies_to_make
from retrain.data.dataset import check_percentages
from retrain.data.sets import Folders, Sets, scan_held_out, scan_trees, split_sets, training_data
from retrain.decisions.fitting import FittedDecisions, fit_decisions
from retrain.decisions.operating_points import distinct_specs
from retrain.errors import UserError
from retrain.evaluate.final_test import final_test
from retrain.evaluate.training_plot import plot_training
from retrain.features.arrays import Arrays, set_arrays
from retrain.features.bottlenecks import extract_features
from retrain.features.distorted_copies import with_distorted_copies
from retrain.native_logs import import_tensorflow
from retrain.patient.encoded_sets import Columns, encode_patients, metadata_rows, read_patient_table
from retrain.patient.fusion import FUSIONS, fuse_patient_metadata
from retrain.patient.subgroups import Subgroups, validation_subgroups
from retrain.reporter import Reporter
from retrain.train.fitting import TrainedTopLayer, fit_top_layer, log_validation_auc
from retrain.train.tuned_network import fine_tune_network

if TYPE_CHECKING:  # importing export imports TensorFlow, which importing retrain.api must not
    from retrain.export.model_files import ExportedFiles


@dataclass(frozen=True)
class RetrainResult:
    labels: list[str]
    test_accuracy: float | None
    test_count: int
    bottlenecks_computed: int
    bottlenecks_reused: int
    failures: int
    files: ExportedFiles


def train(config: RetrainConfig, reporter: Reporter = Reporter()) -> RetrainResult:
    """Train and export a classifier for `config.data.image_dir` (or the images `config.data.image_list`
    lists); a user's mistake raises UserError."""
    import_tensorflow()  # first (the checks import it too), so its native log lines stay off the terminal
    from retrain.export.graph import PATIENT_INPUT, model_card

    check_config(config)
    data, patient = config.data, config.patient
    columns = Columns(patient.columns, patient.categorical, patient.numeric) if patient else None
    table = _patient_table(config, columns, reporter) if patient else None
    strategy = _strategy(config)  # before any other TensorFlow work, as multi_worker needs
    folders = Folders(data.image_dir, data.validation_dir, data.test_dir, data.image_list)
    trees = scan_trees(folders, reporter)
    if config.class_weights:
        config.class_weights.check(trees.image_tree.labels)  # a typo fails before slow work
    specs, notes = distinct_specs(config.decisions.operating_points, trees.image_tree.labels)
    for note in notes:
        reporter.warn(note)
    trees = scan_held_out(trees, folders, reporter)
    backbone = _backbone(config.backbone, config.fine_tuning.layers)
    features = extract_features(trees.paths(), backbone, config.features.bottleneck_dir, reporter)
    sets = split_sets(trees, features.by_path, folders, (data.validation_percentage, data.testing_percentage),
                      data.keep_duplicates, reporter, features.fingerprints)
    patients = encode_patients(table, columns, sets.split, reporter) if table is not None else None
    plain, validation, test = (set_arrays(pairs, features.by_path, backbone.feature_size, rows) for pairs, rows in
                               zip((sets.split.training, sets.split.validation, sets.split.test),
                                   patients.rows if patients else (None, None, None)))
    features = features.counts_only()
    training = with_distorted_copies(plain, [p for p, _ in sets.split.training], config.features.augmentation,
                                     config.features.distorted_copies, backbone, features.cache, reporter)
    trained = _fit_top_layer(config, backbone, sets, training, validation, reporter)
    layer, tuned = trained.layer, None
    if config.fine_tuning.active:
        tuned = fine_tune_network(backbone, functools.partial(_backbone, config.backbone), trained, sets,
                                  config.fine_tuning, trained.config, config.export.output_graph, strategy, reporter)
        layer = tuned.layer
        plain = training = tuned.training.apply(plain)
        sets, validation, test = tuned.applied(sets, validation, test)
        log_validation_auc("Fine-tuned validation", layer, validation, sets.labels, reporter)
    if patients:
        layer = fuse_patient_metadata(layer, patient.fusion, sets.labels, training, validation, trained.config,
                                      config.fine_tuning.active, reporter)
    decisions = fit_decisions(layer, sets.labels, plain, validation, specs, trained.config,
                              not config.fine_tuning.active and not patients, reporter)
    subgroups = _subgroups(table, decisions, validation, sets, reporter) if table is not None else None
    figures = final_test(decisions.layer, test, sets, config.test.batch_size, config.test.print_misclassified,
                         config.top_layer.random_seed, reporter, uncalibrated=layer)
    card = model_card(backbone, sets.labels, config.export.final_tensor_name).replace(
        recipe=config.export.recipe, top_layer=trained.record, fine_tuning=tuned.record if tuned else None,
        patient_metadata=PatientInput(PATIENT_INPUT, patient.fusion, tuple(patients.encoding.column_names),
                                      patients.encoding) if patients else None,
        calibration=decisions.calibration, operating_points=decisions.points,
        validation_figures=decisions.validation_figures, ood=decisions.ood.record() if decisions.ood else None,
        subgroups=subgroups, test_figures=figures.figures, training_data=training_data(sets, folders))
    files = _export(config, backbone, decisions, card, sets, validation, trained, reporter)
    return RetrainResult(sets.labels, figures.accuracy, figures.count, features.computed, features.reused,
                         features.failures, files)


def _fit_top_layer(config: RetrainConfig, backbone, sets: Sets, training: Arrays, validation: Arrays,
                   reporter: Reporter) -> TrainedTopLayer:
    from retrain.export.model_files import intermediate_saver

    monitor = config.monitor
    save = intermediate_saver(backbone, sets.labels, config.export.final_tensor_name, monitor.intermediate_graphs_dir,
                              reporter.log) if monitor.intermediate_graphs_dir else None
    return fit_top_layer(sets.labels, training, validation, config.top_layer, config.class_weights,
                         monitor.summaries_dir, reporter, monitor.intermediate_store_frequency, save)


def _subgroups(table, decisions: FittedDecisions, validation: Arrays, sets: Sets,
               reporter: Reporter) -> Subgroups | None:
    """The validation figures by patient group, where decisions were fitted on validation images."""
    if decisions.points is None or not len(validation):
        return None
    return validation_subgroups(decisions.layer.probabilities(validation.x, validation.patient), validation.y,
                                metadata_rows(table, sets.split.validation), sets.labels, decisions.points,
                                reporter.log)


def _export(config: RetrainConfig, backbone, decisions: FittedDecisions, card: ModelCard, sets: Sets,
            validation: Arrays, trained: TrainedTopLayer, reporter: Reporter) -> ExportedFiles:
    """The model files, the training plot, and the .tflite asked for with its parity with the graph."""
    from retrain.export.model_files import ExportedFiles

    export, layer = config.export, decisions.layer
    tflite = export_files(backbone, decisions, card, sets, export, config.top_layer.random_seed, reporter)
    probabilities = layer.probabilities(validation.x, validation.patient) if len(validation) else None
    plot = plot_training(export.output_graph, trained.history, probabilities, validation.y, sets.labels, reporter)
    return ExportedFiles(export.output_graph, export.output_labels, export.saved_model_dir, plot, tflite)


def export_files(backbone, decisions: FittedDecisions, card: ModelCard, sets: Sets, export: ExportConfig,
                 seed: int | None, reporter: Reporter) -> Path | None:
    """The model files, and the .tflite asked for (its path returned) with its parity with the graph on
    the held-back images: the one export of `retrain` and `ensemble`."""
    from retrain.export.graph import ServingModel
    from retrain.export.model_files import export_model
    from retrain.export.tflite import write_tflite
    from retrain.predict.parity import report_parity

    serving = ServingModel(backbone, decisions.layer, export.final_tensor_name, decisions.ood)
    export_model(serving, card, sets.labels, export.output_graph, export.output_labels, export.saved_model_dir,
                 reporter)
    if export.tflite is None:
        return None
    written = write_tflite(export.tflite.output, export.tflite.quantization, [p for p, _ in sets.split.training],
                           export.tflite.representative_images, seed, reporter.log, reporter.warn,
                           export.saved_model_dir, (serving, card))
    held_back = [path for path, _ in sets.split.validation + sets.split.test]
    report_parity(written, export.output_graph, held_back, reporter.log, reporter.warn)
    return written.path


def _backbone(choice: BackboneChoice, fine_tune_layers=0):
    return build_backbone(choice.architecture, choice.tfhub_module, choice.image_size, choice.model_dir,
                          fine_tune_layers, choice.colour_constancy)


def _patient_table(config: RetrainConfig, columns: Columns, reporter: Reporter):
    """The patient-metadata tables, read and their settings checked before any slow work."""
    fusion = config.patient.fusion
    if fusion not in FUSIONS:
        raise UserError(f"PatientConfig.fusion must be one of {', '.join(FUSIONS)}, got {fusion!r}")
    if _copies_cached(config) and not config.fine_tuning.active:
        raise UserError("PatientConfig.files cannot be used with cached distorted copies (distortion flags without "
                        "fine-tuning); drop the distortion flags, or fine-tune with ExportConfig.recipe finetune")
    return read_patient_table(config.patient.files, columns, reporter.warn)


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
        raise UserError("BackboneChoice.tfhub_module and BackboneChoice.architecture both name a backbone; "
                        "pass only one")
    check_image_size(choice.image_size)
    check_top_layer(config.top_layer)
    check_percentages(config.data.validation_percentage, config.data.testing_percentage)
    _check_image_source(config.data)
    _check_counts(config)
    check_fine_tuning(config.fine_tuning, None if choice.tfhub_module else sized_config(choice.architecture,
                                                                                        choice.image_size))
    for value, name in ((config.top_layer.steps, "steps"), (config.top_layer.train_batch_size, "train_batch_size"),
                        (config.top_layer.eval_step_interval, "eval_step_interval")):
        if value < 1:
            raise UserError(f"TrainingConfig.{name} must be at least 1, got {value}")
    if config.export.tflite is not None:
        check_tflite(config.export.tflite)
    check_copy_augmentation(config.features.augmentation, config.features.distorted_copies)
    check_retrain_outputs(config)


def _check_image_source(data) -> None:
    """Exactly one of DataConfig.image_dir and DataConfig.image_list; a manifest's held-out images
    come from its split column, not from held-out trees."""
    if (data.image_dir is None) == (data.image_list is None):
        raise UserError("give DataConfig.image_dir (a folder of class folders) or DataConfig.image_list (a CSV of "
                        "images and labels)" + (", not both" if data.image_dir is not None else ""))
    if data.image_list is not None and (data.validation_dir is not None or data.test_dir is not None):
        given = "DataConfig.validation_dir" if data.validation_dir is not None else "DataConfig.test_dir"
        raise UserError(f"{given} goes with DataConfig.image_dir; with DataConfig.image_list, give the held-out "
                        "images in its split column (validation, test)")


def _check_counts(config: RetrainConfig) -> None:
    if config.test.batch_size == 0 or config.test.batch_size < -1:
        raise UserError(f"TestConfig.batch_size must be -1 (the whole test set) or >= 1, got {config.test.batch_size}")
    if config.monitor.intermediate_store_frequency < 0:
        raise UserError(f"MonitorConfig.intermediate_store_frequency must be >= 0 (0 = none), "
                        f"got {config.monitor.intermediate_store_frequency}")
    if config.export.tflite is not None and config.export.tflite.representative_images < 0:
        raise UserError(f"TFLiteConfig.representative_images must be >= 0, "
                        f"got {config.export.tflite.representative_images}")


def check_tflite(tflite) -> None:
    from retrain.export.tflite_format import QUANTIZATIONS

    if Path(tflite.output).suffix.lower() != ".tflite":
        raise UserError(f"TFLiteConfig.output {tflite.output}: must end in .tflite "
                        "(label_image recognises the model by it)")
    if tflite.quantization not in QUANTIZATIONS:
        raise UserError(f"TFLiteConfig.quantization {tflite.quantization!r}: "
                        f"choose one of {', '.join(QUANTIZATIONS)}")
    if tflite.quantization == "int8" and tflite.representative_images < 1:
        raise UserError("TFLiteConfig.representative_images must be at least 1: int8 calibration needs a "
                        "representative set")


def check_retrain_outputs(config: RetrainConfig) -> None:
    """Every file and folder the run will write, against its inputs and each other, before any slow work."""
    data, export, monitor = config.data, config.export, config.monitor
    graph = Path(export.output_graph).expanduser()
    hub = config.backbone.tfhub_module
    inputs = {"DataConfig.image_dir": data.image_dir, "DataConfig.image_list": data.image_list,
              "DataConfig.validation_dir": data.validation_dir,
              "DataConfig.test_dir": data.test_dir,
              "PatientConfig.files": config.patient.files if config.patient else None,
              "BackboneChoice.tfhub_module": hub if hub and Path(hub).expanduser().exists() else None}
    folders = {"MonitorConfig.summaries_dir": monitor.summaries_dir,
               "FeatureConfig.bottleneck_dir": config.features.bottleneck_dir,
               "MonitorConfig.intermediate_graphs_dir": monitor.intermediate_graphs_dir
               if monitor.intermediate_store_frequency else None,
               "ExportConfig.output_graph's fine-tuning folder": graph.with_suffix(".finetune")
               if config.fine_tuning.active else None}
    check_export_outputs(export, inputs, {"ExportConfig.output_graph's training plot": graph.with_suffix(".training.png")},
                         folders)


def check_export_outputs(export: ExportConfig, inputs: dict, outputs: dict, folders: dict) -> None:
    """The model files `export` names (graph, labels, model cards, SavedModel, .tflite and its sidecar),
    with a command's own `outputs` and `folders`, checked against its `inputs` and each other: what
    retrain and ensemble write alike."""
    from retrain.card.formats import sidecar_path
    from retrain.card.markdown import model_card_markdown_path
    from retrain.export.graph import check_saved_model_dir
    from retrain.outputs import check_outputs

    graph = Path(export.output_graph).expanduser()
    tflite = Path(export.tflite.output).expanduser() if export.tflite else None
    files = {"ExportConfig.output_graph": graph, "ExportConfig.output_labels": export.output_labels, **outputs,
             "ExportConfig.output_graph's model card": model_card_markdown_path(graph),
             "TFLiteConfig.output": tflite,
             "TFLiteConfig.output's sidecar": sidecar_path(tflite) if tflite else None,
             "TFLiteConfig.output's model card": model_card_markdown_path(tflite) if tflite else None}
    check_outputs(inputs, files, {"ExportConfig.saved_model_dir": export.saved_model_dir, **folders},
                  replaced=("ExportConfig.saved_model_dir",))
    if export.saved_model_dir:
        check_saved_model_dir(Path(export.saved_model_dir).expanduser())
