"""Temperature scaling (Guo et al. 2017): one scalar dividing the logits, fitted on held-out
images, so that a probability of 0.8 is right about 80 % of the time.

Label smoothing, class weights and fine-tuning each move the probabilities; a temperature
does not change which class wins, and folded into the top layer's weights it reaches every
exported format, TFLite included, with no extra operation.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from retrain.metrics import (
    calibration_noise_floor,
    expected_calibration_error,
    negative_log_likelihood,
)
from retrain.train.top_layer import TopLayer, softmax


@dataclass(frozen=True)
class Calibration:
    temperature: float
    ece_before: float
    ece_after: float
    nll_before: float
    nll_after: float
    count: int
    chosen_on: str
    ece_floor: float  # what a perfectly calibrated model would show on this many images
    # A recalibration (set_operating_point.recalibrate): the calibration the model had before, its
    # temperature already in the model; `temperature` divides the logits on top of it.
    recalibrated_from: Calibration | None = None

    @property
    def total_temperature(self) -> float:
        """What divides the raw logits in the model: the product of every temperature fitted."""
        return self.temperature * (1.0 if self.recalibrated_from is None else self.recalibrated_from.total_temperature)

    def card(self, with_earlier: bool = True) -> dict:
        """The card's entry; the earlier calibrations nested in it unless `with_earlier` is False
        (the model card keeps them in a key of their own, where older retrains pass them by)."""
        entries = {key: value for key, value in dataclasses.asdict(self).items() if key != "recalibrated_from"}
        if with_earlier and self.recalibrated_from is not None:  # absent otherwise: older cards write the same
            entries["recalibrated_from"] = self.recalibrated_from.card()
        return entries

    @classmethod
    def from_card(cls, data: dict) -> Calibration:
        earlier = data.get("recalibrated_from")
        return cls(**{"ece_floor": None, **data, "recalibrated_from": None if earlier is None else cls.from_card(earlier)})

    def describe(self) -> str:
        return (f"Calibration on {self.chosen_on} (N={self.count}): temperature {self.temperature:.3g}; negative "
                f"log-likelihood {self.nll_before:.3f} before, {self.nll_after:.3f} after; expected calibration error "
                f"{self.ece_before:.3f} before, {self.ece_after:.3f} after (sampling alone gives about "
                f"{self.ece_floor:.3f} on {self.count} images)" + self._on_top())

    def _on_top(self) -> str:
        earlier = self.recalibrated_from
        if earlier is None:
            return ""
        return (f"; on top of temperature {earlier.total_temperature:.3g} fitted on {earlier.chosen_on}, so the "
                f"model's logits are now divided by {self.total_temperature:.3g}")


def fit_temperature(logits: np.ndarray, true: np.ndarray) -> float:
    """The temperature minimising the negative log-likelihood plus a weak prior on log T
    (standard normal): where the held-out images are all right, the likelihood alone would
    sharpen the model without limit. A golden-section search over log T in [1/20, 20]."""
    logits, true = np.asarray(logits, np.float64), np.asarray(true)

    def loss(log_t: float) -> float:
        return negative_log_likelihood(softmax(logits / np.exp(log_t)), true) + log_t ** 2 / (2 * len(true))

    low, high = np.log(1 / 20), np.log(20)
    ratio = (np.sqrt(5) - 1) / 2
    a, b = high - ratio * (high - low), low + ratio * (high - low)
    for _ in range(60):
        if loss(a) < loss(b):
            high, b = b, a
            a = high - ratio * (high - low)
        else:
            low, a = a, b
            b = low + ratio * (high - low)
    return float(np.exp((low + high) / 2))


def calibrate(logits: np.ndarray, true: np.ndarray, chosen_on: str) -> Calibration:
    temperature = fit_temperature(logits, true)
    before, after = softmax(logits), softmax(logits / temperature)
    return Calibration(temperature, expected_calibration_error(before, true), expected_calibration_error(after, true),
                       negative_log_likelihood(before, true), negative_log_likelihood(after, true), len(true),
                       chosen_on, calibration_noise_floor(after))


def recalibrate(probabilities: np.ndarray, true: np.ndarray, chosen_on: str, earlier: Calibration | None) -> Calibration:
    """A temperature fitted on top of the one a model already has, from its probabilities alone:
    log p is its logits up to a constant per image, which the softmax ignores."""
    logits = np.log(np.maximum(np.asarray(probabilities, np.float64), np.finfo(np.float32).tiny))
    return dataclasses.replace(calibrate(logits, true, chosen_on), recalibrated_from=earlier)


def with_temperature(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """The probabilities of the model whose logits are the given one's divided by `temperature`."""
    logits = np.log(np.maximum(np.asarray(probabilities, np.float64), np.finfo(np.float32).tiny))
    return softmax(logits / temperature)


def scaled(layer: TopLayer, temperature: float) -> TopLayer:
    """The top layer whose logits are the given one's divided by `temperature`."""
    return TopLayer(layer.weights / temperature, layer.bias / temperature, layer.step,
                    None if layer.patient_weights is None else layer.patient_weights / temperature)
