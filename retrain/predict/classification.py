"""What classifying one image says: its top classes, the decision of each operating point the
model stores, its out-of-distribution check, and what the model cannot say."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from retrain.card.model_card import ModelCard
from retrain.data.images import ImageBytes
from retrain.decisions.ood import OodThresholds
from retrain.decisions.operating_points import OperatingPoint, where
from retrain.metrics import percent
from retrain.predict.heatmaps import Heatmap
from retrain.predict.loaded_model import LoadedModel
from retrain.predict.prediction import Prediction, prediction_json


NO_CARD = ("the model carries no retrain model card (a tensorflow-for-poets graph, a SavedModel without "
           "assets.extra/retrain_metadata.json, or not exported by retrain)")


@dataclass(frozen=True)
class Decision:
    """One stored operating point applied to this image: whether its class is called, with
    what its threshold achieved where it was chosen, so the call is read with its error rates.
    Worded alike for every class: retrain does not know which classes are diseases."""

    point: OperatingPoint
    score: float

    @property
    def positive(self) -> bool:
        return self.score >= self.point.threshold

    def line(self) -> str:
        """ "Decision: melanoma 0.412 >= threshold 0.214 -> called melanoma (threshold chosen for ...)"."""
        point = self.point
        score, threshold = _distinct(self.score, point.threshold)
        if self.positive:
            call = f">= threshold {threshold} -> called {point.label}"
        else:
            call = f"< threshold {threshold} -> not called {point.label}, which does not rule it out"
        rates = f"sensitivity {percent(point.sensitivity)}, specificity {percent(point.specificity)}"
        if point.target == "threshold":
            origin = f"threshold {point.value:g} set by hand; on {where(point.chosen_on)} it gave {rates}"
        else:
            origin = (f"threshold chosen for {point.target} {point.value:g} on {where(point.chosen_on)}, where it "
                      f"gave {rates}")
        return f"Decision: {point.label} {score} {call} ({origin})"

    def as_json(self) -> dict:
        point = self.point
        return {"label": point.label, "score": round(self.score, 6), "threshold": point.threshold,
                "target": point.target, "value": point.value, "chosen_on": point.chosen_on,
                "validation_sensitivity": _finite(point.sensitivity),
                "validation_specificity": _finite(point.specificity), "positive": self.positive}


@dataclass(frozen=True)
class OodCheck:
    """The out-of-distribution score of this image against the thresholds stored with the model:
    a note when it is unlike the training images, a warning when it is not of the kind the
    model was made for (retrain.decisions.ood says why there are two)."""

    score: float
    thresholds: OodThresholds

    @property
    def level(self) -> str:
        return self.thresholds.level(self.score)

    @property
    def flagged(self) -> bool:
        return self.level != "none"

    def message(self) -> str:
        """The line label_image prints before the prediction; "" when the image is not flagged."""
        unlike, hard = self.thresholds.unlike, self.thresholds.not_of_kind
        if self.level == "not_of_kind":
            return (f"warning: this image is not of the kind the model was made for (out-of-distribution score "
                    f"{self.score:.3g}, above {hard:.3g}, where blank frames, noise, text and photos of other "
                    "things score): the prediction and decisions below are set aside; check that it is an image "
                    "of the kind the model was trained on")
        if self.level == "unlike_training":
            return (f"note: this image is unlike the model's training images (out-of-distribution score "
                    f"{self.score:.3g} > {unlike:.3g}), as one from another camera, collection or population "
                    "would be: the model card's figures were measured on images like the training ones and may "
                    "not hold for it")
        return ""

    def decision_caveat(self) -> str | None:
        """What a decision on this image is to be read with; None where it stands as it is."""
        if self.level == "not_of_kind":
            return "set aside: the image is not of the kind the model was made for"
        if self.level == "unlike_training":
            return "less certain: the image is unlike the training images"
        return None

    def as_json(self) -> dict:
        return {"score": round(self.score, 6), "threshold": self.thresholds.unlike,
                "hard_threshold": self.thresholds.not_of_kind, "level": self.level, "flagged": self.flagged}


def _distinct(score: float, threshold: float) -> tuple[str, str]:
    """Both numbers to 3 decimals, or to as many digits as it takes to tell them apart."""
    shown = f"{score:.3f}", f"{threshold:.3f}"
    for digits in range(3, 10):
        if shown[0] != shown[1] or score == threshold:
            return shown
        shown = f"{score:.{digits}g}", f"{threshold:.{digits}g}"
    return shown


def _finite(value: float) -> float | None:
    return None if value is None or math.isnan(value) else value


@dataclass(frozen=True)
class Classification:
    """One image's top classes, best first, the decisions of the model's operating points, its
    out-of-distribution check, and the heatmap drawn (or why it could not be)."""

    image: Path | ImageBytes
    model: LoadedModel
    predictions: list[Prediction]
    heatmap: Heatmap | None = None
    heatmap_file: Path | None = None  # where the heatmap was asked to be drawn
    heatmap_error: str | None = None  # the heatmap's failure; the predictions are complete regardless
    decisions: tuple[Decision, ...] = ()  # one per operating point stored with the model
    ood: OodCheck | None = None  # None: the model has no out-of-distribution check
    no_operating_point: str | None = None  # why there is no decision, when there is none
    no_ood: str | None = None  # why there is no out-of-distribution check, when there is none
    notes: tuple[str, ...] = ()  # what label_image says about missing checks, one line each

    @property
    def decision_caveat(self) -> str | None:
        """Why the decisions are set aside or less certain on this image; None where they stand."""
        return None if self.ood is None else self.ood.decision_caveat()

    def decision_lines(self) -> list[str]:
        caveat = self.decision_caveat
        return [decision.line() + ("" if caveat is None else f" [{caveat}]") for decision in self.decisions]

    def as_json(self) -> dict:
        """label_image's JSON: each decision says whether it stands (`reliable`) and why not (`caveat`)."""
        caveat = self.decision_caveat
        decisions = [{**d.as_json(), "reliable": self.ood is None or self.ood.level != "not_of_kind", "caveat": caveat}
                     for d in self.decisions]
        return prediction_json(self.model, self.image, self.predictions, self.heatmap, self.heatmap_file,
                                          self.heatmap_error, decisions, None if self.ood is None else self.ood.as_json(),
                                          self.no_operating_point, self.no_ood)


def checked(model: LoadedModel, stock: bool, probabilities: np.ndarray, ood_score: float | None,
             tta: bool) -> dict:
    """The Classification fields of the stored decisions: the operating points applied, the
    out-of-distribution check, and a note for each that the model lacks."""
    card = model.model_card
    indices = {label: i for i, label in enumerate(model.labels or [])}
    decisions = tuple(Decision(point, float(probabilities[indices[point.label]]))
                      for point in (card.points if card else ()) if point.label in indices)
    thresholds = card.ood.thresholds if card and card.ood else None
    ood = None if ood_score is None or thresholds is None else OodCheck(ood_score, thresholds)
    missing = None if decisions else _no_point_reason(card, stock)
    unavailable = card.ood.unavailable if card and card.ood else None
    settable = bool(card and card.labels)  # set_operating_point needs a model card to store a point in
    notes = () if stock else _notes(missing, ood is None, tta and bool(decisions), unavailable, settable)
    no_ood = None if ood is not None else _no_ood_reason(card, stock, unavailable, ood_score is None)
    return {"decisions": decisions, "ood": ood, "no_operating_point": missing, "no_ood": no_ood, "notes": notes}


def _no_point_reason(card: ModelCard | None, stock: bool) -> str:
    if stock:
        return "the stock ImageNet classifier has no operating point"
    if card is None:
        return NO_CARD
    if card.operating_points is None:
        return "the model was exported before retrain stored operating points"
    return "the model was trained without DecisionConfig.operating_points"


def _no_ood_reason(card: ModelCard | None, stock: bool, unavailable: str | None, no_output: bool) -> str:
    """Why an image gets no out-of-distribution check, for the JSON."""
    if stock:
        return "the stock ImageNet classifier has no out-of-distribution check"
    if card is None:
        return NO_CARD
    if unavailable:
        return unavailable
    if no_output:
        return "the model has no out-of-distribution output"
    return "the model stores no out-of-distribution threshold"


def _notes(missing: str | None, no_ood: bool, tta: bool, unavailable: str | None = None,
           settable: bool = True) -> tuple[str, ...]:
    """One line for what the model cannot say (no decision, no out-of-distribution check);
    set_operating_point is suggested only for a model it accepts (`settable`)."""
    notes = []
    if unavailable:
        notes.append(f"no out-of-distribution check: {unavailable}")
        no_ood = False
    if missing is not None:
        also = "; it has no out-of-distribution check either" if no_ood else ""
        how = " (set_operating_point stores a threshold without retraining)" if settable else ""
        notes.append(f"no operating point, so no decision: {missing}. The scores above rank the classes; they do "
                     f"not call one{how}{also}")
    elif no_ood:
        notes.append("no out-of-distribution check: the model cannot warn that an image is unlike its training images")
    if tta:
        notes.append("load.tta: the thresholds were chosen on single-view scores; the averaged score may sit a little "
                     "differently around them")
    return tuple(notes)
