"""The epoch loop of fine-tuning, configured by callbacks (progress, logging, keeping the
best epoch, checkpoints, TensorBoard): the loop stays small, and each concern is one
object that hooks in."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Sequence


@dataclass(frozen=True)
class EpochResult:
    epoch: int  # 1-based
    epochs: int
    train_loss: float
    images: int  # training images seen this epoch
    seconds: float
    validation_loss: float | None = None
    validation_accuracy: float | None = None
    validation_auc: float | None = None

    @property
    def images_per_second(self) -> float:
        return self.images / max(self.seconds, 1e-9)


class Callback:
    """Override what you need; every hook is optional."""

    def on_epoch_begin(self, epoch: int, epochs: int) -> None: ...

    def on_batch_end(self, images: int) -> None: ...

    def on_epoch_end(self, result: EpochResult) -> None: ...


@dataclass(frozen=True)
class Validation:
    loss: float
    accuracy: float
    auc: float


def fit(
    first_epoch: int,
    epochs: int,
    train_epoch: Callable[[int, Callable[[int], None]], tuple[float, int]],
    validate: Callable[[], Validation | None],
    callbacks: Sequence[Callback],
) -> list[EpochResult]:
    """Run epochs first_epoch+1 .. epochs (1-based). `train_epoch(epoch, on_batch)` trains
    one epoch and returns (mean loss, images seen); `validate()` scores the current state."""
    results = []
    for epoch in range(first_epoch + 1, epochs + 1):
        for callback in callbacks:
            callback.on_epoch_begin(epoch, epochs)
        start = time.monotonic()

        def on_batch(images: int) -> None:
            for callback in callbacks:
                callback.on_batch_end(images)

        loss, images = train_epoch(epoch, on_batch)
        seconds = time.monotonic() - start
        scores = validate()
        result = EpochResult(
            epoch, epochs, loss, images, seconds,
            *((scores.loss, scores.accuracy, scores.auc) if scores else ()),
        )
        for callback in callbacks:
            callback.on_epoch_end(result)
        results.append(result)
    return results
