"""Cached distorted copies: K augmented versions of every training image, extracted once
and kept in the bottleneck cache like any other entry, so a top layer trained on cached
bottlenecks still sees augmentation (see retrain.data.augmentation)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from retrain.data.augmentation import CopyAugmentation, DistortedCopy
from retrain.features.cache import BottleneckCache
from retrain.features.extraction import compute_bottlenecks


@dataclass
class DistortedTraining:
    """Training rows with the copies added, and what extracting the copies did."""

    features: np.ndarray
    labels: np.ndarray
    computed: int
    reused: int
    failures: list


def add_distorted_copies(
    training_paths: list[Path],
    train_x: np.ndarray,
    train_y: np.ndarray,
    distortion: CopyAugmentation,
    copies: int,
    backbone,
    cache: BottleneckCache,
    progress: Callable[[int], None] | None = None,
) -> DistortedTraining:
    """The training rows followed by `copies` distorted rows per training image.

    Every image then has K + 1 rows (the original counts as one more copy), so drawing
    training batches uniformly from the rows picks an image as before and one of its
    versions at random. Only training images are passed in: validation and test images
    are never distorted, and no copy of them is ever trained on."""
    paths = [path for path in training_paths for _ in range(copies)]
    variants = [DistortedCopy(distortion, index) for _ in training_paths for index in range(copies)]
    labels = np.repeat(train_y, copies)
    extraction = compute_bottlenecks(paths, backbone, cache, progress=progress, distortions=variants)
    return DistortedTraining(
        features=np.concatenate([train_x, extraction.features[extraction.ok]]),
        labels=np.concatenate([train_y, labels[extraction.ok]]),
        computed=extraction.computed,
        reused=extraction.reused,
        failures=extraction.failures,
    )
