"""Operating points, calibration and the out-of-distribution score, on generated numbers."""

import numpy as np
import pytest

from retrain.errors import UserError
from retrain.metrics import (
    expected_calibration_error,
    negative_log_likelihood,
    sensitivity_specificity,
)
from retrain.decisions.calibration import calibrate, fit_temperature, scaled
from retrain.decisions.ood import fit_ood, out_of_fold_scores
from retrain.decisions.operating_points import (
    choose_operating_points,
    distinct_specs,
    parse_operating_point,
    resolve_label,
)
from retrain.train.top_layer import TopLayer, softmax
from tests.conftest import as_card


def _scores(seed: int, count: int = 200):
    rng = np.random.default_rng(seed)
    positive = rng.random(count) < 0.3
    scores = np.clip(rng.normal(0.35, 0.2, count) + 0.25 * positive, 0, 1)
    return scores, positive


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("wanted", [0.8, 0.9, 0.95, 1.0])
def test_a_threshold_chosen_for_a_sensitivity_reaches_it_on_the_images_it_was_chosen_on(seed, wanted):
    scores, positive = _scores(seed)
    probabilities = np.stack([1 - scores, scores], axis=1)
    (point,) = choose_operating_points((parse_operating_point(f"malignant:sensitivity={wanted}"),), ["benign", "malignant"],
                                       probabilities, positive.astype(int), "validation")
    sensitivity, specificity = sensitivity_specificity(scores, positive, point.threshold)
    assert sensitivity.value >= wanted
    # the highest such threshold: one positive fewer would fall below the target
    assert (sensitivity.successes - 1) / sensitivity.count < wanted
    assert (point.sensitivity, point.specificity) == (sensitivity.value, specificity.value)


@pytest.mark.parametrize("wanted", [0.5, 0.8, 0.95])
def test_a_threshold_chosen_for_a_specificity_reaches_it(wanted):
    scores, positive = _scores(11)
    (point,) = choose_operating_points((parse_operating_point(f"malignant:specificity={wanted}"),),
                                       ["benign", "malignant"], np.stack([1 - scores, scores], 1), positive.astype(int),
                                       "validation")
    assert sensitivity_specificity(scores, positive, point.threshold)[1].value >= wanted


def test_the_threshold_lies_between_scores_so_rounding_keeps_each_image_on_its_side():
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    positive = np.array([1, 0, 1, 1, 0, 0], bool)
    (point,) = choose_operating_points((parse_operating_point("b:sensitivity=1"),), ["a", "b"],
                                       np.stack([1 - scores, scores], 1), positive.astype(int), "validation")
    assert point.threshold == pytest.approx(0.55)


def test_an_operating_point_survives_the_model_card():
    scores, positive = _scores(3)
    points = choose_operating_points((parse_operating_point("malignant:sensitivity=0.9"),), ["benign", "malignant"],
                                     np.stack([1 - scores, scores], 1), positive.astype(int), "validation")
    assert as_card({"labels": ["benign", "malignant"], "operating_points": [p.card() for p in points]}).points == points
    assert as_card({"labels": ["benign", "malignant"]}).points == ()


def test_a_threshold_of_1_is_refused_saying_why_and_a_sensitivity_of_1_is_taken():
    with pytest.raises(UserError, match=r"threshold must be above 0 and below 1 \(a score reaches 1 only where a "
                                        r"probability rounds to 1, so it would call almost nothing\), got 1$"):
        parse_operating_point("melanoma:threshold=1")
    assert parse_operating_point("melanoma:sensitivity=1").value == 1
    assert parse_operating_point("melanoma:threshold=0.999").value == 0.999


def test_the_positive_class_of_two_is_obvious_only_beside_one_called_other():
    spec = parse_operating_point("sensitivity=0.9")
    assert resolve_label(spec, ["melanoma", "other"]) == 0
    with pytest.raises(UserError, match=r"name the class \(benign or malignant\)"):
        resolve_label(spec, ["benign", "malignant"])


def test_exact_duplicates_are_dropped_once_resolved_and_named_in_one_note():
    specs = tuple(parse_operating_point(text) for text in
                  ("red:sensitivity=0.9", "Red:sensitivity=0.90", "red:specificity=0.9", "red:sensitivity=0.9"))
    kept, notes = distinct_specs(specs, ["blue", "red"])
    assert kept == (specs[0], specs[2])
    assert notes == ["DecisionConfig.operating_points red:sensitivity=0.9 is given 3 times; it is stored once"]


@pytest.mark.parametrize("text, message", [
    ("melanoma:sensitivty=0.9", "expected [CLASS:]sensitivity=S"),
    ("melanoma:sensitivity=high", "'high' is not a number"),
    ("melanoma:sensitivity=95", "sensitivity must be above 0 and at most 1, got 95"),
    ("melanoma:specificity=0", "specificity must be above 0 and at most 1, got 0"),
])
def test_a_mistyped_operating_point_is_one_clear_line(text, message):
    with pytest.raises(UserError, match=message.replace("[", r"\[")):
        parse_operating_point(text)


def test_an_operating_point_names_a_class_of_the_model():
    probabilities = np.full((4, 3), 1 / 3)
    with pytest.raises(UserError, match="no class 'melanom'; the classes are melanoma, nevus, sk"):
        choose_operating_points((parse_operating_point("melanom:sensitivity=0.9"),), ["melanoma", "nevus", "sk"],
                                probabilities, np.array([0, 1, 2, 0]), "validation")
    with pytest.raises(UserError, match="name the class"):
        choose_operating_points((parse_operating_point("sensitivity=0.9"),), ["melanoma", "nevus", "sk"],
                                probabilities, np.array([0, 1, 2, 0]), "validation")


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


def test_the_ood_threshold_flags_five_percent_of_held_out_images_and_far_features_are_flagged():
    rng = np.random.default_rng(2)
    centres = rng.normal(0, 3, (3, 40))
    true = rng.integers(0, 3, 900)
    training = centres[true] + rng.normal(size=(900, 40))
    held = centres[rng.integers(0, 3, 200)] + rng.normal(size=(200, 40))
    detector = fit_ood(training, true, 3)
    detector = detector.with_threshold(detector.scores(held), "validation")
    assert detector.flagged_share == pytest.approx(0.05, abs=0.01)
    far = rng.normal(0, 1, (50, 40)) * 4 + 10
    assert (detector.scores(far) > detector.threshold).all()
    assert np.median(detector.scores(held)) == pytest.approx(1.0, rel=0.3)  # typical images score about 1
    assert (detector.scores(far) > detector.hard_threshold).all()


def test_the_detector_from_few_images_scores_as_the_full_covariance_eigendecomposition_does():
    """The SVD path (fewer images than features) is the same Ledoit-Wolf whitening, written directly."""
    rng = np.random.default_rng(3)
    features, true = rng.normal(size=(30, 64)) + rng.normal(size=64), np.arange(30) % 2
    detector = fit_ood(features, true, 2)
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    means = np.stack([unit[true == c].mean(axis=0) for c in range(2)])
    centred = unit - means[true]
    sample = centred.T @ centred / 30
    mu = np.trace(sample) / 64
    spread = sum(((np.outer(x, x) - sample) ** 2).sum() for x in centred) / 30 ** 2
    shrinkage = min(1.0, spread / ((sample - mu * np.eye(64)) ** 2).sum())
    precision = np.linalg.inv(shrinkage * mu * np.eye(64) + (1 - shrinkage) * sample)
    probe = rng.normal(size=(5, 64))
    probe_unit = probe / np.linalg.norm(probe, axis=1, keepdims=True)
    expected = np.min([np.einsum("nf,fg,ng->n", probe_unit - m, precision, probe_unit - m) for m in means], axis=0) / 64
    np.testing.assert_allclose(detector.scores(probe), expected, rtol=1e-4)


def test_out_of_fold_scores_put_the_threshold_where_five_percent_of_new_images_of_the_same_source_score_above():
    rng = np.random.default_rng(4)
    centres = rng.normal(0, 1, (2, 200))
    true = np.arange(160) % 2
    training = centres[true] + rng.normal(size=(160, 200))
    new = centres[np.arange(4000) % 2] + rng.normal(size=(4000, 200))
    detector = fit_ood(training, true, 2)
    detector = detector.with_threshold(out_of_fold_scores(training, true, 2, seed=0), "out-of-fold training")
    assert 0.01 < (detector.scores(new) > detector.threshold).mean() < 0.07  # in-sample scores give 0.09
