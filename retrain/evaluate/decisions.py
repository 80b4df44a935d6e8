"""From scores to decisions, measured on the evaluated images: each stored operating point's
sensitivity and specificity, the share of images the out-of-distribution score flags, the
calibration of the probabilities and, with evaluate.patient_metadata, the same by subgroup. Every figure
comes with its count and a 95 % interval: what a model card promises is checked here."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from retrain.evaluate.evaluation import Predictions, ood_thresholds
from retrain.patient.subgroups import Subgroups, measure_subgroups
from retrain.metrics import (
    Rate,
    calibration_noise_floor,
    expected_calibration_error,
    sensitivity_specificity,
)
from retrain.card.model_card import ModelCard
from retrain.decisions.calibration import Calibration
from retrain.decisions.ood import OodRecord, OodThresholds
from retrain.decisions.operating_points import OperatingPoint

CALIBRATION_BINS = 15  # as retrain measures calibration at training (metrics.expected_calibration_error)
LISTED_FLAGS = 10  # flagged images printed; EvaluationOutputs.json and EvaluationOutputs.report list them all


@dataclass(frozen=True)
class MeasuredPoint:
    """A stored operating point applied to the evaluated images."""

    point: OperatingPoint
    sensitivity: Rate
    specificity: Rate

    def as_dict(self) -> dict:
        p = self.point
        return {"label": p.label, "target": p.target, "value": p.value, "threshold": p.threshold,
                "chosen_on": p.chosen_on, "sensitivity": self.sensitivity.as_dict(),
                "specificity": self.specificity.as_dict()}

    def how_chosen(self) -> str:
        p = self.point
        return "set by hand" if p.target == "threshold" else f"chosen for {p.target} {p.value:g} on {p.chosen_on}"

    def describe(self) -> str:
        """ "Operating point melanoma >= 0.214 (chosen for sensitivity 0.95 on validation): sensitivity 93.3%
        (28/30, 95% CI 79-98%), specificity 58.3% (70/120, 95% CI 49-67%)"."""
        return (f"Operating point {self.point.label} >= {self.point.threshold:.3g} ({self.how_chosen()}): "
                f"sensitivity {self.sensitivity}, specificity {self.specificity}")


def measure_points(points: tuple[OperatingPoint, ...], predictions: Predictions) -> tuple[MeasuredPoint, ...]:
    labels = predictions.labels
    return tuple(MeasuredPoint(p, *sensitivity_specificity(predictions.probabilities[:, labels.index(p.label)],
                                                          predictions.true == labels.index(p.label), p.threshold))
                 for p in points)


def no_point_reason(card: ModelCard | None) -> str:
    if card is None:
        return "no retrain model card"
    if card.operating_points is None:
        return "exported before retrain chose one"
    return "trained without --operating_point"  # also in the HTML report, whose reader ran the command


@dataclass(frozen=True)
class OodFlags:
    """The images whose out-of-distribution score is above the stored thresholds: noted as unlike
    the training images, or, above the hard one, as not of the kind the model was made for."""

    thresholds: OodThresholds
    stored: OodRecord  # the model card's out-of-distribution entry
    flagged: Rate  # above the first threshold (either level)
    not_of_kind: Rate  # above the hard one
    images: tuple[tuple[Path, float], ...]  # (path, ood score) of each flagged image, highest score first

    def as_dict(self) -> dict:
        return {"threshold": self.thresholds.unlike, "hard_threshold": self.thresholds.not_of_kind,
                "flagged": self.flagged.as_dict(), "not_of_kind": self.not_of_kind.as_dict(),
                "flagged_images": [str(path) for path, _ in self.images],
                "not_of_kind_images": [str(path) for path, score in self.images
                                       if self.thresholds.level(score) == "not_of_kind"]}

    def summary(self) -> str:
        share, where = self.stored.flagged_share, self.stored.chosen_on or "held-out"
        there = "" if share is None else f"; the threshold flagged {100 * share:.1f}% of {where} images"
        return (f"Out-of-distribution: {self.flagged} of the images flagged as unlike the training images "
                f"(ood score > {self.thresholds.unlike:.4g}{there}); {self.not_of_kind} as not of the kind the "
                f"model was made for (> {self.thresholds.not_of_kind:.4g})")

    def lines(self) -> list[str]:
        listed = [f"  flagged: {path} (ood score {score:.4g}{self._kind(score)})"
                  for path, score in self.images[:LISTED_FLAGS]]
        more = len(self.images) - LISTED_FLAGS
        return [self.summary(), *listed] + ([f"  ... and {more} more (all in EvaluationOutputs.json and EvaluationOutputs.report)"] if more > 0 else [])

    def _kind(self, score: float) -> str:
        return ", not of the kind the model was made for" if self.thresholds.level(score) == "not_of_kind" else ""


def ood_flags(card: ModelCard | None, predictions: Predictions) -> OodFlags | None:
    thresholds = ood_thresholds(card)
    if thresholds is None or predictions.ood_scores is None:
        return None
    scores = predictions.ood_scores
    over = np.flatnonzero(scores > thresholds.unlike)
    over = over[np.argsort(-scores[over], kind="stable")]
    return OodFlags(thresholds, card.ood, Rate.of(len(over), len(scores)),
                    Rate.of(int((scores > thresholds.not_of_kind).sum()), len(scores)),
                    tuple((predictions.paths[i], float(scores[i])) for i in over))


@dataclass(frozen=True)
class CalibrationFigures:
    ece: float  # on the evaluated images
    floor: float  # what a perfectly calibrated model would show on this many images
    stored: Calibration | None  # the model card's calibration entry

    def as_dict(self) -> dict:
        return {"ece": self.ece, "ece_floor": self.floor, "temperature": None if self.stored is None else self.stored.temperature,
                "bins": CALIBRATION_BINS}

    def line(self) -> str:
        here = (f"Calibration: expected calibration error {self.ece:.3f} on these images ({CALIBRATION_BINS} bins; "
                f"sampling alone gives about {self.floor:.3f})")
        stored = self.stored
        if stored is None or stored.temperature is None:
            return f"{here}; the model stores no temperature (its probabilities were not calibrated by retrain)"
        there = "" if stored.ece_after is None else f" (error there {stored.ece_after:.3f})"
        return f"{here}; temperature {stored.temperature:.3g} fitted on {stored.chosen_on or 'held-out images'}{there}"


@dataclass(frozen=True)
class Decisions:
    """What evaluate measures of how a model's scores become decisions."""

    points: tuple[MeasuredPoint, ...]
    no_point: str | None  # why no operating point is measured
    calibration: CalibrationFigures | None  # None for unlabelled images
    ood: OodFlags | None  # None: no out-of-distribution check stored
    subgroups: Subgroups | None  # None without evaluate.patient_metadata
    unmatched: tuple[str, ...] = ()  # stored points whose class is not among the labels
    no_ood: str | None = None  # why the model's out-of-distribution output cannot be used (an int8 .tflite's)

    def as_dict(self) -> dict:
        """evaluate's JSON keys beside the metrics."""
        return {"operating_points": [p.as_dict() for p in self.points],
                "calibration": None if self.calibration is None else self.calibration.as_dict(),
                "ood": None if self.ood is None else self.ood.as_dict(), "no_ood": self.no_ood,
                "subgroups": None if self.subgroups is None else self.subgroups.as_dict()}

    def lines(self, graph: str) -> list[str]:
        lines = [p.describe() for p in self.points] + list(self.unmatched)
        if self.no_point is not None:
            lines.append(f"{graph}: no operating point stored ({self.no_point}); scores only")
        if self.calibration is not None:
            lines.append(self.calibration.line())
        lines += [] if self.ood is None else self.ood.lines()
        lines += [] if self.no_ood is None else [f"Out-of-distribution: no check: {self.no_ood}"]
        lines += [] if self.subgroups is None else self.subgroups.lines()
        return [""] + lines if lines else []


def measure_decisions(card: ModelCard | None, predictions: Predictions) -> Decisions:
    """The decisions' figures on labelled images; on unlabelled ones only what needs no label
    (the out-of-distribution flags)."""
    ood = ood_flags(card, predictions)
    no_ood = card.ood.unavailable if card is not None and card.ood is not None else None
    if predictions.true is None or not len(predictions.paths):
        return Decisions((), None, None, ood, None, no_ood=no_ood)
    labels = predictions.labels
    stored = card.points if card is not None else ()
    points = tuple(p for p in stored if p.label in labels)
    unmatched = tuple(f"Operating point {p.label} >= {p.threshold:.3g}: not measured, no class {p.label!r} among the "
                      f"labels ({', '.join(labels)})" for p in stored if p.label not in labels)
    calibration = CalibrationFigures(expected_calibration_error(predictions.probabilities, predictions.true,
                                                                CALIBRATION_BINS),
                                     calibration_noise_floor(predictions.probabilities, CALIBRATION_BINS),
                                     card.calibration if card is not None else None)
    subgroups = None if predictions.metadata is None else measure_subgroups(
        predictions.metadata, predictions.probabilities, predictions.true, labels, points)
    return Decisions(measure_points(points, predictions), None if stored else no_point_reason(card), calibration, ood,
                     subgroups, unmatched, no_ood)
