"""Fine-tuning within a run: the backbone tuned with the top layer, its weights put into the
backbone every export is made from, and each set's images read again through it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from retrain.data.images import map_batches
from retrain.data.sets import Sets
from retrain.features.arrays import Arrays, TunedRows
from retrain.reporter import Reporter
from retrain.train.callbacks import TensorBoard
from retrain.train.fine_tuning import EVALUATION_BATCH_SIZE, FineTuneConfig
from retrain.train.fitting import TrainedTopLayer
from retrain.train.top_layer import TopLayer, TrainingConfig


@dataclass(frozen=True)
class FineTuningRecord:
    """What the model card records of the fine-tuning."""

    layers: Any = None
    epochs: int | None = None
    steps: int | None = None
    learning_rate: float | None = None
    batch_size: int | None = None
    weight_decay: float | None = None
    augmentation: Any = None
    kept_epoch: int | None = None
    validation_auc: dict = field(default_factory=dict)  # epoch -> validation AUC
    ema_decay: float | None = None  # the weights' moving average was kept and exported; None: the weights themselves

    def to_json(self) -> dict:
        entries = dataclasses.asdict(self)
        if self.ema_decay is None:  # cards written before weight averaging existed are written back as they were
            del entries["ema_decay"]
        return entries


@dataclass(frozen=True)
class TunedNetwork:
    layer: TopLayer
    record: FineTuningRecord
    validation: TunedRows  # the tuned backbone's features of the validation images
    test: TunedRows  # ... of the test images
    training: TunedRows  # ... and of the training images, as served (no augmentation)

    def applied(self, sets: Sets, validation: Arrays, test: Arrays) -> tuple[Sets, Arrays, Arrays]:
        """The sets and arrays on the tuned features, without any image that became unreadable."""
        split = dataclasses.replace(sets.split, validation=self.validation.kept(sets.split.validation),
                                    test=self.test.kept(sets.split.test))
        return Sets(sets.labels, split), self.validation.apply(validation), self.test.apply(test)


def fine_tune_network(backbone, rebuild: Callable[[], Any], trained: TrainedTopLayer, sets: Sets,
                      config: FineTuneConfig, training: TrainingConfig, output_graph: Path, strategy,
                      reporter: Reporter) -> TunedNetwork:
    """Tune a copy of the backbone (`rebuild` makes a fresh one) with the top layer, then put the
    tuned weights into `backbone` (the one every export is made from). Checkpoints go beside
    `output_graph`, in its .finetune folder."""
    from retrain.train.fine_tuning import RunFolder, TuningData, copy_tuned_weights, fine_tune, run_fingerprint

    split = sets.split
    run_dir = Path(output_graph).expanduser().with_suffix(".finetune")
    fingerprint = run_fingerprint(
        backbone=backbone.identity, labels=sets.labels, fine_tuning=dataclasses.asdict(config),
        training=dataclasses.asdict(training),
        images={name: [(str(path), c, path.stat().st_size) for path, c in pairs]
                for name, pairs in (("training", split.training), ("validation", split.validation))},
    )
    callbacks = (TensorBoard(trained.summaries, training.steps),) if trained.summaries else ()
    data = TuningData(split.training, split.validation, len(sets.labels), backbone.input_size)
    tuned, result = fine_tune(backbone, rebuild, trained.layer, data, config, training, RunFolder(run_dir, fingerprint),
                              reporter, callbacks, strategy=strategy)
    copy_tuned_weights(tuned, backbone, config.layers)
    reporter.log(f"Checkpoints and epoch results: {run_dir}")
    record = FineTuningRecord(
        config.layers, config.epochs, config.steps, config.learning_rate, config.batch_size, config.weight_decay,
        config.augmentation.describe(), result.best_epoch,
        {r.epoch: r.validation_auc for r in result.history if r.validation_auc is not None},
        ema_decay=config.ema_decay or None)
    return TunedNetwork(result.top_layer, record, *tuned_features(backbone, [split.validation, split.test,
                                                                              split.training], reporter.warn))


def tuned_features(backbone, sets: list[list[tuple[Path, int]]], warn) -> tuple[TunedRows, ...]:
    """The (tuned) backbone's features of each set's images, read as serving reads them, with one
    traced function for all sets. Each image was read once already, for its bottleneck; one
    unreadable now is left out, with a warning."""
    import tensorflow as tf

    served = tf.function(backbone.module.features, reduce_retracing=True)

    def rows(pairs: list[tuple[Path, int]]) -> TunedRows:
        features, ok, failures = map_batches(served, [p for p, _ in pairs], backbone.input_size, EVALUATION_BATCH_SIZE)
        for failure in failures:
            warn(f"skipped {failure.path} after fine-tuning: {failure.reason}")
        return TunedRows(features[ok] if features is not None else np.zeros((0, backbone.feature_size), np.float32), ok)

    return tuple(rows(pairs) for pairs in sets)
