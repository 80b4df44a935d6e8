import math
import warnings

import numpy as np
import pytest

from retrain.metrics import (
    confusion_matrix,
    evaluate_probabilities,
    format_report,
    per_class_scores,
    roc_auc,
    roc_curve,
    specificity_at_sensitivity,
    thinned_curve,
)


def test_auc_of_a_hand_counted_case():
    # Positives 0.9, 0.4; negatives 0.8, 0.3, 0.1. Pairs won: (0.9 vs all 3) + (0.4 vs 0.3, 0.1) = 5 of 6.
    scores = [0.9, 0.8, 0.4, 0.3, 0.1]
    positive = [1, 0, 1, 0, 0]
    assert roc_auc(scores, positive) == pytest.approx(5 / 6)


def test_auc_counts_tied_scores_as_half():
    # Positive 0.5 ties negative 0.5 (half), beats 0.2 (one); positive 0.7 beats both: (0.5 + 1 + 2) / 4.
    assert roc_auc([0.5, 0.7, 0.5, 0.2], [1, 1, 0, 0]) == pytest.approx(3.5 / 4)
    assert roc_auc([0.3, 0.3, 0.3, 0.3], [1, 0, 1, 0]) == pytest.approx(0.5)


def test_auc_is_one_for_perfect_ranking_zero_for_inverted_and_nan_with_one_class():
    assert roc_auc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 1.0
    assert roc_auc([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1]) == 0.0
    assert math.isnan(roc_auc([0.1, 0.2], [1, 1]))


def test_auc_matches_scikit_learn_on_random_scores_with_ties():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    scores = np.round(rng.uniform(size=300), 1)  # many ties
    positive = rng.uniform(size=300) < 0.2
    assert roc_auc(scores, positive) == pytest.approx(roc_auc_score(positive, scores))


def test_roc_curve_runs_from_nothing_called_to_everything_called():
    fpr, tpr, _ = roc_curve([0.9, 0.8, 0.4, 0.3], [1, 0, 1, 0])
    assert (fpr[0], tpr[0]) == (0, 0) and (fpr[-1], tpr[-1]) == (1, 1)
    assert list(tpr) == [0, 0.5, 0.5, 1, 1] and list(fpr) == [0, 0, 0.5, 0.5, 1]


def _roc_curve_counted(scores, positive):
    """The curve as it was computed before sorting: every threshold counts every score."""
    scores, positive = np.asarray(scores, np.float64), np.asarray(positive, bool)
    thresholds = np.r_[np.inf, np.unique(scores)[::-1]]
    n_pos, n_neg = max(int(positive.sum()), 1), max(int((~positive).sum()), 1)
    return (np.array([(scores[~positive] >= t).sum() / n_neg for t in thresholds]),
            np.array([(scores[positive] >= t).sum() / n_pos for t in thresholds]), thresholds)


@pytest.mark.parametrize("size, decimals, share", [(2000, 2, 0.3), (500, 1, 0.1), (50, 6, 0.5), (30, 1, 0.0)])
def test_the_sorted_roc_curve_is_the_counted_one_exactly(size, decimals, share):
    rng = np.random.default_rng(size)
    scores, positive = np.round(rng.uniform(size=size), decimals), rng.uniform(size=size) < share
    for got, expected in zip(roc_curve(scores, positive), _roc_curve_counted(scores, positive)):
        assert np.array_equal(got, expected)


def test_the_sorted_roc_curve_matches_scikit_learn_on_ties():
    from sklearn.metrics import roc_curve as sklearn_roc_curve

    rng = np.random.default_rng(3)
    scores, positive = np.round(rng.uniform(size=3000), 2), rng.uniform(size=3000) < 0.2
    fpr, tpr, thresholds = roc_curve(scores, positive)
    expected_fpr, expected_tpr, expected_thresholds = sklearn_roc_curve(positive, scores, drop_intermediate=False)
    assert np.allclose(fpr, expected_fpr) and np.allclose(tpr, expected_tpr)
    assert np.array_equal(thresholds[1:], expected_thresholds[1:])


def test_the_auc_is_the_mann_whitney_count_exactly_on_many_ties():
    rng = np.random.default_rng(4)
    scores, positive = np.round(rng.uniform(size=4000), 2), rng.uniform(size=4000) < 0.3
    pos, neg = scores[positive], scores[~positive]
    won = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    assert roc_auc(scores, positive) == pytest.approx(won / (len(pos) * len(neg)), rel=1e-12)


def test_a_long_curve_is_drawn_from_at_most_a_thousand_points_that_keep_its_shape():
    rng = np.random.default_rng(5)
    positive = rng.uniform(size=40000) < 0.3
    scores = rng.normal(size=40000) + positive
    fpr, tpr, _ = roc_curve(scores, positive)
    x, y = thinned_curve(fpr, tpr)
    assert len(x) <= 1000 < len(fpr)
    assert (x[0], y[0], x[-1], y[-1]) == (0, 0, 1, 1)
    assert np.all(np.diff(x) >= 0) and np.all(np.diff(y) >= 0)
    # every dropped point lies within one cell (1/250) of the drawn line
    assert np.max(np.abs(np.interp(fpr, x, y) - tpr)) <= 2 / 250 + 1e-12
    short_x, short_y = thinned_curve(fpr[:100], tpr[:100])
    assert np.array_equal(short_x, fpr[:100]) and np.array_equal(short_y, tpr[:100])


def test_specificity_at_95_percent_sensitivity():
    # Positives: 18 at 0.9, one at 0.45, one at 0.2. Negatives: 10 at 0.5, 10 at 0.1.
    # 95 % sensitivity needs 19 of 20 positives: threshold 0.45, which also calls the ten
    # 0.5 negatives, so specificity 0.5.
    scores = [0.9] * 18 + [0.45, 0.2] + [0.5] * 10 + [0.1] * 10
    positive = [1] * 20 + [0] * 20
    assert specificity_at_sensitivity(scores, positive, 0.95) == pytest.approx(0.5)
    # 90 % sensitivity is reached at 0.9, before any negative: specificity 1.
    assert specificity_at_sensitivity(scores, positive, 0.90) == pytest.approx(1.0)
    # With the last positive below every negative, 100 % sensitivity costs all specificity.
    scores[19] = 0.05
    assert specificity_at_sensitivity(scores, positive, 1.0) == pytest.approx(0.0)


def test_confusion_matrix_and_per_class_scores_by_hand():
    true = [0, 0, 0, 1, 1, 2]
    predicted = [0, 0, 1, 1, 2, 2]
    matrix = confusion_matrix(np.array(true), np.array(predicted), 3)
    assert matrix.tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    first, second, third = per_class_scores(matrix)
    assert (first.precision, first.recall) == (1.0, pytest.approx(2 / 3))
    assert first.f1 == pytest.approx(0.8)
    assert (second.precision, second.recall, second.f1) == (0.5, 0.5, 0.5)
    assert (third.precision, third.recall) == (0.5, 1.0)


def test_evaluation_dict_has_the_documented_keys_and_binary_figures():
    probabilities = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.45, 0.55], [0.2, 0.8]])
    true = np.array([0, 0, 1, 0, 1])
    result = evaluate_probabilities(probabilities, true, ["melanoma", "other"])
    assert set(result) >= {"n", "accuracy", "balanced_accuracy", "auc", "confusion_matrix", "per_class", "binary"}
    assert result["n"] == 5 and result["accuracy"] == pytest.approx(0.8)
    # 'other' is never the positive class: melanoma is, scored by column 0.
    assert result["binary"]["positive_label"] == "melanoma"
    assert result["binary"]["sensitivity"] == pytest.approx(2 / 3)  # 0.9, 0.6 >= 0.5; 0.45 is not
    assert result["binary"]["specificity"] == pytest.approx(1.0)
    assert result["balanced_accuracy"] == pytest.approx((2 / 3 + 1) / 2)
    assert result["auc"]["melanoma"] == pytest.approx(1.0)
    assert "Specificity at 95% sensitivity" in format_report(result, ["melanoma", "other"])


def test_a_mean_auc_over_classes_missing_from_the_set_is_nan_without_a_numpy_warning():
    from retrain.metrics import auc_line

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        line = auc_line("Final test", np.full((3, 3), 1 / 3), np.zeros(3, int), ["a", "b", "c"])
    assert line.endswith("mean nan (N=3)")


def test_a_two_class_auc_on_one_class_says_why_it_is_nan():
    from retrain.metrics import auc_line

    line = auc_line("Final test", np.array([[0.2, 0.8], [0.6, 0.4]]), np.array([1, 1]), ["benign", "malignant"])
    assert line.startswith("Final test AUC = nan") and "all of one class" in line
    assert "one class" not in auc_line("Final test", np.array([[0.2, 0.8], [0.6, 0.4]]), np.array([1, 0]),
                                     ["benign", "malignant"])
