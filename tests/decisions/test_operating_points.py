"""Operating points on generated numbers: each threshold reaches what it was chosen for, and a
mistyped or ambiguous operating point is one clear line."""

import numpy as np
import pytest

from retrain.decisions.operating_points import (
    choose_operating_points,
    distinct_specs,
    parse_operating_point,
    resolve_label,
)
from retrain.errors import UserError
from retrain.metrics import sensitivity_specificity
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


def test_parse_operating_point_of_none_is_a_user_error_naming_the_format():
    with pytest.raises(UserError, match=r"DecisionConfig.operating_points None: expected \[CLASS:\]sensitivity=S"):
        parse_operating_point(None)
