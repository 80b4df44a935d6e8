"""Cached distorted copies: K augmented versions of every training image, extracted once
and kept in the bottleneck cache like any other entry, so a top layer trained on cached
bottlenecks still sees augmentation (see retrain.data.augmentation)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from retrain.data.augmentation import CopyAugmentation, DistortedCopy, copies_to_make
from retrain.features.arrays import Arrays
from retrain.features.cache import BottleneckCache
from retrain.features.extraction import compute_bottlenecks
from retrain.reporter import Reporter


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


def with_distorted_copies(training: Arrays, training_paths: list[Path], augmentation: CopyAugmentation,
                          distorted_copies: int | None, backbone, cache: BottleneckCache, reporter: Reporter) -> Arrays:
    """Training rows plus K cached distorted copies per training image (none unless asked for)."""
    copies = copies_to_make(augmentation, distorted_copies)
    if augmentation.active and not copies:
        reporter.warn("FeatureConfig.distorted_copies 0: distortion flags ignored; training on undistorted bottlenecks")
    if not copies or not len(training):
        return training
    if distorted_copies is None:
        reporter.log(f"Distortion flags without FeatureConfig.distorted_copies: caching {copies} distorted copies per "
                     "training image")
    added = add_distorted_copies(training_paths, training.x, training.y, augmentation, copies, backbone, cache,
                                 reporter.bar(copies * len(training), "Distorted copies"))
    for failure in added.failures:
        reporter.warn(f"skipped a distorted copy of {failure.path}: {failure.reason}")
    reporter.log(
        f"Distorted copies ({augmentation.describe()}): {copies} per training image, "
        f"{added.reused} reused, {added.computed} computed; training on {len(added.labels)} rows"
    )
    return Arrays(added.features, added.labels, training.patient)
