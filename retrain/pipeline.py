"""retrain from start to finish: scan, cache bottlenecks, split, train, evaluate, export.

The command line only parses flags into `RetrainOptions` and prints what `run_retrain`
reports through its `log` callback.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from retrain.backbones import DEFAULT_ARCHITECTURE
from retrain.dataset import scan_image_tree, split_images
from retrain.errors import UserError
from retrain.training import StepReport, TrainingConfig, accuracy, train_head


@dataclass
class RetrainOptions:
    image_dir: Path
    output_graph: Path = Path("/tmp/output_graph.pb")
    output_labels: Path = Path("/tmp/output_labels.txt")
    saved_model_dir: Path | None = None
    bottleneck_dir: Path | None = None
    model_dir: Path | None = None
    architecture: str = DEFAULT_ARCHITECTURE
    final_tensor_name: str = "final_result"
    testing_percentage: float = 10.0
    validation_percentage: float = 10.0
    test_batch_size: int = -1
    print_misclassified_test_images: bool = False
    summaries_dir: Path | None = None
    training: TrainingConfig = field(default_factory=TrainingConfig)


@dataclass
class RetrainResult:
    labels: list[str]
    test_accuracy: float | None
    test_count: int
    bottlenecks_computed: int
    bottlenecks_reused: int
    failures: int


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
        for writer, tag, value in scalars:
            with writer.as_default(step=report.step):
                self._tf.summary.write(tag, self._tf.constant(value, self._tf.float32), metadata=self._scalar_metadata)
        self.train.flush()
        self.validation.flush()


def run_retrain(
    options: RetrainOptions,
    log: Callable[[str], None],
    warn: Callable[[str], None],
    progress_factory: Callable[[int, str], Callable[[int], None]] | None = None,
) -> RetrainResult:
    from retrain import paths
    from retrain.backbones import create_backbone, get_config
    from retrain.bottlenecks import compute_bottlenecks, open_cache

    get_config(options.architecture)  # fail on a typo before any slow work
    if options.training.steps < 1:
        raise UserError("--how_many_training_steps must be at least 1")
    if options.training.train_batch_size < 1:
        raise UserError("--train_batch_size must be at least 1")
    if options.training.eval_step_interval < 1:
        raise UserError("--eval_step_interval must be at least 1")
    tree = scan_image_tree(options.image_dir)
    for folder in tree.skipped_empty:
        warn(f"{folder}: no .jpg/.jpeg/.png images; class skipped")
    if len(tree.classes) < 2:
        raise UserError(
            f"--image_dir {tree.root}: found {len(tree.classes)} class folder(s) with images; need at least two"
        )
    for image_class in tree.classes:
        log(f"Class {image_class.label!r}: {len(image_class.images)} images in {image_class.folder}")

    model_dir = Path(options.model_dir or paths.default_model_dir()).expanduser()
    backbone = create_backbone(options.architecture, model_dir)
    cache = open_cache(options.bottleneck_dir or paths.default_bottleneck_dir(), backbone)
    all_paths = [path for image_class in tree.classes for path in image_class.images]
    progress = progress_factory(len(all_paths), "Bottlenecks") if progress_factory else None
    extraction = compute_bottlenecks(all_paths, backbone, cache, progress=progress)
    for failure in extraction.failures:
        warn(f"skipped {failure.path}: {failure.reason}")
    log(
        f"Bottlenecks: {extraction.reused} reused, {extraction.computed} computed, "
        f"{len(extraction.failures)} failed; cache {cache.root}"
    )

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
    for note in split.notes:
        warn(note)
    log(f"Split: {len(split.training)} training, {len(split.validation)} validation, {len(split.testing)} testing")

    def arrays(pairs):
        if not pairs:
            return np.zeros((0, backbone.feature_size), np.float32), np.zeros(0, np.int64)
        return np.stack([features_by_path[p] for p, _ in pairs]), np.array([c for _, c in pairs])

    train_x, train_y = arrays(split.training)
    val_x, val_y = arrays(split.validation)
    test_x, test_y = arrays(split.testing)
    summaries = _SummaryWriters(options.summaries_dir) if options.summaries_dir else None
    if summaries:
        log(f"TensorBoard summaries: {summaries.run_dir}")

    def report(step: StepReport) -> None:
        log(_format_step(step))
        if summaries:
            summaries.write(step)

    head = train_head(train_x, train_y, val_x, val_y, len(labels), options.training, report=report)

    test_accuracy = None
    if len(test_y):
        chosen = np.arange(len(test_y))
        if options.test_batch_size >= 0:
            chosen = np.random.default_rng(options.training.random_seed).integers(0, len(test_y), options.test_batch_size)
        predictions = head.probabilities(test_x[chosen])
        test_accuracy = accuracy(predictions, test_y[chosen])
        log(f"Final test accuracy = {100 * test_accuracy:.1f}% (N={len(chosen)})")
        if options.print_misclassified_test_images:
            log("=== MISCLASSIFIED TEST IMAGES ===")
            for row, index in enumerate(chosen):
                predicted = int(np.argmax(predictions[row]))
                if predicted != test_y[index]:
                    log(f"{split.testing[index][0]}  {labels[predicted]}")

    from retrain.export import Classifier, export_frozen_graph, export_saved_model, model_metadata, write_labels

    classifier = Classifier(backbone, head, options.final_tensor_name)
    metadata = model_metadata(backbone, labels, options.final_tensor_name)
    export_frozen_graph(classifier, metadata, options.output_graph)
    write_labels(options.output_labels, labels)
    log(f"Wrote {options.output_graph} and {options.output_labels}")
    if options.saved_model_dir:
        export_saved_model(classifier, metadata, options.saved_model_dir)
        log(f"Wrote SavedModel {options.saved_model_dir}")
    return RetrainResult(
        labels, test_accuracy, len(test_y), extraction.computed, extraction.reused, len(extraction.failures)
    )
