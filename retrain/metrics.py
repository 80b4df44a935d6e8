"""Classification metrics, implemented once: retrain, evaluate and the scripts all use these.

Plain NumPy so they are easy to check by hand. ROC AUC is the Mann-Whitney statistic
with tied scores counted as half, which is what the ISIC challenge's scikit-learn
scoring computes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def confusion_matrix(true: np.ndarray, predicted: np.ndarray, class_count: int) -> np.ndarray:
    """Rows are the true class, columns the predicted class."""
    matrix = np.zeros((class_count, class_count), dtype=np.int64)
    np.add.at(matrix, (np.asarray(true, int), np.asarray(predicted, int)), 1)
    return matrix


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator / denominator) if denominator else float("nan")


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Probability that a random positive scores above a random negative (ties count half).

    NaN when either class is absent, since the AUC is undefined then."""
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    # Average rank within each run of tied scores.
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    ends = np.r_[starts[1:], len(scores)]
    ranks = np.empty(len(scores), dtype=np.float64)
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    rank_sum = ranks[positive].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def roc_curve(scores: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """False positive rates, true positive rates and the thresholds (score >= t) giving them,
    from the strictest threshold (nothing positive) to the loosest (everything positive).
    One sort: the counts at or above each distinct score are running sums."""
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    order = np.argsort(-scores, kind="stable")
    ranked, hits = scores[order], positive[order]
    last = np.flatnonzero(np.r_[ranked[1:] != ranked[:-1], True])  # the last of each run of one score
    n_pos, n_neg = max(int(positive.sum()), 1), max(int((~positive).sum()), 1)
    tpr = np.r_[0, np.cumsum(hits)[last]] / n_pos
    fpr = np.r_[0, np.cumsum(~hits)[last]] / n_neg
    return fpr, tpr, np.r_[np.inf, ranked[last]]


def thinned_curve(x: np.ndarray, y: np.ndarray, cells: int = 250) -> tuple[np.ndarray, np.ndarray]:
    """At most 4 * `cells` points of a curve rising in x and y (a ROC curve), for drawing: of each
    run of points within one cell of a `cells` x `cells` grid, the first and the last, so no
    corner moves by more than a cell (0.4 % of the axis at 250) and 40,000 images draw as fast as
    400."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if len(x) <= 4 * cells:
        return x, y
    cell = np.minimum((x * cells).astype(np.int64), cells - 1) * cells + np.minimum((y * cells).astype(np.int64),
                                                                                    cells - 1)
    changes = cell[1:] != cell[:-1]
    keep = np.r_[True, changes] | np.r_[changes, True]
    return x[keep], y[keep]


def specificity_at_sensitivity(scores: np.ndarray, positive: np.ndarray, sensitivity: float = 0.95) -> float:
    """The best specificity of any threshold whose sensitivity is at least the target."""
    positive = np.asarray(positive, dtype=bool)
    if not positive.any() or positive.all():
        return float("nan")
    fpr, tpr, _ = roc_curve(scores, positive)
    reaching = tpr >= sensitivity - 1e-12
    return float(1.0 - fpr[reaching].min())


@dataclass
class ClassScores:
    precision: float
    recall: float
    f1: float
    support: int


def per_class_scores(matrix: np.ndarray) -> list[ClassScores]:
    scores = []
    for c in range(len(matrix)):
        tp = matrix[c, c]
        precision = _ratio(tp, matrix[:, c].sum())
        recall = _ratio(tp, matrix[c].sum())
        f1 = _ratio(2 * precision * recall, precision + recall) if tp else (0.0 if matrix[c].sum() else float("nan"))
        scores.append(ClassScores(precision, recall, f1, int(matrix[c].sum())))
    return scores


def evaluate_probabilities(probabilities: np.ndarray, true: np.ndarray, labels: list[str]) -> dict:
    """Everything evaluate prints, as a JSON-ready dict.

    Keys: n, accuracy, balanced_accuracy, auc (label -> one-vs-rest AUC), confusion_matrix,
    per_class (label -> precision/recall/f1/support) and, for two classes, `binary` with
    sensitivity/specificity at 0.5 and specificity at 95 % sensitivity for the second
    label (in retrain's sorted order) as the positive class, unless a label named
    'other' makes the other one the positive.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    true = np.asarray(true, dtype=int)
    predicted = np.argmax(probabilities, axis=1)
    matrix = confusion_matrix(true, predicted, len(labels))
    classes = per_class_scores(matrix)
    recalls = [c.recall for c in classes if c.support]
    result = {
        "n": int(len(true)),
        "accuracy": _ratio((predicted == true).sum(), len(true)),
        "balanced_accuracy": float(np.mean(recalls)) if recalls else float("nan"),
        "auc": {label: roc_auc(probabilities[:, i], true == i) for i, label in enumerate(labels)},
        "confusion_matrix": matrix.tolist(),
        "per_class": {label: vars(scores) for label, scores in zip(labels, classes)},
    }
    if len(labels) == 2:
        positive_index = positive_class_index(labels)
        scores, is_positive = probabilities[:, positive_index], true == positive_index
        called = scores >= 0.5
        result["binary"] = {
            "positive_label": labels[positive_index],
            "sensitivity": _ratio((called & is_positive).sum(), is_positive.sum()),
            "specificity": _ratio((~called & ~is_positive).sum(), (~is_positive).sum()),
            "specificity_at_95_sensitivity": specificity_at_sensitivity(scores, is_positive, 0.95),
        }
    return result


def auc_classes(labels: list[str]) -> list[int]:
    """The classes shown with an AUC: for two classes, the positive one (the other's AUC is the
    same, mirrored); otherwise each, one against the rest."""
    return [positive_class_index(labels)] if len(labels) == 2 else list(range(len(labels)))


def auc_line(name: str, probabilities: np.ndarray, true: np.ndarray, labels: list[str], when: str = "") -> str:
    """ROC AUC beside accuracy, which misleads on imbalanced sets: one figure for two
    classes, one-vs-rest per class and their mean otherwise. `when`: "before calibration" or
    "after calibration", since one temperature reorders one class's scores across images when
    there are more than two classes, and so moves their one-vs-rest AUCs."""
    when = f", {when}" if when else ""
    if len(labels) == 2:
        positive = auc_classes(labels)[0]
        auc = roc_auc(probabilities[:, positive], true == positive)
        why = "" if np.isfinite(auc) else ": its images are all of one class, and an AUC needs both"
        return f"{name} AUC = {auc:.3f} ({labels[positive]} vs {labels[1 - positive]}, N={len(true)}{when}{why})"
    aucs = [roc_auc(probabilities[:, i], true == i) for i in range(len(labels))]
    parts = ", ".join(f"{label} {auc:.3f}" for label, auc in zip(labels, aucs))
    defined = [auc for auc in aucs if np.isfinite(auc)]  # a class absent from the set has no AUC
    mean = float(np.mean(defined)) if defined else float("nan")
    return f"{name} AUC (one-vs-rest) = {parts}; mean {mean:.3f} (N={len(true)}{when})"


def positive_class_index(labels: list[str]) -> int:
    """For a two-class model: the class that is not 'other' (ISIC's 'melanoma vs other'), else the second."""
    if "other" in labels:
        return 1 - labels.index("other")
    return 1


def format_report(result: dict, labels: list[str]) -> str:
    """The human-readable table evaluate prints."""
    lines = [
        f"N = {result['n']}",
        f"Accuracy = {100 * result['accuracy']:.1f}%",
        f"Balanced accuracy = {100 * result['balanced_accuracy']:.1f}%",
        "",
        f"{'class':<24} {'precision':>9} {'recall':>7} {'F1':>6} {'AUC':>6} {'N':>5}",
    ]
    for label in labels:
        c = result["per_class"][label]
        lines.append(
            f"{label:<24} {c['precision']:>9.3f} {c['recall']:>7.3f} {c['f1']:>6.3f} {result['auc'][label]:>6.3f} {c['support']:>5}"
        )
    lines += ["", "Confusion matrix (rows: true, columns: predicted)"]
    width = max(8, *(len(label) for label in labels))
    lines.append(" " * width + " " + " ".join(f"{label[:width]:>{width}}" for label in labels))
    for label, row in zip(labels, result["confusion_matrix"]):
        lines.append(f"{label[:width]:>{width}} " + " ".join(f"{v:>{width}}" for v in row))
    if "binary" in result:
        b = result["binary"]
        lines += [
            "",
            f"Positive class: {b['positive_label']}",
            f"Sensitivity at 0.5 = {b['sensitivity']:.3f}, specificity at 0.5 = {b['specificity']:.3f}",
            f"Specificity at 95% sensitivity = {b['specificity_at_95_sensitivity']:.3f}",
        ]
    return "\n".join(lines)


def percent(value: float | None) -> str:
    """A proportion as printed everywhere: "96.7%", or "n/a" where it is undefined."""
    return "n/a" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{100 * value:.1f}%"


def wilson_interval(successes: int, count: int, z: float = 1.96) -> tuple[float, float]:
    """The 95 % Wilson score interval of a proportion: unlike the normal approximation it
    stays inside [0, 1] and is honest for the small counts of a validation set."""
    if count == 0:
        return float("nan"), float("nan")
    p = successes / count
    centre = (p + z * z / (2 * count)) / (1 + z * z / count)
    half = z * np.sqrt(p * (1 - p) / count + z * z / (4 * count * count)) / (1 + z * z / count)
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


@dataclass(frozen=True)
class Rate:
    """A proportion with its count and 95 % Wilson interval."""

    value: float
    successes: int
    count: int
    low: float
    high: float

    @classmethod
    def of(cls, successes: int, count: int) -> "Rate":
        return cls(_ratio(successes, count), int(successes), int(count), *wilson_interval(successes, count))

    def as_dict(self) -> dict:
        return {"value": self.value, "successes": self.successes, "count": self.count,
                "interval": [self.low, self.high]}

    def __str__(self) -> str:
        if not self.count:
            return "n/a (none)"
        return f"{100 * self.value:.1f}% ({self.successes}/{self.count}, 95% CI {100 * self.low:.0f}-{100 * self.high:.0f}%)"


def sensitivity_specificity(scores: np.ndarray, positive: np.ndarray, threshold: float) -> tuple[Rate, Rate]:
    """Sensitivity and specificity of "score >= threshold means positive"."""
    scores, positive = np.asarray(scores, np.float64), np.asarray(positive, bool)
    over = scores >= threshold
    return Rate.of(int((over & positive).sum()), int(positive.sum())), Rate.of(int((~over & ~positive).sum()),
                                                                               int((~positive).sum()))


def expected_calibration_error(probabilities: np.ndarray, true: np.ndarray, bins: int = 15) -> float:
    """Top-label ECE (Guo et al. 2017): the gap between confidence and accuracy, averaged over
    equal-width confidence bins weighted by their share of images."""
    probabilities = np.asarray(probabilities, np.float64)
    if not len(probabilities):
        return float("nan")
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == np.asarray(true)
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    gaps = [abs(confidence[which == b].mean() - correct[which == b].mean()) * (which == b).mean()
            for b in range(bins) if (which == b).any()]
    return float(np.sum(gaps))


def reliability_bins(probabilities: np.ndarray, true: np.ndarray, bins: int = 10) -> list[tuple[float, float, int]]:
    """(mean confidence, accuracy, count) per non-empty confidence bin, for a reliability diagram."""
    probabilities = np.asarray(probabilities, np.float64)
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == np.asarray(true)
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    return [(float(confidence[which == b].mean()), float(correct[which == b].mean()), int((which == b).sum()))
            for b in range(bins) if (which == b).any()]


def negative_log_likelihood(probabilities: np.ndarray, true: np.ndarray) -> float:
    probabilities = np.asarray(probabilities, np.float64)
    return float(-np.mean(np.log(np.clip(probabilities[np.arange(len(true)), np.asarray(true)], 1e-12, 1.0))))


def auc_interval(scores: np.ndarray, positive: np.ndarray, z: float = 1.96) -> tuple[float, float]:
    """An approximate 95 % interval of the ROC AUC (Hanley & McNeil 1982), from the AUC and the
    two class counts alone: cheap enough for every class and subgroup."""
    positive = np.asarray(positive, bool)
    auc, n_pos, n_neg = roc_auc(scores, positive), int(positive.sum()), int((~positive).sum())
    if np.isnan(auc):
        return float("nan"), float("nan")
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    variance = (auc * (1 - auc) + (n_pos - 1) * (q1 - auc * auc) + (n_neg - 1) * (q2 - auc * auc)) / (n_pos * n_neg)
    half = z * np.sqrt(max(variance, 0.0))
    return float(max(0.0, auc - half)), float(min(1.0, auc + half))


def calibration_noise_floor(probabilities: np.ndarray, bins: int = 15, draws: int = 100, seed: int = 0) -> float:
    """The ECE a perfectly calibrated model would show on this many images from sampling alone:
    labels drawn from its own probabilities. On 150 images it is often 0.05 to 0.08, so an ECE
    near it says the model is as calibrated as the set can tell."""
    probabilities = np.asarray(probabilities, np.float64)
    if not len(probabilities):
        return float("nan")
    rng = np.random.default_rng(seed)
    cumulative = np.cumsum(probabilities / probabilities.sum(axis=1, keepdims=True), axis=1)
    eces = []
    for _ in range(draws):
        drawn = (rng.random((len(probabilities), 1)) > cumulative).sum(axis=1)
        eces.append(expected_calibration_error(probabilities, np.minimum(drawn, probabilities.shape[1] - 1), bins))
    return float(np.mean(eces))
