"""How a model did on a held-out set: accuracy and per-class ROC AUC with 95 % intervals,
and on the test set its calibration error; measured once, printed, and recorded in the
model card."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from retrain.metrics import (
    Rate,
    auc_interval,
    calibration_noise_floor,
    expected_calibration_error,
    roc_auc,
)


def _without_none(entries: dict) -> dict:
    return {key: value for key, value in entries.items() if value is not None}


@dataclass(frozen=True)
class ClassAuc:
    auc: float | None
    interval: tuple
    positives: int
    no_auc: str | None = None  # why there is no AUC: every image is of the class, or none

    def to_json(self) -> dict:
        entry = {"auc": self.auc, "interval": list(self.interval), "positives": self.positives}
        return entry if self.no_auc is None else {**entry, "no_auc": self.no_auc}


@dataclass(frozen=True)
class Share:
    """A proportion with its 95 % interval, as metrics.Rate writes it."""

    value: float | None
    successes: int
    count: int
    interval: tuple

    def to_json(self) -> dict:
        return {"value": self.value, "successes": self.successes, "count": self.count,
                "interval": list(self.interval)}


@dataclass(frozen=True)
class Figures:
    """Accuracy and per-class AUC on one set, with 95 % intervals; the test set's also has its
    calibration error. `count` 0 with no accuracy: recorded, but the set was empty."""

    count: int = 0
    auc: dict[str, ClassAuc] = field(default_factory=dict)
    accuracy: Share | None = None
    ece: float | None = None
    ece_floor: float | None = None
    ece_before: float | None = None

    @property
    def empty(self) -> bool:
        return self.accuracy is None

    def to_json(self) -> dict:
        if self.empty:
            return {}
        return _without_none({"count": self.count, "auc": {label: auc.to_json() for label, auc in self.auc.items()},
                              "accuracy": self.accuracy.to_json(), "ece": self.ece, "ece_floor": self.ece_floor,
                              "ece_before": self.ece_before})

    @classmethod
    def from_json(cls, data: dict) -> Figures:
        if not data:
            return cls()
        accuracy = data["accuracy"]
        return cls(data["count"], {label: ClassAuc(entry.get("auc"), tuple(entry["interval"]), entry["positives"],
                                                   entry.get("no_auc")) for label, entry in data["auc"].items()},
                   Share(accuracy["value"], accuracy.get("successes"), accuracy.get("count"),
                         tuple(accuracy["interval"])),
                   data.get("ece"), data.get("ece_floor"), data.get("ece_before"))


def measure(probabilities: np.ndarray, true: np.ndarray, labels: list[str], set_name: str) -> Figures:
    """Per-class AUC and accuracy of these probabilities, with 95 % intervals, on the `set_name`
    ("validation" or "test") set."""
    aucs = {}
    for index, label in enumerate(labels):
        positive = true == index
        no_auc = None
        if positive.all() or not positive.any():  # the AUC needs images of the class and of others
            no_auc = (f"every {set_name} image is {label}" if positive.all()
                      else f"the {set_name} set has no image of {label}")
        aucs[label] = ClassAuc(roc_auc(probabilities[:, index], positive),
                               tuple(auc_interval(probabilities[:, index], positive)), int(positive.sum()), no_auc)
    rate = Rate.of(int((probabilities.argmax(axis=1) == true).sum()), len(true))
    return Figures(len(true), aucs, Share(rate.value, rate.successes, rate.count, (rate.low, rate.high)))


def with_calibration_error(figures: Figures, probabilities: np.ndarray, true: np.ndarray,
                           uncalibrated: np.ndarray | None = None) -> Figures:
    """The test set's figures with its expected calibration error, the error sampling alone
    gives, and with `uncalibrated` probabilities the error before calibration: the honest
    check of a temperature fitted on validation."""
    before = None if uncalibrated is None else expected_calibration_error(uncalibrated, true)
    return dataclasses.replace(figures, ece=expected_calibration_error(probabilities, true),
                               ece_floor=calibration_noise_floor(probabilities), ece_before=before)
