"""retrain from start to finish: scan, cache bottlenecks, split, train, evaluate, export.

The command line only parses flags into `RetrainOptions` and prints what `run_retrain`
reports through its `log` callback.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from retrain.data.augmentation import CopyAugmentation, check_copy_augmentation, copies_to_make
from retrain.backbones import DEFAULT_ARCHITECTURE
from retrain.data.dataset import add_held_out_trees, scan_held_out_tree, scan_image_tree, split_images
from retrain.errors import UserError
from retrain.data.images import map_batches
from retrain.train.fine_tuning import FineTuneConfig, check_fine_tuning
from retrain.train.learner import Callback
from retrain.metrics import positive_class_index, roc_auc
from retrain.train.top_layer import StepReport, TrainingConfig, accuracy, parse_class_weights, train_top_layer


@dataclass
class RetrainOptions:
    image_dir: Path
    output_graph: Path = Path("/tmp/output_graph.pb")
    output_labels: Path = Path("/tmp/output_labels.txt")
    saved_model_dir: Path | None = None
    bottleneck_dir: Path | None = None
    model_dir: Path | None = None
    architecture: str = DEFAULT_ARCHITECTURE
    tfhub_module: str | None = None  # TF Hub URL or SavedModel folder; replaces --architecture
    image_size: int | None = None  # input size: a hub module that accepts any size, or EfficientNet-Lite at another size
    final_tensor_name: str = "final_result"
    testing_percentage: float = 10.0
    validation_percentage: float = 10.0
    # Class-per-folder trees added to the validation / test set (on top of the hash split of
    # image_dir by the percentages; the CLI sets a percentage to 0 when its dir is given alone).
    validation_dir: Path | None = None
    test_dir: Path | None = None
    test_batch_size: int = -1
    print_misclassified_test_images: bool = False
    summaries_dir: Path | None = None
    tflite_output: Path | None = None
    tflite_quantization: str = "none"  # none, dynamic, float16 or int8
    tflite_representative_images: int = 100  # training images that calibrate int8 and prepare int8 weights
    class_weights: str | None = None  # "balanced" or "label=weight,..."
    intermediate_output_graphs_dir: Path | None = None
    intermediate_store_frequency: int = 0
    training: TrainingConfig = field(default_factory=TrainingConfig)
    distortion: CopyAugmentation = field(default_factory=CopyAugmentation)  # cached augmentation of training images
    distorted_copies: int | None = None  # None = the default K when a distortion is set
    fine_tuning: FineTuneConfig = field(default_factory=FineTuneConfig)  # --fine_tune_layers and friends
    recipe: str = "poets"  # recorded in the model's metadata
    metadata: tuple[Path, ...] = ()  # patient-metadata CSVs (image_id + columns): a second model input
    metadata_columns: str | None = None  # comma-separated; None = every column but image_id
    metadata_categorical: str | None = None  # columns forced categorical
    metadata_numeric: str | None = None  # columns forced numeric
    metadata_fusion: str = "shift"  # see retrain.train.fusion


@dataclass
class RetrainResult:
    labels: list[str]
    test_accuracy: float | None
    test_count: int
    bottlenecks_computed: int
    bottlenecks_reused: int
    failures: int


def _format_auc(name: str, probabilities: np.ndarray, true: np.ndarray, labels: list[str]) -> str:
    """ROC AUC beside accuracy, which misleads on imbalanced sets: one figure for two
    classes, one-vs-rest per class and their mean otherwise."""
    if len(labels) == 2:
        positive = positive_class_index(labels)
        auc = roc_auc(probabilities[:, positive], true == positive)
        return f"{name} AUC = {auc:.3f} ({labels[positive]} vs {labels[1 - positive]}, N={len(true)})"
    aucs = [roc_auc(probabilities[:, i], true == i) for i in range(len(labels))]
    parts = ", ".join(f"{label} {auc:.3f}" for label, auc in zip(labels, aucs))
    return f"{name} AUC (one-vs-rest) = {parts}; mean {np.nanmean(aucs):.3f} (N={len(true)})"


def _format_step(report: StepReport) -> str:
    lines = [
        f"Step {report.step}: Train accuracy = {100 * report.train_accuracy:.1f}%",
        f"Step {report.step}: Cross entropy = {report.cross_entropy:f}",
    ]
    if report.validation_accuracy is not None:
        lines.append(
            f"Step {report.step}: Validation accuracy = {100 * report.validation_accuracy:.1f}% (N={report.validation_count})"
        )
    return "\n".join(lines)


class _SummaryWriters:
    """TensorBoard scalars for one run, in a new subfolder: the user's folder is never cleared."""

    def __init__(self, summaries_dir: Path):
        import tensorflow as tf

        stamp = time.strftime("run-%Y%m%d-%H%M%S")
        run_dir = Path(summaries_dir).expanduser() / stamp
        suffix = 1
        while run_dir.exists():
            suffix += 1
            run_dir = run_dir.with_name(f"{stamp}-{suffix}")
        self.run_dir = run_dir
        self.train = tf.summary.create_file_writer(str(run_dir / "train"))
        self.validation = tf.summary.create_file_writer(str(run_dir / "validation"))
        # Written with TensorBoard's scalar-plugin tag, so TensorBoard plots them, without
        # needing the tensorboard package to write them.
        from tensorflow.core.framework.summary_pb2 import SummaryMetadata

        metadata = SummaryMetadata()
        metadata.plugin_data.plugin_name = "scalars"
        self._scalar_metadata = metadata.SerializeToString()
        self._tf = tf

    def write(self, report: StepReport) -> None:
        scalars = [(self.train, "accuracy", report.train_accuracy), (self.train, "cross_entropy", report.cross_entropy)]
        if report.validation_accuracy is not None:
            scalars.append((self.validation, "accuracy", report.validation_accuracy))
        if report.validation_auc is not None:
            scalars += [(self.validation, "auc", report.validation_auc), (self.validation, "cross_entropy", report.validation_loss)]
        if report.learning_rate is not None:
            scalars.append((self.train, "learning_rate", report.learning_rate))
        for writer, tag, value in scalars:
            if np.isnan(value):
                continue
            with writer.as_default(step=report.step):
                self._tf.summary.write(tag, self._tf.constant(value, self._tf.float32), metadata=self._scalar_metadata)
        self.train.flush()
        self.validation.flush()


def run_retrain(
    options: RetrainOptions,
    log: Callable[[str], None],
    warn: Callable[[str], None],
    progress_factory: Callable[..., Callable[[int], None]] | None = None,  # (total, label[, unit])
) -> RetrainResult:
    from retrain import paths
    from retrain.backbones import create_backbone, create_hub_backbone, sized_config
    from retrain.features.bottlenecks import compute_bottlenecks, open_cache

    _check_backbone_options(options)
    # A typo or an impossible size fails before slow work.
    backbone_config = None if options.tfhub_module else sized_config(options.architecture, options.image_size)
    check_fine_tuning(options.fine_tuning, backbone_config)
    if options.training.steps < 1:
        raise UserError("--how_many_training_steps must be at least 1")
    if options.training.train_batch_size < 1:
        raise UserError("--train_batch_size must be at least 1")
    if options.training.eval_step_interval < 1:
        raise UserError("--eval_step_interval must be at least 1")
    if options.tflite_output is not None:
        _check_tflite_options(options)
    check_copy_augmentation(options.distortion, options.distorted_copies)
    table = _read_metadata(options) if options.metadata else None
    strategy = None
    if options.fine_tuning.active:
        from retrain.train.distribution import make_strategy

        strategy = make_strategy(options.fine_tuning.distribute)  # before any other TensorFlow work, as multi_worker needs
    tree = scan_image_tree(options.image_dir)
    for folder in tree.skipped_empty:
        warn(f"{folder}: no .jpg/.jpeg/.png images; class skipped")
    if len(tree.classes) < 2:
        raise UserError(
            f"--image_dir {tree.root}: found {len(tree.classes)} class folder(s) with images; need at least two"
        )
    for image_class in tree.classes:
        log(f"Class {image_class.label!r}: {len(image_class.images)} images in {image_class.folder}")
    if options.class_weights:
        parse_class_weights(options.class_weights, tree.labels, np.zeros(0, int))  # a typo fails before slow work
    held_out = {}  # --validation_dir / --test_dir trees, checked against tree's classes before slow work
    for set_name, directory in (("validation", options.validation_dir), ("test", options.test_dir)):
        if directory is not None:
            held_out[set_name] = scan_held_out_tree(directory, set_name, tree, warn)
            count = sum(len(c.images) for c in held_out[set_name].classes)
            log(f"{'Validation' if set_name == 'validation' else 'Test'} set: {count} images from {held_out[set_name].root}")

    model_dir = Path(options.model_dir or paths.default_model_dir()).expanduser()
    if options.tfhub_module:
        backbone = create_hub_backbone(options.tfhub_module, options.image_size)
    else:
        backbone = create_backbone(options.architecture, model_dir, image_size=options.image_size)
    if options.fine_tuning.active:
        backbone.module.unfreeze(options.fine_tuning.layers)  # a backbone that cannot be tuned fails before slow work
    cache = open_cache(options.bottleneck_dir or paths.default_bottleneck_dir(), backbone)
    all_paths = [path for image_class in tree.classes for path in image_class.images]
    all_paths += [path for held in held_out.values() for image_class in held.classes for path in image_class.images]
    progress = progress_factory(len(all_paths), "Bottlenecks") if progress_factory else None
    extraction = compute_bottlenecks(all_paths, backbone, cache, progress=progress)
    for failure in extraction.failures:
        warn(f"skipped {failure.path}: {failure.reason}")
    log(
        f"Bottlenecks: {extraction.reused} reused, {extraction.computed} computed, "
        f"{len(extraction.failures)} failed; cache {cache.root}"
        + (f"; computed with {extraction.engine}" if extraction.engine else "")
    )
    if extraction.engine_note:
        log(extraction.engine_note)

    features_by_path = {path: extraction.features[i] for i, path in enumerate(all_paths) if extraction.ok[i]}
    labels, images_by_class = [], []
    for image_class in tree.classes:
        usable = [p for p in image_class.images if p in features_by_path]
        if usable:
            labels.append(image_class.label)
            images_by_class.append(usable)
        else:
            warn(f"{image_class.folder}: no readable images; class skipped")
    if len(labels) < 2:
        raise UserError(f"--image_dir {tree.root}: fewer than two classes have readable images")

    split = split_images(images_by_class, labels, options.validation_percentage, options.testing_percentage)
    split = add_held_out_trees(split, labels, held_out, usable=features_by_path.__contains__)
    for note in split.notes:
        warn(note)
    log(f"Split: {len(split.training)} training, {len(split.validation)} validation, {len(split.test)} testing")
    patient = _encode_metadata(table, options, split, log, warn) if table is not None else None
    train_m, val_m, test_m = patient.rows if patient else (None, None, None)

    def arrays(pairs):
        if not pairs:
            return np.zeros((0, backbone.feature_size), np.float32), np.zeros(0, np.int64)
        return np.stack([features_by_path[p] for p, _ in pairs]), np.array([c for _, c in pairs])

    train_x, train_y = arrays(split.training)
    train_x, train_y = _add_distorted_copies(options, [p for p, _ in split.training], train_x, train_y, backbone, cache,
                                             log, warn, progress_factory)
    val_x, val_y = arrays(split.validation)
    test_x, test_y = arrays(split.test)
    summaries = _SummaryWriters(options.summaries_dir) if options.summaries_dir else None
    if summaries:
        log(f"TensorBoard summaries: {summaries.run_dir}")

    history: list[StepReport] = []

    def report(step: StepReport) -> None:
        history.append(step)
        log(_format_step(step))
        if summaries:
            summaries.write(step)

    training = options.training
    if options.class_weights:
        weights = parse_class_weights(options.class_weights, labels, train_y)
        training = dataclasses.replace(training, class_weights=weights)
        log("Class weights: " + ", ".join(f"{label} {w:.3g}" for label, w in zip(labels, weights)))
    from retrain.export.graph import Classifier, export_frozen_graph, export_saved_model, model_card, write_labels

    metadata = model_card(backbone, labels, options.final_tensor_name)

    def snapshot(step: int, intermediate) -> None:
        target = Path(options.intermediate_output_graphs_dir).expanduser() / f"intermediate_{step}.pb"
        export_frozen_graph(Classifier(backbone, intermediate, options.final_tensor_name), metadata, target)
        log(f"Saved intermediate graph {target}")

    store_every = options.intermediate_store_frequency if options.intermediate_output_graphs_dir else 0
    progress = progress_factory(training.steps, "Top layer", "steps") if progress_factory else None
    head = train_top_layer(train_x, train_y, val_x, val_y, len(labels), training, report=report, snapshot=snapshot,
                      snapshot_every=store_every, progress=progress)
    if head.step is not None:
        log(f"Early stopping: kept the top layer from step {head.step}, best validation {training.early_stopping_metric}")
    if len(val_y):
        log(_format_auc("Validation", head.probabilities(val_x), val_y, labels))
    metadata["recipe"] = options.recipe
    if options.fine_tuning.active:
        head, tuned = _fine_tune(options, backbone, model_dir, head, split, labels, training, summaries, strategy, log,
                                 warn, progress_factory)
        val_x, test_x = (_features(backbone, [p for p, _ in pairs]) for pairs in (split.validation, split.test))
        metadata = {**model_card(backbone, labels, options.final_tensor_name), "recipe": options.recipe,
                    "fine_tuning": tuned}
        if len(val_y):
            log(_format_auc("Fine-tuned validation", head.probabilities(val_x), val_y, labels))
    if patient:
        from retrain.export.graph import PATIENT_INPUT
        from retrain.train.fusion import fuse

        train_x = _features(backbone, [p for p, _ in split.training]) if options.fine_tuning.active else train_x
        head = fuse(options.metadata_fusion, head, train_x, train_m, train_y, val_x, val_m, val_y, len(labels), training,
                    logits_in_sample=options.fine_tuning.active)
        metadata["patient_metadata"] = {"input_name": PATIENT_INPUT, "fusion": options.metadata_fusion,
                                        "columns": patient.encoding.column_names, "encoding": patient.encoding.to_json()}
        if len(val_y):
            log(_format_auc("Validation with patient metadata", head.probabilities(val_x, val_m), val_y, labels))

    test_accuracy = None
    if len(test_y):
        chosen = np.arange(len(test_y))
        if options.test_batch_size >= 0:
            chosen = np.random.default_rng(options.training.random_seed).integers(0, len(test_y), options.test_batch_size)
        predictions = head.probabilities(test_x[chosen], None if test_m is None else test_m[chosen])
        test_accuracy = accuracy(predictions, test_y[chosen])
        log(f"Final test accuracy = {100 * test_accuracy:.1f}% (N={len(chosen)})")
        log(_format_auc("Final test", predictions, test_y[chosen], labels))
        if options.print_misclassified_test_images:
            log("=== MISCLASSIFIED TEST IMAGES ===")
            for row, index in enumerate(chosen):
                predicted = int(np.argmax(predictions[row]))
                if predicted != test_y[index]:
                    log(f"{split.test[index][0]}  {labels[predicted]}")

    classifier = Classifier(backbone, head, options.final_tensor_name)
    export_frozen_graph(classifier, metadata, options.output_graph)
    write_labels(options.output_labels, labels)
    log(f"Wrote {options.output_graph} and {options.output_labels}")
    if options.saved_model_dir:
        export_saved_model(classifier, metadata, options.saved_model_dir)
        log(f"Wrote SavedModel {options.saved_model_dir}")
    _plot_training(options.output_graph, history, head.probabilities(val_x, val_m) if len(val_y) else None, val_y,
                   labels, log)
    if options.tflite_output is not None:
        _export_tflite(options, classifier, metadata, split, log, warn)
    return RetrainResult(
        labels, test_accuracy, len(test_y), extraction.computed, extraction.reused, len(extraction.failures)
    )


def _fine_tune(options, backbone, model_dir, head, split, labels, training, summaries, strategy, log, warn,
               progress_factory):
    """Tune a copy of the backbone with the head, then put the tuned weights into `backbone`
    (the one every export is made from); returns the tuned head and what to record of the run."""
    from retrain.backbones import create_backbone, create_hub_backbone
    from retrain.train.fine_tuning import copy_tuned_weights, fine_tune, run_fingerprint

    def build():
        if options.tfhub_module:
            return create_hub_backbone(options.tfhub_module, options.image_size)
        return create_backbone(options.architecture, model_dir, image_size=options.image_size)

    config = options.fine_tuning
    run_dir = Path(options.output_graph).expanduser().with_suffix(".finetune")
    fingerprint = run_fingerprint(
        backbone=backbone.identity, labels=labels, fine_tuning=dataclasses.asdict(config),
        training=dataclasses.asdict(training),
        images={name: [(str(path), c, path.stat().st_size) for path, c in pairs]
                for name, pairs in (("training", split.training), ("validation", split.validation))},
    )
    callbacks = (_EpochSummaries(summaries, training.steps),) if summaries else ()
    tuned, result = fine_tune(backbone, build, head, backbone.input_size, split.training, split.validation, len(labels),
                              config, training, run_dir, fingerprint, log, warn, progress_factory, callbacks,
                              strategy=strategy)
    copy_tuned_weights(tuned, backbone, config.layers)
    log(f"Checkpoints and epoch results: {run_dir}")
    return result.head, {
        "layers": config.layers, "epochs": config.epochs, "steps": config.steps, "learning_rate": config.learning_rate,
        "batch_size": config.batch_size, "weight_decay": config.weight_decay,
        "augmentation": config.augmentation.describe(), "kept_epoch": result.best_epoch,
        "validation_auc": {r.epoch: r.validation_auc for r in result.history if r.validation_auc is not None},
    }


def _read_metadata(options: RetrainOptions):
    """The patient-metadata CSV, read and its flags checked before any slow work."""
    from retrain.train.fusion import FUSIONS
    from retrain.data.patient_metadata import fit_encoding, merge_tables, read_metadata_csv

    if options.metadata_fusion not in FUSIONS:
        raise UserError(f"--metadata_fusion must be one of {', '.join(FUSIONS)}, got {options.metadata_fusion!r}")
    if copies_to_make(options.distortion, options.distorted_copies) and not options.fine_tuning.active:
        raise UserError("--metadata cannot be used with cached distorted copies (distortion flags without "
                        "fine-tuning); drop the distortion flags, or fine-tune with --recipe finetune")
    table = merge_tables([read_metadata_csv(path) for path in options.metadata])
    fit_encoding(table, list(table.rows), *_metadata_column_flags(options))  # a column typo fails here
    return table


def _metadata_column_flags(options: RetrainOptions) -> tuple:
    def names(text: str | None):
        return None if text is None else [name.strip() for name in text.split(",") if name.strip()]

    return names(options.metadata_columns), names(options.metadata_categorical) or (), names(options.metadata_numeric) or ()


@dataclass
class _EncodedMetadata:
    encoding: object  # patient_metadata.MetadataEncoding
    rows: tuple  # encoded [N, M] arrays of the training, validation and test images


def _encode_metadata(table, options: RetrainOptions, split, log, warn) -> _EncodedMetadata:
    """Fit the encoding on the training images only (means, categories), then encode every set."""
    from retrain.data.patient_metadata import describe, encode, fit_encoding, match_images

    training_ids = [path.stem for path, _ in split.training]
    encoding = fit_encoding(table, training_ids, *_metadata_column_flags(options))
    for line in describe(encoding, table, training_ids):
        log(f"Metadata column {line}")
    sets = (split.training, split.validation, split.test)
    every_path = [path for pairs in sets for path, _ in pairs]
    rows, without_row, unused_rows = match_images(table, every_path)
    log(f"Metadata: {len(every_path) - without_row} of {len(every_path)} images have a row in {table.file_names()}"
        + (f"; {without_row} without one count as all missing" if without_row else "")
        + (f"; {unused_rows} rows match no image and are ignored" if unused_rows else ""))
    encoded = encode(encoding, rows, warn, table.where())
    ends = np.cumsum([len(pairs) for pairs in sets])
    return _EncodedMetadata(encoding, tuple(np.split(encoded, ends[:-1])))


def _features(backbone, paths: list[Path]) -> np.ndarray:
    """The (tuned) backbone's features of each image, read as serving reads it; images here
    were all read once already, when their bottlenecks were made."""
    import tensorflow as tf

    from retrain.train.fine_tuning import EVALUATION_BATCH_SIZE

    features, ok, _ = map_batches(tf.function(backbone.module.features, reduce_retracing=True), paths,
                                  backbone.input_size, EVALUATION_BATCH_SIZE)
    return features[ok] if features is not None else np.zeros((0, backbone.feature_size), np.float32)


class _EpochSummaries(Callback):
    """TensorBoard scalars of each fine-tuning epoch, numbered on from the top layer's steps."""

    def __init__(self, summaries, head_steps: int):
        self.summaries, self.head_steps = summaries, head_steps

    def on_epoch_end(self, result) -> None:
        self.summaries.write(StepReport(
            step=self.head_steps + result.epoch, train_accuracy=float("nan"), cross_entropy=result.train_loss,
            validation_accuracy=result.validation_accuracy, validation_count=0, validation_auc=result.validation_auc,
            validation_loss=result.validation_loss,
        ))


def _add_distorted_copies(options, training_paths, train_x, train_y, backbone, cache, log, warn, progress_factory):
    """Training rows plus K cached distorted copies per training image (none unless asked for)."""
    copies = copies_to_make(options.distortion, options.distorted_copies)
    if options.distortion.active and not copies:
        warn("--distorted_copies 0: distortion flags ignored; training on undistorted bottlenecks")
    if not copies or not len(train_y):
        return train_x, train_y
    if options.distorted_copies is None:
        log(f"CopyAugmentation flags without --distorted_copies: caching {copies} distorted copies per training image")
    progress = progress_factory(copies * len(train_y), "Distorted copies") if progress_factory else None
    from retrain.features.bottlenecks import add_distorted_copies

    added = add_distorted_copies(training_paths, train_x, train_y, options.distortion, copies, backbone, cache, progress)
    for failure in added.failures:
        warn(f"skipped a distorted copy of {failure.path}: {failure.reason}")
    log(
        f"Distorted copies ({options.distortion.describe()}): {copies} per training image, "
        f"{added.reused} reused, {added.computed} computed; training on {len(added.labels)} rows"
    )
    return added.features, added.labels


def _plot_training(output_graph: Path, history, val_probabilities, val_y, labels, log) -> None:
    """Training curves (and the validation ROC) as a PNG beside the graph."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from retrain.evaluate.evaluation import draw_roc

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
        shown = [1] if len(labels) == 2 else range(len(labels))
        draw_roc(roc, [(labels[c], val_probabilities[:, c], val_y == c, None) for c in shown])
    roc.set(xlabel="1 - specificity", ylabel="sensitivity", title="Validation ROC")
    figure.tight_layout()
    figure.savefig(target, dpi=100)
    plt.close(figure)
    log(f"Wrote training curves {target}")


def _check_backbone_options(options: RetrainOptions) -> None:
    if options.tfhub_module and options.architecture.strip().lower() != DEFAULT_ARCHITECTURE:
        raise UserError("--tfhub_module and --architecture both name a backbone; pass only one")
    if options.image_size is not None and options.image_size < 1:
        raise UserError("--image_size must be at least 1")


def _check_tflite_options(options: RetrainOptions) -> None:
    """Fail on a TFLite flag mistake before any slow work."""
    from retrain.predict.tflite_model import QUANTIZATIONS

    if Path(options.tflite_output).suffix.lower() != ".tflite":
        raise UserError(f"--tflite_output {options.tflite_output}: must end in .tflite (label_image recognises the model by it)")
    if options.tflite_quantization not in QUANTIZATIONS:
        raise UserError(f"--tflite_quantization {options.tflite_quantization!r}: choose one of {', '.join(QUANTIZATIONS)}")
    if options.tflite_quantization == "int8" and options.tflite_representative_images < 1:
        raise UserError("--tflite_representative_images must be at least 1: int8 calibration needs a representative set")


def _export_tflite(options: RetrainOptions, classifier, metadata: dict, split, log, warn) -> None:
    """Convert to .tflite (calibrated on training images) and compare it with the frozen graph on held-back ones."""
    from retrain.export.tflite import describe_export, export_classifier_tflite, report_parity, representative_sample

    representative = []
    if options.tflite_quantization in ("dynamic", "int8") and options.tflite_representative_images > 0:
        training_paths = [path for path, _ in split.training]
        representative = representative_sample(training_paths, options.tflite_representative_images, options.training.random_seed or 0)
    export = export_classifier_tflite(
        classifier, metadata, options.saved_model_dir, options.tflite_output, options.tflite_quantization, representative, log, warn
    )
    log(f"Wrote {export.path} ({describe_export(export)}) and {export.sidecar}")
    held_back = [path for path, _ in split.validation + split.test]
    report_parity(export, options.output_graph, held_back, log, warn)
