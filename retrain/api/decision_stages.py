"""The stage of `retrain` that turns the trained model's scores into decisions, before export:
a temperature that calibrates its probabilities, the operating points asked for, and the
threshold of its out-of-distribution score. All are chosen on held-out images, never on
the images the top layer learned from."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from retrain.api.config import DecisionConfig
from retrain.api.stages import Arrays, Sets, log_validation_auc
from retrain.metrics import Rate, auc_interval, roc_auc
from retrain.reporter import Reporter
from retrain.decisions.calibration import calibrate, scaled
from retrain.decisions.ood import OodDetector, fit_ood, out_of_fold_scores
from retrain.decisions.operating_points import (
    FEW_POSITIVES,
    choose_operating_points,
    resolve_label,
)
from retrain.train.top_layer import TopLayer, TrainingConfig, softmax, train_top_layer

FOLDS = 5
OOD_VALIDATION_IMAGES = 40  # fewer, and the out-of-distribution threshold is chosen out of fold


@dataclass(frozen=True)
class HeldOut:
    """Logits of images the top layer did not learn from, and where they came from."""

    logits: np.ndarray
    y: np.ndarray
    name: str  # "validation" or "out-of-fold training"


@dataclass(frozen=True)
class Decisions:
    layer: TopLayer  # calibrated: its logits divided by the temperature
    ood: OodDetector | None
    card: dict  # what the model card records: calibration, operating points, ood, validation figures


def decide(layer: TopLayer, sets: Sets, training: Arrays, validation: Arrays, config: DecisionConfig,
           training_config: TrainingConfig, can_refit: bool, reporter: Reporter,
           validation_rows: list | None = None) -> Decisions:
    """`training`: the training images' features as served (no distorted copies; tuned ones after
    fine-tuning). `can_refit`: whether the top layer can be retrained on folds of them (the
    top-layer recipes without patient metadata), for out-of-fold predictions when the
    validation set is too small. `validation_rows`: the validation images' patient metadata
    rows, for the model card's subgroup figures."""
    labels = sets.labels
    held_out = _held_out(layer, labels, training, validation, config, training_config, can_refit, reporter)
    if held_out is None:
        reporter.warn("no validation images: the probabilities are not calibrated, and no operating point or "
                      "out-of-distribution threshold is stored; give --validation_dir or a --validation_percentage")
        return Decisions(layer, None, {})
    calibration = calibrate(held_out.logits, held_out.y, held_out.name)
    reporter.log(calibration.describe())
    points = choose_operating_points(config.operating_points, labels, softmax(held_out.logits / calibration.temperature),
                                     held_out.y, held_out.name)
    for point in points:
        reporter.log(f"Operating point: {point.describe()}")
    calibrated = scaled(layer, calibration.temperature)
    log_validation_auc("Validation", calibrated, validation, labels, reporter,
                       "after calibration: the figures of the model card and evaluate")
    ood = _ood(training, validation, len(labels), training_config.random_seed, reporter)
    card = {"calibration": calibration.card(), "operating_points": [p.card() for p in points],
            "validation_figures": validation_figures(calibrated, validation, labels)}
    if ood is not None:
        card["ood"] = ood.card()
    if validation_rows is not None and len(validation):
        card["subgroups"] = _subgroups(calibrated, validation, validation_rows, labels, points, reporter)
    return Decisions(calibrated, ood, card)


def _subgroups(layer: TopLayer, validation: Arrays, rows: list, labels: list[str], points, reporter: Reporter) -> list:
    """The validation figures by sex, age band and other categories, as evaluate prints them."""
    from retrain.patient.subgroups import measure_subgroups

    lines = measure_subgroups(rows, layer.probabilities(validation.x, validation.patient), validation.y, labels,
                              points).lines()
    for line in lines:
        reporter.log(line)
    return lines


def _held_out(layer: TopLayer, labels: list[str], training: Arrays, validation: Arrays, config: DecisionConfig,
              training_config: TrainingConfig, can_refit: bool, reporter: Reporter) -> HeldOut | None:
    """The validation set's logits, or out-of-fold ones on the training images where the
    validation set has too few positives for an operating point (or no images) and refitting is cheap."""
    few = _few_positives(labels, validation, config)
    if len(validation) and not few:
        return HeldOut(layer.logits(validation.x, validation.patient), validation.y, "validation")
    if can_refit and len(training) >= 2 * FOLDS:
        reason = f"--operating_point: only {few}" if few else "no validation images"
        reporter.warn(f"{reason}; calibrating and choosing operating points on out-of-fold predictions on the "
                      f"{len(training)} training images ({FOLDS} folds) instead")
        return HeldOut(out_of_fold_logits(training, len(labels), training_config), training.y, "out-of-fold training")
    if few:
        reporter.warn(f"--operating_point: only {few}; the chosen threshold is uncertain (give a larger --validation_dir)")
    return HeldOut(layer.logits(validation.x, validation.patient), validation.y, "validation") if len(validation) \
        else None


def _few_positives(labels: list[str], validation: Arrays, config: DecisionConfig) -> str | None:
    """ "12 validation images of melanoma (fewer than 30)" for the first point that has too few."""
    for spec in config.operating_points:
        if spec.target == "threshold":
            continue
        index = resolve_label(spec, labels)
        count = int((validation.y == index).sum()) if spec.target == "sensitivity" else int((validation.y != index).sum())
        if count < FEW_POSITIVES:
            what = labels[index] if spec.target == "sensitivity" else f"classes other than {labels[index]}"
            return f"{count} validation images of {what} (fewer than {FEW_POSITIVES})"
    return None


def out_of_fold_logits(training: Arrays, class_count: int, config: TrainingConfig) -> np.ndarray:
    """Each training image's logits from a top layer trained on the other folds, for the full
    number of steps (no early stopping: the held fold must not choose the step)."""
    folds = np.arange(len(training)) % FOLDS
    np.random.default_rng(0 if config.random_seed is None else config.random_seed).shuffle(folds)
    config = dataclasses.replace(config, early_stopping_patience=0)
    logits = np.zeros((len(training), class_count), np.float64)
    for fold in range(FOLDS):
        held, kept = folds == fold, folds != fold
        layer = train_top_layer(training.x[kept], training.y[kept], training.x[held], training.y[held], class_count,
                                config)
        logits[held] = layer.logits(training.x[held])
    return logits


def _ood(training: Arrays, validation: Arrays, class_count: int, seed: int | None, reporter: Reporter) -> OodDetector | None:
    """The detector fitted on the training features; its threshold flags 5 % of the validation
    images, or of out-of-fold training images where there are too few validation images for a
    5 % quantile to mean anything."""
    if len(training) < 2 * FOLDS:
        return None
    detector = fit_ood(training.x, training.y, class_count)
    if len(validation) >= OOD_VALIDATION_IMAGES:
        detector = detector.with_threshold(detector.scores(validation.x), "validation")
    else:
        detector = detector.with_threshold(out_of_fold_scores(training.x, training.y, class_count, seed),
                                           "out-of-fold training")
    reporter.log(f"Out-of-distribution thresholds: a score above {detector.threshold:.3g} notes an image as unlike the "
                 f"training images ({100 * detector.flagged_share:.1f}% of {detector.chosen_on} images); above "
                 f"{detector.hard_threshold:.3g}, as not of the kind the model was made for")
    return detector


def validation_figures(layer: TopLayer, validation: Arrays, labels: list[str]) -> dict:
    """Per-class AUC and accuracy on the validation set, with 95 % intervals, for the model card."""
    if not len(validation):
        return {}
    return figures(layer.probabilities(validation.x, validation.patient), validation.y, labels, "validation")


def figures(probabilities: np.ndarray, true: np.ndarray, labels: list[str], set_name: str) -> dict:
    """Per-class AUC and accuracy of these probabilities, with 95 % intervals, on the `set_name`
    ("validation" or "test") set."""
    aucs = {}
    for index, label in enumerate(labels):
        positive = true == index
        aucs[label] = {"auc": roc_auc(probabilities[:, index], positive),
                       "interval": list(auc_interval(probabilities[:, index], positive)),
                       "positives": int(positive.sum())}
        if positive.all() or not positive.any():  # the AUC needs images of the class and of others
            aucs[label]["no_auc"] = (f"every {set_name} image is {label}" if positive.all()
                                     else f"the {set_name} set has no image of {label}")
    correct = int((probabilities.argmax(axis=1) == true).sum())
    return {"count": len(true), "auc": aucs, "accuracy": Rate.of(correct, len(true)).as_dict()}

