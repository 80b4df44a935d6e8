"""One set's features as the training stages take them: rows, class indices and the encoded
patient metadata (None without)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Arrays:
    x: np.ndarray
    y: np.ndarray
    patient: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.y)

    def taken(self, chosen: np.ndarray) -> Arrays:
        """The rows `chosen` (indices)."""
        return Arrays(self.x[chosen], self.y[chosen], None if self.patient is None else self.patient[chosen])


def set_arrays(pairs: list[tuple[Path, int]], by_path: dict[Path, np.ndarray], feature_size: int,
               patient: np.ndarray | None) -> Arrays:
    """The rows of (image, class index) pairs, from each image's features."""
    if not pairs:
        return Arrays(np.zeros((0, feature_size), np.float32), np.zeros(0, np.int64), patient)
    return Arrays(np.stack([by_path[p] for p, _ in pairs]), np.array([c for _, c in pairs]), patient)


@dataclass(frozen=True)
class TunedRows:
    """A tuned backbone's features of the images still readable, and which those are."""

    x: np.ndarray
    ok: np.ndarray  # one bool per image asked for

    def apply(self, arrays: Arrays) -> Arrays:
        """`arrays` with the tuned features, without the rows of the images that became unreadable."""
        kept = arrays.taken(self.ok)
        return Arrays(self.x, kept.y, kept.patient)

    def kept(self, pairs: list[tuple[Path, int]]) -> list[tuple[Path, int]]:
        return [pair for pair, keep in zip(pairs, self.ok) if keep]
