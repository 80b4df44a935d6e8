"""An out-of-distribution score: how unlike the training images an image's features are.

The score is the Mahalanobis distance (Lee et al. 2018) of the backbone's pooled features,
scaled to unit length, to the nearest training class mean, under the classes' shared
covariance, divided by the feature count so that typical training images score about 1. A
holiday photo, a screenshot or a blank frame lands far from every class even when the
softmax is confident about one. Scaling to unit length matters: a blank frame's features
are short and would otherwise sit near the class means (benchmarks/ood_isic.py measures
this, and the energy and softmax scores, which fail here).

Two thresholds, because the score sees two different things (benchmarks/ood_small_trees.py):
- above `threshold`, the image is *unlike the training images*: 5 % of held-out images of the
  training set's own source score above it, and lesions from another camera or collection
  far more often, though the model is only a little less accurate on them. A note, not an alarm.
- above `hard_threshold` (HARD_FACTOR times the first), the image is *not of the kind the model
  was made for*: blank frames, noise, text and photos of other things score there on trees of
  80 to 2,000 images, and real lesions almost never.

The covariance is shrunk towards a multiple of the identity (Ledoit & Wolf 2004): with more
features than images per class the sample covariance cannot be inverted. The exported graph
computes it as `min_c |u P - m_c|^2 / F`, where u is f scaled to unit length and `P P^T`
the inverse covariance, with one matrix product: every format, TFLite included, runs it with builtin operations.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from retrain.decisions.out_of_fold import FOLDS, fold_of

FLAGGED_SHARE = 0.05  # of held-out in-distribution images: where the (soft) threshold is put
HARD_FACTOR = 1.75  # the hard threshold, as a multiple of the soft one; see the module docstring
OUTPUT_NAME = "ood_score"  # the exported output that carries the score, in every format
VALIDATION_IMAGES = 40  # fewer, and the threshold is chosen on out-of-fold training images
BLOCK_ROWS = 4096  # rows taken at once in float64: tens of MB whatever the set's size


@dataclass(frozen=True)
class OodThresholds:
    """What a model card's out-of-distribution entry decides: a note above `unlike`, a
    warning above `not_of_kind`."""

    unlike: float
    not_of_kind: float

    def level(self, score: float) -> str:
        """ "none", "unlike_training" or "not_of_kind": the words label_image prints and writes in its JSON."""
        if score > self.not_of_kind:
            return "not_of_kind"
        return "unlike_training" if score > self.unlike else "none"


def _finite(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


@dataclass(frozen=True)
class OodRecord:
    """A model card's out-of-distribution entry: the output that carries the score, and its
    thresholds; or, for int8, why the score there is unusable."""

    output_name: str
    threshold: float | None = None  # None: no validation images to choose it on
    hard_threshold: float | None = None
    flagged_share: float | None = None
    chosen_on: str = ""
    count: int = 0
    method: str = "mahalanobis of unit-length features"
    unavailable: str | None = None

    @property
    def thresholds(self) -> OodThresholds | None:
        """None where the card stores none (int8, no validation images). Cards written before
        there were two thresholds store one, chosen as the soft one is now: their hard threshold
        follows by the same rule."""
        threshold = _finite(self.threshold)
        if threshold is None or self.unavailable:
            return None
        hard = _finite(self.hard_threshold)
        return OodThresholds(threshold, HARD_FACTOR * threshold if hard is None else hard)

    def to_json(self) -> dict:
        if self.unavailable:
            return {"output_name": self.output_name, "unavailable": self.unavailable}
        return {"method": self.method, "output_name": self.output_name, "threshold": self.threshold,
                "hard_threshold": self.hard_threshold, "flagged_share": self.flagged_share,
                "chosen_on": self.chosen_on, "count": self.count}

    @classmethod
    def from_json(cls, entry: dict) -> "OodRecord":
        known = {name: entry[name] for name in cls.__dataclass_fields__ if name in entry}
        return cls(**{"output_name": OUTPUT_NAME, **known})


@dataclass(frozen=True)
class OodDetector:
    projection: np.ndarray  # [F, F]: P with P P^T the inverse of the shrunk covariance
    means: np.ndarray  # [classes, F]: the training class means, projected
    threshold: float = float("inf")  # scores above it: unlike the training images
    flagged_share: float | None = None  # of the images the threshold was chosen on
    chosen_on: str = ""
    count: int = 0

    @property
    def hard_threshold(self) -> float:
        """Scores above it: not of the kind the model was made for."""
        return HARD_FACTOR * self.threshold

    def scores(self, features: np.ndarray) -> np.ndarray:
        scores = np.zeros(len(features), np.float32)
        for start, block in _unit_blocks(np.asarray(features)):
            projected = block @ self.projection
            nearest = np.min([((projected - mean) ** 2).sum(axis=1) for mean in self.means], axis=0)
            scores[start:start + len(block)] = nearest / self.projection.shape[0]
        return scores

    def record(self) -> OodRecord:
        return OodRecord(OUTPUT_NAME, self.threshold, self.hard_threshold, self.flagged_share, self.chosen_on,
                         self.count)

    def with_threshold(self, held_out_scores: np.ndarray, chosen_on: str, share: float = FLAGGED_SHARE) -> "OodDetector":
        """The threshold that flags `share` of these scores of held-out, in-distribution images."""
        scores = np.asarray(held_out_scores)
        threshold = float(np.quantile(scores, 1 - share)) if len(scores) else float("inf")
        flagged = float((scores > threshold).mean()) if len(scores) else None
        return dataclasses.replace(self, threshold=threshold, flagged_share=flagged, chosen_on=chosen_on,
                                   count=len(scores))


def fit_ood(features: np.ndarray, true: np.ndarray, class_count: int) -> OodDetector:
    """Class means and the shrunk shared covariance of the training features, taken in
    blocks of rows: no float64 copy of the whole matrix is ever made."""
    features, true = np.asarray(features), np.asarray(true)
    sums = np.zeros((class_count, features.shape[1]))
    for start, block in _unit_blocks(features):
        labels = true[start:start + len(block)]
        sums += (labels[None, :] == np.arange(class_count)[:, None]).astype(np.float64) @ block
    counts = np.bincount(true, minlength=class_count)[:, None]
    means = np.where(counts > 0, sums / np.maximum(counts, 1), sums.sum(axis=0) / max(len(true), 1))

    def centred():
        for start, block in _unit_blocks(features):
            yield block - means[true[start:start + len(block)]]

    projection = _whitening(centred, len(true), features.shape[1])
    return OodDetector(projection.astype(np.float32), (means @ projection).astype(np.float32))


def _unit_blocks(features: np.ndarray):
    """(first row, the rows at unit length in float64), BLOCK_ROWS at a time."""
    for start in range(0, len(features), BLOCK_ROWS):
        yield start, unit_length(features[start:start + BLOCK_ROWS])


def fit_with_threshold(training_x: np.ndarray, training_y: np.ndarray, validation_x: np.ndarray, class_count: int,
                       seed: int | None) -> OodDetector | None:
    """The detector fitted on the training features; its threshold flags FLAGGED_SHARE of the
    validation images, or of out-of-fold training images where there are too few validation
    images for that quantile to mean anything. None with too few training images to fold."""
    if len(training_y) < 2 * FOLDS:
        return None
    detector = fit_ood(training_x, training_y, class_count)
    if len(validation_x) >= VALIDATION_IMAGES:
        return detector.with_threshold(detector.scores(validation_x), "validation")
    return detector.with_threshold(out_of_fold_scores(training_x, training_y, class_count, seed), "out-of-fold training")


def out_of_fold_scores(features: np.ndarray, true: np.ndarray, class_count: int, seed: int | None) -> np.ndarray:
    """Each training image's score under a detector fitted on the other folds (stratified,
    shuffled): what held-out images of the same source score, where validation is too small."""
    true = np.asarray(true)
    folds = fold_of(true, seed)
    scores = np.zeros(len(true), np.float32)
    for fold in range(FOLDS):
        held = folds == fold
        scores[held] = fit_ood(features[~held], true[~held], class_count).scores(features[held])
    return scores


def unit_length(features: np.ndarray) -> np.ndarray:
    """As tf.math.l2_normalize does it in the exported graph."""
    features = np.asarray(features, np.float64)
    return features / np.sqrt(np.maximum((features ** 2).sum(axis=1, keepdims=True), 1e-12))


def _whitening(centred, n: int, f: int) -> np.ndarray:
    """A P with P P^T the inverse of the Ledoit-Wolf covariance: the sample covariance S
    pulled towards mu * I by the shrinkage that minimises the expected squared error
    (`centred()` yields the centred rows in blocks). With at least as many images as
    features, S is summed block by block and P is the inverse Cholesky factor's transpose
    (a third of an eigendecomposition's cost; only P P^T enters the score). With fewer, P is
    the symmetric one from the SVD of the rows: a few hundred images cost a few hundred
    directions, and off them every eigenvalue is the shrunk mu."""
    if n >= f:
        gram, fourth_powers = _gram(centred, f)
        sample = gram / n
        variance_sum, squared_sum = float(np.trace(sample)), float((sample ** 2).sum())
    else:
        rows = np.concatenate(list(centred()))  # fewer rows than features: smaller than F x F
        fourth_powers = _fourth_powers(rows)
        directions, variances = _principal_directions(rows)
        variance_sum, squared_sum = float(variances.sum()), float((variances ** 2).sum())
    mu = variance_sum / f
    target_distance = squared_sum - 2 * mu * variance_sum + mu ** 2 * f  # |S - mu I|_F^2
    # sum over rows of |x x^T - S|_F^2 / n^2 without n outer products: |x x^T|^2 = |x|^4, and
    # the rows' x S x^T sum to n |S|^2 (as sum x x^T = n S), |S|^2 the sum of squared eigenvalues
    spread = (fourth_powers - n * squared_sum) / n ** 2
    shrinkage = min(1.0, spread / target_distance) if target_distance > 0 else 1.0
    floor = max(shrinkage * mu, 1e-12)
    if n >= f:
        return np.linalg.inv(np.linalg.cholesky(floor * np.eye(f) + (1 - shrinkage) * sample)).T
    shrunk = np.maximum(floor + (1 - shrinkage) * variances, 1e-12)
    return np.eye(f) / np.sqrt(floor) + (directions.T * (1 / np.sqrt(shrunk) - 1 / np.sqrt(floor))) @ directions


def _gram(centred, f: int) -> tuple[np.ndarray, float]:
    """The rows' Gram matrix and the sum of their squared squared norms, in one pass."""
    gram, fourth_powers = np.zeros((f, f)), 0.0
    for block in centred():
        gram += block.T @ block
        fourth_powers += _fourth_powers(block)
    return gram, fourth_powers


def _fourth_powers(rows: np.ndarray) -> float:
    return float(((rows ** 2).sum(axis=1) ** 2).sum())


def _principal_directions(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rows' principal directions (as rows) and the sample variance along each, by an
    eigendecomposition of the n x n Gram matrix (fewer rows than features)."""
    n = len(rows)
    variances, vectors = np.linalg.eigh(rows @ rows.T / n)
    kept = variances > 1e-12 * max(variances.max(), 1e-300)
    directions = (vectors[:, kept].T @ rows) / np.sqrt(n * variances[kept])[:, None]
    return directions, variances[kept]
