"""Temperature scaling on generated logits: it lowers the loss of an overconfident model and,
folded into the top layer, keeps every winner."""

import numpy as np
import pytest

from retrain.decisions.calibration import calibrate, fit_temperature, scaled
from retrain.metrics import expected_calibration_error, negative_log_likelihood
from retrain.train.top_layer import TopLayer, softmax


def _overconfident(seed: int = 0, count: int = 600, overconfidence: float = 4.0):
    """Labels drawn from softmax(logits), and the logits multiplied: a deliberately overconfident model."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 1.2, (count, 3))
    true = np.array([rng.choice(3, p=p) for p in softmax(logits)])
    return logits * overconfidence, true


def test_calibration_lowers_the_negative_log_likelihood_of_an_overconfident_model():
    logits, true = _overconfident()
    calibration = calibrate(logits, true, "validation")
    assert calibration.nll_after < calibration.nll_before - 0.3
    assert calibration.ece_after < calibration.ece_before
    assert calibration.temperature == pytest.approx(4.0, rel=0.25)


def test_calibration_folded_into_the_top_layer_gives_the_calibrated_probabilities_and_the_same_winners():
    rng = np.random.default_rng(1)
    features = rng.normal(size=(300, 8))
    layer = TopLayer(rng.normal(size=(8, 3)) * 3, rng.normal(size=3))
    true = rng.integers(0, 3, 300)
    temperature = fit_temperature(layer.logits(features), true)
    calibrated = scaled(layer, temperature)
    np.testing.assert_allclose(calibrated.probabilities(features), softmax(layer.logits(features) / temperature),
                               rtol=1e-6)
    assert (calibrated.probabilities(features).argmax(1) == layer.probabilities(features).argmax(1)).all()
    assert negative_log_likelihood(calibrated.probabilities(features), true) <= \
        negative_log_likelihood(layer.probabilities(features), true)
    assert expected_calibration_error(calibrated.probabilities(features), true) < \
        expected_calibration_error(layer.probabilities(features), true)
