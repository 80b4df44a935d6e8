"""The concerns that hook into the training loop (retrain.train.learner), one small
object each: keeping the best weights and early stopping, progress, log lines,
TensorBoard scalars, intermediate graphs and the history the training plot draws."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable

import numpy as np

from retrain.train.learner import Callback, FitState


class KeepBest(Callback):
    """Keeps what `take(result)` returns at the best validation figure (AUC, or loss); with
    `patience`, stops the loop after that many validations without a better one. A result
    without validation figures, or with NaN ones (one class only), is passed over."""

    def __init__(self, metric: str, take: Callable[[object], object], patience: int = 0,
                 later_wins_ties: bool = False, at=None, score: float | None = None, kept=None):
        self.metric, self.take, self.patience, self.later_wins_ties = metric, take, patience, later_wins_ties
        self.at, self.score, self.kept = at, score, kept  # a resumed run starts from its checkpoint's best
        self.waited = 0

    def on_period_end(self, result, state: FitState) -> None:
        if result.validation_auc is None:
            return
        score = result.validation_auc if self.metric == "auc" else -result.validation_loss
        if math.isnan(score):
            return
        if self.score is None or score > self.score or (self.later_wins_ties and score == self.score):
            self.at, self.score, self.kept, self.waited = result.position, score, self.take(result), 0
            return
        self.waited += 1
        if self.patience and self.waited >= self.patience:
            state.stop = True


class StepProgress(Callback):
    """One progress update per step; steps skipped by early stopping fill the bar at the end."""

    def __init__(self, update: Callable[[int], None], steps: int):
        self.update, self.steps, self.done = update, steps, 0

    def on_batch_end(self, step: int, size: int) -> None:
        self.done += 1
        self.update(1)

    def on_fit_end(self, results: list) -> None:
        if self.done < self.steps:
            self.update(self.steps - self.done)


class StepLines(Callback):
    """tensorflow-for-poets' three lines at every validation of the top layer."""

    def __init__(self, log: Callable[[str], None]):
        self.log = log

    def on_period_end(self, report, state: FitState) -> None:
        lines = [f"Step {report.step}: Train accuracy = {100 * report.train_accuracy:.1f}%",
                 f"Step {report.step}: Cross entropy = {report.cross_entropy:f}"]
        if report.validation_accuracy is not None:
            lines.append(f"Step {report.step}: Validation accuracy = {100 * report.validation_accuracy:.1f}% "
                         f"(N={report.validation_count})")
        self.log("\n".join(lines))


class History(Callback):
    """Every result, for the training-curves plot."""

    def __init__(self):
        self.results: list = []

    def on_period_end(self, result, state: FitState) -> None:
        self.results.append(result)


class IntermediateGraphs(Callback):
    """`save(step, top_layer)` every `every` steps (not at step 0), as retrain.py's
    MonitorConfig.intermediate_store_frequency."""

    def __init__(self, every: int, save: Callable[[int, object], None]):
        self.every, self.save, self.model = every, save, None

    def on_fit_begin(self, model) -> None:
        self.model = model

    def on_batch_end(self, step: int, size: int) -> None:
        if step > 0 and step % self.every == 0:
            self.save(step, self.model)


class SummaryWriters:
    """TensorBoard scalars for one run, in a new subfolder: the user's folder is never cleared."""

    def __init__(self, summaries_dir: Path):
        import tensorflow as tf
        from tensorflow.core.framework.summary_pb2 import SummaryMetadata

        stamp = time.strftime("run-%Y%m%d-%H%M%S")
        run_dir = Path(summaries_dir).expanduser() / stamp
        suffix = 1
        while run_dir.exists():
            suffix += 1
            run_dir = run_dir.with_name(f"{stamp}-{suffix}")
        self.run_dir = run_dir
        self.writers = {name: tf.summary.create_file_writer(str(run_dir / name)) for name in ("train", "validation")}
        # TensorBoard's scalar-plugin tag, so TensorBoard plots them without the tensorboard package.
        card = SummaryMetadata()
        card.plugin_data.plugin_name = "scalars"
        self._plugin = card.SerializeToString()
        self._tf = tf

    def write(self, step: int, scalars: list[tuple[str, str, float | None]]) -> None:
        """(writer, tag, value) triples; missing and NaN values are left out."""
        for writer, tag, value in scalars:
            if value is None or np.isnan(value):
                continue
            with self.writers[writer].as_default(step=step):
                self._tf.summary.write(tag, self._tf.constant(value, self._tf.float32), metadata=self._plugin)
        for writer in self.writers.values():
            writer.flush()


class TensorBoard(Callback):
    """A top-layer step's or a fine-tuning epoch's figures as scalars; epochs are numbered on
    from the top layer's steps (`first_step`), so both draw as one curve."""

    def __init__(self, writers: SummaryWriters, first_step: int = 0):
        self.writers, self.first_step = writers, first_step

    def on_period_end(self, result, state: FitState) -> None:
        if hasattr(result, "epoch"):
            scalars = [("train", "cross_entropy", result.train_loss)]
        else:
            scalars = [("train", "accuracy", result.train_accuracy), ("train", "cross_entropy", result.cross_entropy),
                       ("train", "learning_rate", result.learning_rate)]
        scalars += [("validation", "accuracy", result.validation_accuracy), ("validation", "auc", result.validation_auc),
                    ("validation", "cross_entropy", result.validation_loss)]
        self.writers.write(self.first_step + result.position, scalars)


class WeightAveraging(Callback):
    """An exponential moving average of the weights, updated after every step (Polyak averaging;
    the EMA of small-data fine-tuning). Its decay ramps up as (1 + t) / (10 + t) over the first
    steps, so the average is not held back by the weights it started from. `read()` returns the
    current weights; `averaged` may start from a checkpoint's."""

    def __init__(self, decay: float, read: Callable[[], list[np.ndarray]], averaged: list[np.ndarray] | None = None):
        self.decay, self.read = decay, read
        self.averaged = [np.array(value, np.float32) for value in averaged] if averaged else [
            np.array(value, np.float32) for value in read()]

    def on_batch_end(self, step: int, size: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))
        for average, value in zip(self.averaged, self.read()):
            average *= decay
            average += (1 - decay) * value
