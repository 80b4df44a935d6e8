"""The one training loop, for the top layer and for fine-tuning alike, in the spirit of
fastai's Learner: the loop only trains and validates, period after period; every other
concern (progress, log lines, keeping the best weights, early stopping, checkpoints,
TensorBoard, intermediate graphs) is a callback that hooks in.

A period is what trains between two validations: for the top layer a run of
`eval_step_interval` steps, for fine-tuning an epoch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Generic, Sequence, TypeVar

Period = TypeVar("Period")
Result = TypeVar("Result")


@dataclass(frozen=True)
class Validation:
    """Figures on the whole validation set."""

    loss: float
    accuracy: float
    auc: float


@dataclass
class FitState:
    """What callbacks may read and change while the loop runs."""

    stop: bool = False  # set by a callback (early stopping): no further period runs


class Callback(Generic[Period, Result]):
    """Override what you need; every hook is optional."""

    def on_fit_begin(self, model: object) -> None: ...

    def on_period_begin(self, period: Period) -> None: ...

    def on_batch_end(self, step: int, size: int) -> None: ...

    def on_period_end(self, result: Result, state: FitState) -> None: ...

    def on_fit_end(self, results: list[Result]) -> None: ...


@dataclass(frozen=True)
class Learner(Generic[Period, Result]):
    """`train(period, on_batch)` trains one period, calling `on_batch(step, size)` after each
    batch, and returns what it measured; `finish(period, trained, seconds)` validates and
    makes the period's result."""

    train: Callable[[Period, Callable[[int, int], None]], object]
    finish: Callable[[Period, object, float], Result]
    callbacks: Sequence[Callback] = field(default_factory=tuple)

    def fit(self, periods: Sequence[Period], model: object = None) -> list[Result]:
        """Train `model` (handed to the callbacks, which may copy or save it) period by period."""
        state, results = FitState(), []
        callbacks = list(self.callbacks)
        for callback in callbacks:
            callback.on_fit_begin(model)

        def on_batch(step: int, size: int) -> None:
            for callback in callbacks:
                callback.on_batch_end(step, size)

        for period in periods:
            for callback in callbacks:
                callback.on_period_begin(period)
            start = time.monotonic()
            trained = self.train(period, on_batch)
            result = self.finish(period, trained, time.monotonic() - start)
            for callback in callbacks:
                callback.on_period_end(result, state)
            results.append(result)
            if state.stop:
                break
        for callback in callbacks:
            callback.on_fit_end(results)
        return results
