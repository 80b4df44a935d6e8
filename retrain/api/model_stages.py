"""The stages of `retrain` that train, test and export the model, in the order they run."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from retrain.api.config import (
    BackboneChoice,
    ExportConfig,
    MonitorConfig,
    TestConfig,
    TFLiteConfig,
)
from retrain.api.stages import (
    Arrays,
    Sets,
    TunedRows,
    build_backbone,
    log_validation_auc,
    tuned_features,
)
from retrain.card.model_card import ModelCard
from retrain.reporter import Reporter
from retrain.train.callbacks import (
    History,
    IntermediateGraphs,
    StepLines,
    StepProgress,
    SummaryWriters,
    TensorBoard,
)
from retrain.train.fine_tuning import FineTuneConfig
from retrain.train.top_layer import (
    ClassWeights,
    TopLayer,
    TrainingConfig,
    accuracy,
    train_top_layer,
)


@dataclass(frozen=True)
class TrainedTopLayer:
    layer: TopLayer
    config: TrainingConfig  # as trained: with the class weights resolved
    history: list  # a StepReport per validation, for the training plot
    summaries: SummaryWriters | None  # TensorBoard writers, which fine-tuning goes on with


def fit_top_layer(sets: Sets, training: Arrays, validation: Arrays, config: TrainingConfig,
                  class_weights: ClassWeights | None, backbone, export: ExportConfig, monitor: MonitorConfig,
                  reporter: Reporter) -> TrainedTopLayer:
    """The top layer on cached bottlenecks, with its progress, step lines, TensorBoard
    scalars and intermediate graphs hooked into the training loop."""
    summaries = SummaryWriters(monitor.summaries_dir) if monitor.summaries_dir else None
    if summaries:
        reporter.log(f"TensorBoard summaries: {summaries.run_dir}")
    if class_weights:
        weights = class_weights.resolve(sets.labels, training.y)
        reporter.log("Class weights: " + ", ".join(f"{label} {w:.3g}" for label, w in zip(sets.labels, weights)))
        config = dataclasses.replace(config, class_weights=weights)
    history = History()
    callbacks = [history, StepLines(reporter.log), *([TensorBoard(summaries)] if summaries else [])]
    if monitor.intermediate_graphs_dir and monitor.intermediate_store_frequency:
        callbacks.append(IntermediateGraphs(monitor.intermediate_store_frequency,
                                            _intermediate_saver(backbone, sets.labels, export, monitor, reporter)))
    update = reporter.bar(config.steps, "Top layer", "steps")
    if update:
        callbacks.append(StepProgress(update, config.steps))
    layer = train_top_layer(training.x, training.y, validation.x, validation.y, len(sets.labels), config, callbacks)
    if layer.step is not None:
        reporter.log(f"Early stopping: kept the top layer from step {layer.step}, best validation "
                     f"{config.early_stopping_metric}")
    log_validation_auc("Validation", layer, validation, sets.labels, reporter)
    return TrainedTopLayer(layer, config, history.results, summaries)


def _intermediate_saver(backbone, labels: list[str], export: ExportConfig, monitor: MonitorConfig, reporter: Reporter):
    from retrain.export.graph import ServingModel, export_frozen_graph, model_card

    card = model_card(backbone, labels, export.final_tensor_name)

    def save(step: int, layer: TopLayer) -> None:
        target = Path(monitor.intermediate_graphs_dir).expanduser() / f"intermediate_{step}.pb"
        export_frozen_graph(ServingModel(backbone, layer, export.final_tensor_name), card, target,
                            "--intermediate_output_graphs_dir")
        reporter.log(f"Saved intermediate graph {target}")

    return save


@dataclass(frozen=True)
class TunedNetwork:
    layer: TopLayer
    card: dict  # what the model card records of the fine-tuning
    validation: TunedRows  # the tuned backbone's features of the validation images
    test: TunedRows  # ... of the test images
    training: TunedRows  # ... and of the training images, as served (no augmentation)

    def applied(self, sets: Sets, validation: Arrays, test: Arrays) -> tuple[Sets, Arrays, Arrays]:
        """The sets and arrays on the tuned features, without any image that became unreadable."""
        split = dataclasses.replace(sets.split, validation=self.validation.kept(sets.split.validation),
                                    test=self.test.kept(sets.split.test))
        return Sets(sets.labels, split), self.validation.apply(validation), self.test.apply(test)


def fine_tune_network(backbone, choice: BackboneChoice, trained: TrainedTopLayer, sets: Sets, config: FineTuneConfig,
                      training: TrainingConfig, output_graph: Path, strategy, reporter: Reporter) -> TunedNetwork:
    """Tune a copy of the backbone with the top layer, then put the tuned weights into
    `backbone` (the one every export is made from)."""
    from retrain.train.fine_tuning import (
        RunFolder,
        TuningData,
        copy_tuned_weights,
        fine_tune,
        run_fingerprint,
    )

    split = sets.split
    run_dir = Path(output_graph).expanduser().with_suffix(".finetune")
    fingerprint = run_fingerprint(
        backbone=backbone.identity, labels=sets.labels, fine_tuning=dataclasses.asdict(config),
        training=dataclasses.asdict(training),
        images={name: [(str(path), c, path.stat().st_size) for path, c in pairs]
                for name, pairs in (("training", split.training), ("validation", split.validation))},
    )
    callbacks = (TensorBoard(trained.summaries, training.steps),) if trained.summaries else ()
    data = TuningData(split.training, split.validation, len(sets.labels), backbone.input_size)
    tuned, result = fine_tune(backbone, lambda: build_backbone(choice), trained.layer, data, config, training,
                              RunFolder(run_dir, fingerprint), reporter, callbacks, strategy=strategy)
    copy_tuned_weights(tuned, backbone, config.layers)
    reporter.log(f"Checkpoints and epoch results: {run_dir}")
    card = {
        "layers": config.layers, "epochs": config.epochs, "steps": config.steps, "learning_rate": config.learning_rate,
        "batch_size": config.batch_size, "weight_decay": config.weight_decay,
        "augmentation": config.augmentation.describe(), "kept_epoch": result.best_epoch,
        "validation_auc": {r.epoch: r.validation_auc for r in result.history if r.validation_auc is not None},
    }
    return TunedNetwork(result.top_layer, card, *tuned_features(backbone, [split.validation, split.test,
                                                                            split.training], reporter.warn))


def fuse_patient_metadata(layer: TopLayer, fusion: str, sets: Sets, training: Arrays, validation: Arrays,
                          config: TrainingConfig, tuned: bool, reporter: Reporter) -> TopLayer:
    """The top layer extended to take patient metadata (retrain.patient.fusion); after fine-tuning
    (`tuned`: `training` holds the tuned features) its logits on the training images are in-sample."""
    from retrain.patient.fusion import fuse

    fused = fuse(fusion, layer, training.x, training.patient, training.y, validation.x, validation.patient,
                 validation.y, len(sets.labels), config, logits_in_sample=tuned)
    log_validation_auc("Validation with patient metadata", fused, validation, sets.labels, reporter)
    return fused


@dataclass(frozen=True)
class TestFigures:
    accuracy: float | None  # None without a test set
    count: int
    card: dict  # the figures printed, for the model card; empty without a test set


def test_top_layer(layer: TopLayer, test: Arrays, sets: Sets, config: TestConfig, seed: int | None,
                   reporter: Reporter, uncalibrated: TopLayer | None = None) -> TestFigures:
    """Final test accuracy, AUC and calibration error on the test set (or a sample of it,
    --test_batch_size); with `uncalibrated`, its calibration error too, the honest check of
    a temperature fitted on validation."""
    from retrain.api.decision_stages import figures as held_out_figures
    from retrain.api.stages import format_auc
    from retrain.metrics import calibration_noise_floor, expected_calibration_error

    if not len(test):
        return TestFigures(None, 0, {})
    chosen = np.arange(len(test))
    if config.batch_size >= 0:  # a sample without replacement: no image counted twice
        chosen = np.random.default_rng(seed).choice(len(test), min(config.batch_size, len(test)), replace=False)
    sample = Arrays(test.x[chosen], test.y[chosen], None if test.patient is None else test.patient[chosen])
    predictions = layer.probabilities(sample.x, sample.patient)
    test_accuracy = accuracy(predictions, sample.y)
    reporter.log(f"Final test accuracy = {100 * test_accuracy:.1f}% (N={len(chosen)})")
    reporter.log(format_auc("Final test", predictions, sample.y, sets.labels))
    figures = {**held_out_figures(predictions, sample.y, sets.labels, "test"),
               "ece": expected_calibration_error(predictions, sample.y),
               "ece_floor": calibration_noise_floor(predictions)}
    ece = f"{figures['ece']:.3f}"
    if uncalibrated is not None and uncalibrated is not layer:
        figures["ece_before"] = expected_calibration_error(uncalibrated.probabilities(sample.x, sample.patient),
                                                           sample.y)
        ece = f"{figures['ece_before']:.3f} before, {ece} after calibration"
    else:
        ece = f"= {ece}"
    reporter.log(f"Final test expected calibration error {ece} (sampling alone gives about "
                 f"{figures['ece_floor']:.3f})")
    if config.print_misclassified:
        reporter.log("=== MISCLASSIFIED TEST IMAGES ===")
        for row, index in enumerate(chosen):
            predicted = int(np.argmax(predictions[row]))
            if predicted != test.y[index]:
                reporter.log(f"{sets.split.test[index][0]}  {sets.labels[predicted]}")
    return TestFigures(test_accuracy, len(test), figures)


@dataclass(frozen=True)
class ExportedFiles:
    graph: Path
    labels: Path
    saved_model: Path | None
    training_plot: Path
    tflite: Path | None


def export_model(backbone, layer: TopLayer, card: ModelCard, sets: Sets, validation: Arrays, history: list,
                 export: ExportConfig, seed: int | None, reporter: Reporter, ood=None) -> ExportedFiles:
    """The frozen graph and labels, then the SavedModel, the training plot and the .tflite asked
    for, each with its model card in words beside it."""
    from retrain.export.graph import (
        ServingModel,
        export_frozen_graph,
        export_saved_model,
        write_labels,
    )
    from retrain.card.markdown import (
        model_card_markdown_path,
        write_model_card_markdown,
    )

    classifier = ServingModel(backbone, layer, export.final_tensor_name, ood)
    export_frozen_graph(classifier, card, export.output_graph)
    write_labels(export.output_labels, sets.labels)
    write_model_card_markdown(card, model_card_markdown_path(export.output_graph))
    reporter.log(f"Wrote {export.output_graph}, {export.output_labels} and "
                 f"{model_card_markdown_path(export.output_graph)}")
    if export.saved_model_dir:
        export_saved_model(classifier, card, export.saved_model_dir)
        write_model_card_markdown(card, model_card_markdown_path(export.saved_model_dir, saved_model=True))
        reporter.log(f"Wrote SavedModel {export.saved_model_dir}")
    probabilities = layer.probabilities(validation.x, validation.patient) if len(validation) else None
    plot = plot_training(export.output_graph, history, probabilities, validation.y, sets.labels, reporter)
    tflite = None
    if export.tflite is not None:
        tflite = export_tflite(classifier, card, sets, export.tflite, export.saved_model_dir, export.output_graph,
                               seed, reporter)
    return ExportedFiles(export.output_graph, export.output_labels, export.saved_model_dir, plot, tflite)


def plot_training(output_graph: Path, history: list, val_probabilities, val_y, labels: list[str],
                  reporter: Reporter) -> Path:
    """Training curves (and the validation ROC) as a PNG beside the graph."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from retrain.evaluate.evaluation import draw_roc
    from retrain.metrics import positive_class_index

    target = Path(output_graph).expanduser().with_suffix(".training.png")
    figure, (curves, roc) = plt.subplots(1, 2, figsize=(11, 4.5))
    steps = [r.step for r in history]
    curves.plot(steps, [r.train_accuracy for r in history], label="train accuracy (batch)")
    curves.plot(steps, [r.cross_entropy for r in history], label="train cross entropy (batch)")
    validated = [r for r in history if r.validation_auc is not None]
    if validated:
        curves.plot([r.step for r in validated], [r.validation_auc for r in validated], label="validation AUC")
        curves.plot([r.step for r in validated], [r.validation_loss for r in validated], label="validation cross entropy")
    curves.set(xlabel="step", title="Training")
    curves.legend()
    if val_probabilities is not None:
        shown = [positive_class_index(labels)] if len(labels) == 2 else range(len(labels))
        draw_roc(roc, [(labels[c], val_probabilities[:, c], val_y == c, None) for c in shown])
    roc.set(xlabel="1 - specificity", ylabel="sensitivity", title="Validation ROC")
    figure.tight_layout()
    figure.savefig(target, dpi=100)
    plt.close(figure)
    reporter.log(f"Wrote training curves {target}")
    return target


def export_tflite(classifier, card: ModelCard, sets: Sets, tflite: TFLiteConfig, saved_model_dir: Path | None,
                  output_graph: Path, seed: int | None, reporter: Reporter) -> Path:
    """Convert to .tflite (calibrated on training images) and compare it with the frozen graph on held-back ones."""
    from retrain.export.tflite import (
        describe_export,
        export_classifier_tflite,
        representative_sample,
    )
    from retrain.card.markdown import model_card_markdown_path
    from retrain.predict.parity import report_parity

    representative = []
    if tflite.quantization in ("dynamic", "int8") and tflite.representative_images > 0:
        training_paths = [path for path, _ in sets.split.training]
        representative = representative_sample(training_paths, tflite.representative_images, seed or 0)
    export = export_classifier_tflite(classifier, card, saved_model_dir, tflite.output, tflite.quantization,
                                      representative, reporter.log, reporter.warn)
    reporter.log(f"Wrote {export.path} ({describe_export(export)}), {export.sidecar} and "
                 f"{model_card_markdown_path(export.path)}")
    held_back = [path for path, _ in sets.split.validation + sets.split.test]
    report_parity(export, output_graph, held_back, reporter.log, reporter.warn)
    return export.path
