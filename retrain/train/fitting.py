"""The top layer of a run, fitted on cached bottlenecks with its progress, step lines,
TensorBoard scalars and intermediate graphs hooked into the training loop."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from retrain.features.arrays import Arrays
from retrain.metrics import auc_line
from retrain.reporter import Reporter
from retrain.train.callbacks import (
    History,
    IntermediateGraphs,
    StepLines,
    StepProgress,
    SummaryWriters,
    TensorBoard,
)
from retrain.train.top_layer import ClassWeights, TopLayer, TrainingConfig, train_top_layer


@dataclass(frozen=True)
class TopLayerRecord:
    """What the model card records of the top layer: which step was kept, and whether validation chose it."""

    steps: int
    kept_step: int
    early_stopping_metric: str | None

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class TrainedTopLayer:
    layer: TopLayer
    config: TrainingConfig  # as trained: with the class weights resolved
    history: list  # a StepReport per validation, for the training plot
    summaries: SummaryWriters | None  # TensorBoard writers, which fine-tuning goes on with

    @property
    def record(self) -> TopLayerRecord:
        stopped = self.layer.step is not None
        return TopLayerRecord(self.config.steps, self.layer.step if stopped else self.config.steps - 1,
                              self.config.early_stopping_metric if stopped else None)


def fit_top_layer(labels: list[str], training: Arrays, validation: Arrays, config: TrainingConfig,
                  class_weights: ClassWeights | None, summaries_dir: Path | None, reporter: Reporter,
                  save_every: int = 0, save: Callable[[int, TopLayer], None] | None = None) -> TrainedTopLayer:
    """`save(step, layer)` writes an intermediate graph every `save_every` steps (0: none)."""
    summaries = SummaryWriters(summaries_dir) if summaries_dir else None
    if summaries:
        reporter.log(f"TensorBoard summaries: {summaries.run_dir}")
    if class_weights:
        weights = class_weights.resolve(labels, training.y)
        reporter.log("Class weights: " + ", ".join(f"{label} {w:.3g}" for label, w in zip(labels, weights)))
        config = dataclasses.replace(config, class_weights=weights)
    history = History()
    callbacks = [history, StepLines(reporter.log), *([TensorBoard(summaries)] if summaries else [])]
    if save is not None and save_every:
        callbacks.append(IntermediateGraphs(save_every, save))
    update = reporter.bar(config.steps, "Top layer", "steps")
    if update:
        callbacks.append(StepProgress(update, config.steps))
    layer = train_top_layer(training.x, training.y, validation.x, validation.y, len(labels), config, callbacks)
    if layer.step is not None:
        reporter.log(f"Early stopping: kept the top layer from step {layer.step}, best validation "
                     f"{config.early_stopping_metric}")
    log_validation_auc("Validation", layer, validation, labels, reporter)
    return TrainedTopLayer(layer, config, history.results, summaries)


def log_validation_auc(name: str, layer: TopLayer, validation: Arrays, labels: list[str], reporter: Reporter,
                       when: str = "before calibration") -> None:
    """The validation AUC of a top layer not yet calibrated (the decisions calibrate it), unless told otherwise."""
    if len(validation):
        reporter.log(auc_line(name, layer.probabilities(validation.x, validation.patient), validation.y, labels, when))
