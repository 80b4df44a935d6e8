"""What turns the trained model's scores into decisions, fitted before export: a temperature
that calibrates its probabilities, the operating points asked for, and the threshold of its
out-of-distribution score. All are chosen on held-out images, never on the images the top
layer learned from: the validation set, or out-of-fold predictions on the training images
where validation is too small."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from retrain.decisions.calibration import Calibration, calibrate, scaled
from retrain.decisions.figures import Figures, measure
from retrain.decisions.ood import OodDetector, fit_with_threshold
from retrain.decisions.operating_points import (
    FEW_POSITIVES,
    OperatingPoint,
    OperatingPointSpec,
    choose_operating_points,
    resolve_label,
)
from retrain.decisions.out_of_fold import FOLDS, out_of_fold_logits
from retrain.features.arrays import Arrays
from retrain.metrics import auc_line
from retrain.reporter import Reporter
from retrain.train.top_layer import TopLayer, TrainingConfig, softmax


@dataclass(frozen=True)
class HeldOut:
    """Logits of images the top layer did not learn from, and where they came from."""

    logits: np.ndarray
    y: np.ndarray
    name: str  # "validation" or "out-of-fold training"


@dataclass(frozen=True)
class FittedDecisions:
    """The calibrated top layer and what the model card records of the decisions; all None
    (the layer as given) without held-out images."""

    layer: TopLayer  # its logits divided by the temperature
    calibration: Calibration | None = None
    points: tuple[OperatingPoint, ...] | None = None
    validation_figures: Figures | None = None
    ood: OodDetector | None = None


def fit_decisions(layer: TopLayer, labels: list[str], training: Arrays, validation: Arrays,
                  specs: tuple[OperatingPointSpec, ...], training_config: TrainingConfig, can_refit: bool,
                  reporter: Reporter) -> FittedDecisions:
    """The temperature, the operating points `specs` and the out-of-distribution threshold, each
    logged. `training`: the training images' features as served (no distorted copies; tuned ones after
    fine-tuning). `can_refit`: whether the top layer can be retrained on folds of them (the
    top-layer recipes without patient metadata), for out-of-fold predictions when the
    validation set is too small."""
    held_out = _held_out(layer, labels, training, validation, specs, training_config, can_refit, reporter)
    if held_out is None:
        reporter.warn("no validation images: the probabilities are not calibrated, and no operating point or "
                      "out-of-distribution threshold is stored; give DataConfig.validation_dir or a "
                      "DataConfig.validation_percentage")
        return FittedDecisions(layer)
    calibration = calibrate(held_out.logits, held_out.y, held_out.name)
    reporter.log(calibration.describe())
    points = choose_operating_points(specs, labels, softmax(held_out.logits / calibration.temperature), held_out.y,
                                     held_out.name)
    for point in points:
        reporter.log(f"Operating point: {point.describe()}")
    calibrated = scaled(layer, calibration.temperature)
    figures = Figures()
    if len(validation):
        probabilities = calibrated.probabilities(validation.x, validation.patient)
        reporter.log(auc_line("Validation", probabilities, validation.y, labels,
                              "after calibration: the figures of the model card and evaluate"))
        figures = measure(probabilities, validation.y, labels, "validation")
    ood = fit_with_threshold(training.x, training.y, validation.x, len(labels), training_config.random_seed)
    if ood is not None:
        reporter.log(f"Out-of-distribution thresholds: a score above {ood.threshold:.3g} notes an image as unlike "
                     f"the training images ({100 * ood.flagged_share:.1f}% of {ood.chosen_on} images); above "
                     f"{ood.hard_threshold:.3g}, as not of the kind the model was made for")
    return FittedDecisions(calibrated, calibration, tuple(points), figures, ood)


def _held_out(layer: TopLayer, labels: list[str], training: Arrays, validation: Arrays,
              specs: tuple[OperatingPointSpec, ...], training_config: TrainingConfig, can_refit: bool,
              reporter: Reporter) -> HeldOut | None:
    """The validation set's logits, or out-of-fold ones on the training images where the
    validation set has too few positives for an operating point (or no images) and refitting is cheap."""
    few = few_positives(labels, validation.y, specs)
    if len(validation) and not few:
        return HeldOut(layer.logits(validation.x, validation.patient), validation.y, "validation")
    if can_refit and len(training) >= 2 * FOLDS:
        reason = f"DecisionConfig.operating_points: only {few}" if few else "no validation images"
        reporter.warn(f"{reason}; calibrating and choosing operating points on out-of-fold predictions on the "
                      f"{len(training)} training images ({FOLDS} folds) instead")
        logits = out_of_fold_logits(training.x, training.y, len(labels), training_config)
        return HeldOut(logits, training.y, "out-of-fold training")
    if few:
        reporter.warn(f"DecisionConfig.operating_points: only {few}; the chosen threshold is uncertain (give a "
                      "larger DataConfig.validation_dir)")
    return HeldOut(layer.logits(validation.x, validation.patient), validation.y, "validation") if len(validation) \
        else None


def few_positives(labels: list[str], true: np.ndarray, specs: tuple[OperatingPointSpec, ...]) -> str | None:
    """ "12 validation images of melanoma (fewer than 30)" for the first point that has too few."""
    for spec in specs:
        if spec.target == "threshold":
            continue
        index = resolve_label(spec, labels)
        count = int((true == index).sum()) if spec.target == "sensitivity" else int((true != index).sum())
        if count < FEW_POSITIVES:
            what = labels[index] if spec.target == "sensitivity" else f"classes other than {labels[index]}"
            return f"{count} validation images of {what} (fewer than {FEW_POSITIVES})"
    return None
