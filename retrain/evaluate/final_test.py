"""The final test of a trained run: accuracy, AUC and calibration error on the test set (or
a sample of it), printed and recorded in the model card."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from retrain.data.sets import Sets
from retrain.decisions.figures import Figures, measure, with_calibration_error
from retrain.features.arrays import Arrays
from retrain.metrics import auc_line
from retrain.reporter import Reporter
from retrain.train.top_layer import TopLayer, accuracy


@dataclass(frozen=True)
class TestFigures:
    accuracy: float | None  # None without a test set
    count: int
    figures: Figures  # the figures printed, for the model card; empty without a test set


def final_test(layer: TopLayer, test: Arrays, sets: Sets, batch_size: int, print_misclassified: bool,
               seed: int | None, reporter: Reporter, uncalibrated: TopLayer | None = None) -> TestFigures:
    """Final test accuracy, AUC and calibration error on the test set, or a sample of
    `batch_size` of its images (-1: all); with `uncalibrated`, its calibration error too, the
    honest check of a temperature fitted on validation."""
    if not len(test):
        return TestFigures(None, 0, Figures())
    chosen = np.arange(len(test))
    if batch_size >= 0:  # a sample without replacement: no image counted twice
        chosen = np.random.default_rng(seed).choice(len(test), min(batch_size, len(test)), replace=False)
    sample = test.taken(chosen)
    predictions = layer.probabilities(sample.x, sample.patient)
    test_accuracy = accuracy(predictions, sample.y)
    reporter.log(f"Final test accuracy = {100 * test_accuracy:.1f}% (N={len(chosen)})")
    reporter.log(auc_line("Final test", predictions, sample.y, sets.labels))
    before = uncalibrated.probabilities(sample.x, sample.patient) \
        if uncalibrated is not None and uncalibrated is not layer else None
    figures = with_calibration_error(measure(predictions, sample.y, sets.labels, "test"), predictions, sample.y,
                                     before)
    ece = f"{figures.ece:.3f}"
    ece = f"= {ece}" if before is None else f"{figures.ece_before:.3f} before, {ece} after calibration"
    reporter.log(f"Final test expected calibration error {ece} (sampling alone gives about {figures.ece_floor:.3f})")
    if print_misclassified:
        reporter.log("=== MISCLASSIFIED TEST IMAGES ===")
        for row, index in enumerate(chosen):
            predicted = int(np.argmax(predictions[row]))
            if predicted != test.y[index]:
                reporter.log(f"{sets.split.test[index][0]}  {sets.labels[predicted]}")
    return TestFigures(test_accuracy, len(test), figures)
