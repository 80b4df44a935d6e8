"""Operating points: the score above which a class is called, chosen for a sensitivity,
a specificity or given outright (DecisionConfig.operating_points, e.g. "melanoma:sensitivity=0.95").

A ranking is not a decision: screening runs at high sensitivity, and the threshold that
gives it is read off labelled images the model did not train on. The chosen point travels
in the model card of every export, with what it achieved where it was chosen.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from retrain.errors import UserError
from retrain.metrics import percent, positive_class_index, sensitivity_specificity

TARGETS = ("sensitivity", "specificity", "threshold")
FEW_POSITIVES = 30  # below this many positives a chosen sensitivity is mostly luck


@dataclass(frozen=True)
class OperatingPointSpec:
    """What the user asked for: `label` None means the positive class of a two-class model."""

    label: str | None
    target: str  # one of TARGETS
    value: float


def parse_operating_point(text: str, flag: str = "DecisionConfig.operating_points") -> OperatingPointSpec:
    """ "melanoma:sensitivity=0.95", "specificity=0.8" (two classes), "nevus:threshold=0.4"."""
    label, _, setting = text.rpartition(":") if isinstance(text, str) else ("", "", "")
    target, equals, value = setting.partition("=")
    target = target.strip().lower()
    if not equals or target not in TARGETS:
        raise UserError(f"{flag} {text!r}: expected [CLASS:]sensitivity=S, specificity=S or threshold=T, "
                        "e.g. melanoma:sensitivity=0.95")
    try:
        number = float(value)
    except ValueError:
        raise UserError(f"{flag} {text!r}: {value.strip()!r} is not a number") from None
    if target == "threshold" and not 0 < number < 1:
        raise UserError(f"{flag} {text!r}: threshold must be above 0 and below 1 (a score reaches 1 only where a "
                        f"probability rounds to 1, so it would call almost nothing), got {value.strip()}")
    if not 0 < number <= 1:
        raise UserError(f"{flag} {text!r}: {target} must be above 0 and at most 1, got {value.strip()}")
    return OperatingPointSpec(label.strip() or None, target, number)


def resolve_label(spec: OperatingPointSpec, labels: list[str], flag: str = "DecisionConfig.operating_points") -> int:
    """The class index a spec is about; a typo or a missing class name fails with the labels listed."""
    if spec.label is None:
        if len(labels) != 2:
            raise UserError(f"{flag}: name the class (one of {', '.join(labels)}), e.g. "
                            f"{labels[0]}:{spec.target}={spec.value:g}; only a two-class model has an obvious one")
        if "other" not in labels:
            index = positive_class_index(labels)
            raise UserError(f"{flag} {spec.target}={spec.value:g}: name the class ({labels[0]} or {labels[1]}), e.g. "
                            f"{labels[index]}:{spec.target}={spec.value:g}; neither class is called 'other', so which "
                            "one is positive is not obvious")
        return positive_class_index(labels)
    normalised = {label.lower().replace("_", " "): i for i, label in enumerate(labels)}
    index = normalised.get(spec.label.lower().replace("_", " "))
    if index is None:
        raise UserError(f"{flag}: no class {spec.label!r}; the classes are {', '.join(labels)}")
    return index


def distinct_specs(specs: tuple[OperatingPointSpec, ...], labels: list[str],
                   flag: str = "DecisionConfig.operating_points") -> tuple[tuple[OperatingPointSpec, ...], list[str]]:
    """The specs without exact repeats (same class, target and value once resolved), and one
    note per repeated one: a point stored twice only doubles every decision line and table."""
    kept, seen = [], {}
    for spec in specs:
        key = (resolve_label(spec, labels, flag), spec.target, spec.value)
        if key not in seen:
            kept.append(spec)
        seen[key] = seen.get(key, 0) + 1
    notes = [f"{flag} {labels[index]}:{target}={value:g} is given {count} times; it is stored once"
             for (index, target, value), count in seen.items() if count > 1]
    return tuple(kept), notes


def where(chosen_on: str) -> str:
    """ "validation" -> "the validation images": where a threshold or temperature came from, in words."""
    if chosen_on == "validation":
        return "the validation images"
    if chosen_on == "out-of-fold training":
        return "out-of-fold predictions on the training images"
    return f"the images of {chosen_on}"


@dataclass(frozen=True)
class OperatingPoint:
    label: str
    target: str
    value: float
    threshold: float  # call `label` when its probability is >= threshold
    sensitivity: float  # where it was chosen
    specificity: float
    positives: int
    negatives: int
    chosen_on: str  # "validation", "out-of-fold training" or the tree it was set from

    def card(self) -> dict:
        return {"label": self.label, "target": self.target, "value": self.value, "threshold": self.threshold,
                "sensitivity": self.sensitivity, "specificity": self.specificity, "positives": self.positives,
                "negatives": self.negatives, "chosen_on": self.chosen_on}

    @classmethod
    def from_card(cls, entry: dict) -> "OperatingPoint":
        return cls(**{name: entry[name] for name in cls.__dataclass_fields__})

    def describe(self) -> str:
        """ "melanoma >= 0.214 (for sensitivity 0.95; on validation: sensitivity 95.0%, specificity 61.2%)"."""
        asked = "set by hand" if self.target == "threshold" else f"for {self.target} {self.value:g}"
        return (f"{self.label} >= {self.threshold:.4g} ({asked}; on {self.chosen_on}: sensitivity "
                f"{percent(self.sensitivity)}, specificity {percent(self.specificity)}, "
                f"{self.positives} positives, {self.negatives} negatives)")


def choose_threshold(scores: np.ndarray, positive: np.ndarray, target: str, value: float) -> float:
    """The highest threshold that still reaches `value` sensitivity, or the lowest that reaches
    `value` specificity, on these scores; "score >= threshold" is the call. It lies halfway to
    the nearest other score, so another format's rounding of the same image keeps its side."""
    scores, positive = np.asarray(scores, np.float64), np.asarray(positive, bool)
    if target == "threshold":
        return float(value)
    if target == "sensitivity":
        ranked = np.sort(scores[positive])[::-1]
        kept = ranked[max(math.ceil(value * len(ranked) - 1e-9), 1) - 1]  # the last positive called
        below = scores[scores < kept]
        return float((kept + below.max()) / 2) if len(below) else float(kept)
    ranked = np.sort(scores[~positive])
    needed = math.ceil(value * len(ranked) - 1e-9)
    if needed == 0:
        return float(ranked[0])
    cleared = ranked[needed - 1]  # the last negative left below the threshold
    above = scores[scores > cleared]
    return float((cleared + above.min()) / 2) if len(above) else float(np.nextafter(cleared, np.inf))


def choose_operating_points(specs: tuple[OperatingPointSpec, ...], labels: list[str], probabilities: np.ndarray,
                            true: np.ndarray, chosen_on: str) -> tuple[OperatingPoint, ...]:
    """Each spec's threshold on these (calibrated) probabilities, with what it achieves on them."""
    points = []
    for spec in specs:
        index = resolve_label(spec, labels)
        positive = np.asarray(true) == index
        if spec.target != "threshold" and (positive.all() or not positive.any()):
            raise UserError(f"DecisionConfig.operating_points {labels[index]}: {chosen_on} needs images of {labels[index]} and of "
                            "other classes to choose a threshold")
        scores = probabilities[:, index]
        threshold = choose_threshold(scores, positive, spec.target, spec.value)
        sensitivity, specificity = sensitivity_specificity(scores, positive, threshold)
        points.append(OperatingPoint(labels[index], spec.target, spec.value, threshold, sensitivity.value,
                                     specificity.value, sensitivity.count, specificity.count, chosen_on))
    return tuple(points)
