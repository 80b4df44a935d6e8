"""An out-of-distribution score: how unlike the training images an image's features are.

The score is the Mahalanobis distance (Lee et al. 2018) of the backbone's pooled features,
scaled to unit length, to the nearest training class mean, under the classes' shared
covariance, divided by the feature count so that typical training images score about 1. A
holiday photo, a screenshot or a blank frame lands far from every class even when the
softmax is confident about one. Scaling to unit length matters: a blank frame's features
are short and would otherwise sit near the class means (benchmarks/ood_isic.py measures
this, and the energy and softmax scores, which fail here).

The covariance is shrunk towards a multiple of the identity (Ledoit & Wolf 2004): with more
features than images per class the sample covariance cannot be inverted. The exported graph
computes it as `min_c |u P - m_c|^2 / F`, where u is f scaled to unit length and `P P^T`
the inverse covariance, with one matrix product: every format, TFLite included, runs it with builtin operations.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

FLAGGED_SHARE = 0.05  # of validation images: where the threshold is put
OUTPUT_NAME = "ood_score"  # the exported output that carries the score, in every format


@dataclass(frozen=True)
class OodDetector:
    projection: np.ndarray  # [F, F]: P with P P^T the inverse of the shrunk covariance
    means: np.ndarray  # [classes, F]: the training class means, projected
    threshold: float = float("inf")  # scores above it are flagged
    flagged_share: float | None = None  # of the images the threshold was chosen on
    chosen_on: str = ""
    count: int = 0

    def scores(self, features: np.ndarray) -> np.ndarray:
        projected = unit_length(features) @ self.projection
        distances = ((projected[:, None, :] - self.means[None]) ** 2).sum(axis=2)
        return (distances.min(axis=1) / self.projection.shape[0]).astype(np.float32)

    def card(self) -> dict:
        return {"method": "mahalanobis of unit-length features", "output_name": OUTPUT_NAME,
                "threshold": self.threshold, "flagged_share": self.flagged_share, "chosen_on": self.chosen_on,
                "count": self.count}

    def with_threshold(self, features: np.ndarray, chosen_on: str, share: float = FLAGGED_SHARE) -> "OodDetector":
        """The threshold that flags `share` of these (held-out, in-distribution) images."""
        scores = self.scores(features)
        threshold = float(np.quantile(scores, 1 - share)) if len(scores) else float("inf")
        flagged = float((scores > threshold).mean()) if len(scores) else None
        return dataclasses.replace(self, threshold=threshold, flagged_share=flagged, chosen_on=chosen_on,
                                   count=len(scores))


def fit_ood(features: np.ndarray, true: np.ndarray, class_count: int) -> OodDetector:
    """Class means and the shrunk shared covariance of the training features."""
    features = unit_length(features)
    true = np.asarray(true)
    means = np.stack([features[true == c].mean(axis=0) if (true == c).any() else features.mean(axis=0)
                      for c in range(class_count)])
    centred = features - means[true]
    covariance = _shrunk_covariance(centred)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    projection = eigenvectors / np.sqrt(np.maximum(eigenvalues, 1e-12))
    return OodDetector(projection.astype(np.float32), (means @ projection).astype(np.float32))


def unit_length(features: np.ndarray) -> np.ndarray:
    """As tf.math.l2_normalize does it in the exported graph."""
    features = np.asarray(features, np.float64)
    return features / np.sqrt(np.maximum((features ** 2).sum(axis=1, keepdims=True), 1e-12))


def _shrunk_covariance(centred: np.ndarray) -> np.ndarray:
    """Ledoit-Wolf: the sample covariance pulled towards mu * I by the shrinkage that minimises
    the expected squared error."""
    n, f = centred.shape
    sample = centred.T @ centred / n
    mu = np.trace(sample) / f
    target_distance = ((sample - mu * np.eye(f)) ** 2).sum()
    shrinkage = min(1.0, _spread(centred, sample) / target_distance) if target_distance > 0 else 1.0
    return shrinkage * mu * np.eye(f) + (1 - shrinkage) * sample


def _spread(centred: np.ndarray, sample: np.ndarray) -> float:
    """sum over rows of |x x^T - S|_F^2 / n^2, without forming n outer products:
    |x x^T|^2 = |x|^4 and <x x^T, S> = x S x^T."""
    n = len(centred)
    squared_norms = (centred ** 2).sum(axis=1)
    cross = ((centred @ sample) * centred).sum(axis=1)
    return float((squared_norms ** 2 - 2 * cross + (sample ** 2).sum()).sum() / n ** 2)
