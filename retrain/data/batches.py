"""Fine-tuning's training batches: read, decoded and augmented by worker threads.

Every epoch visits the training images in a new order and gives each a fresh random
version, both drawn from (seed, epoch), so epoch k holds the same batches whether or
not the run was interrupted before it. The pixels come from `load_image`, the one
preprocessing path: with augmentation off a batch holds exactly what serving feeds
the model. An image that cannot be read is named once and left out of its batches.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from retrain.data.augmentation import EpochAugmentation
from retrain.data.images import ImageError, load_image
from retrain.workers import prefetch


@dataclass
class Batch:
    pixels: np.ndarray  # float32 [n, size, size, 3], RGB in [0, 255]
    labels: np.ndarray  # int64 [n]
    indices: np.ndarray  # rows of the training list


def epoch_order(count: int, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """Epoch `epoch`'s batches of row indices: a fresh shuffle, the last partial batch
    dropped (so every step sees a full batch) unless there is no full one."""
    order = np.random.default_rng([seed, epoch]).permutation(count)
    full = count // batch_size
    if full == 0:
        return [order]
    return [order[i * batch_size : (i + 1) * batch_size] for i in range(full)]


class TrainingImages:
    def __init__(self, paths: list[Path], labels: np.ndarray, size: int, augmentation: EpochAugmentation,
                 seed: int, batch_size: int, workers: int | None = None):
        self.paths, self.labels, self.size = paths, labels, size
        self.augmentation, self.seed, self.batch_size = augmentation, seed, batch_size
        self.workers = workers or os.cpu_count() or 2
        self.unreadable: set[int] = set()

    @property
    def batches_per_epoch(self) -> int:
        return max(len(self.paths) // self.batch_size, 1)

    def load(self, index: int, epoch: int) -> np.ndarray:
        """One training image's version in `epoch`, as the network gets it."""
        draw = self.augmentation.draw(self.seed, epoch, index)
        return load_image(self.paths[index], self.size, draw=draw)

    def epoch(self, epoch: int, limit: int | None = None,
              on_unreadable: Callable[[ImageError], None] | None = None) -> Iterator[Batch]:
        """The batches of `epoch` (at most `limit`), decoded ahead while the caller trains."""
        batches = epoch_order(len(self.paths), self.batch_size, self.seed, epoch)[:limit]
        flat = [(b, int(i)) for b, rows in enumerate(batches) for i in rows]

        def load(item):
            try:
                return item, self.load(item[1], epoch)
            except ImageError as e:
                return item, e

        current, pixels = 0, []
        with ThreadPoolExecutor(max_workers=self.workers) as executor:
            try:
                for (batch, index), loaded in prefetch(load, flat, executor, ahead=3 * self.batch_size):
                    if batch != current:
                        if pixels:
                            yield self._batch(pixels)
                        current, pixels = batch, []
                    if isinstance(loaded, ImageError):
                        if index not in self.unreadable and on_unreadable:
                            on_unreadable(loaded)
                        self.unreadable.add(index)
                    else:
                        pixels.append((index, loaded))
                if pixels:
                    yield self._batch(pixels)
            finally:
                executor.shutdown(wait=True, cancel_futures=True)

    def _batch(self, loaded: list[tuple[int, np.ndarray]]) -> Batch:
        indices = np.array([i for i, _ in loaded], np.int64)
        return Batch(np.stack([p for _, p in loaded]).astype(np.float32), self.labels[indices], indices)
