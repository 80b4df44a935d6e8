"""Fine-tuning: train the backbone (all of it, or its last N blocks) with the top layer,
on a fresh random version of every training image every epoch.

The top layer is first trained on cached bottlenecks as usual (retrain.train.top_layer); its
weights start the joint training here. Batches are read, decoded and augmented by
worker threads (retrain.data.batches) while the training step runs under a
tf.distribute strategy (retrain.train.distribution). The step minimises the same loss as the
top layer (label smoothing, class weights, dropout on the pooled features) with AdamW
and a cosine learning-rate decay to zero. After every epoch the validation set is
scored (with FineTuneConfig.ema_decay, a moving average of the weights is what is scored,
kept and exported), the best epoch by validation AUC is remembered, and a checkpoint is written
atomically to the run folder, so a rerun of the same command after Ctrl-C or kill -9
continues from the last finished epoch. The tuned weights are finally copied into the
backbone the exports are made from, which gets a new identity, so nothing computed by
the tuned network can reach the pretrained bottleneck cache.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from retrain.data.augmentation import EpochAugmentation, check_epoch_augmentation
from retrain.data.batches import TrainingImages
from retrain.data.images import map_batches
from retrain.errors import UserError
from retrain.reporter import Reporter
from retrain.train.callbacks import KeepBest, WeightAveraging
from retrain.train.checkpoints import (
    Checkpoint,
    DamagedCheckpoint,
    load_checkpoint,
    save_checkpoint,
)
from retrain.train.learner import Callback, FitState, Learner, Validation
from retrain.train.top_layer import (
    TopLayer,
    TrainingConfig,
    accuracy,
    cross_entropy,
    mean_auc,
)

EVALUATION_BATCH_SIZE = 64


@dataclass(frozen=True)
class FineTuneConfig:
    layers: int | str = 0  # 0 = off; N = the last N blocks; "all" = every layer
    epochs: int = 12
    steps: int | None = None  # stop after this many batches in all (None: every epoch runs whole)
    learning_rate: float = 5e-5  # AdamW, decayed to zero by a cosine
    batch_size: int = 32
    weight_decay: float = 1e-4  # AdamW's decoupled weight decay
    distribute: str = "auto"  # see retrain.train.distribution
    # 0 = off; else the decay of a moving average of the weights (retrain.train.callbacks.WeightAveraging),
    # which is what is validated, kept and exported
    ema_decay: float = 0.0
    augmentation: EpochAugmentation = field(default_factory=EpochAugmentation)

    @property
    def active(self) -> bool:
        return self.layers != 0


def parse_layers(text: str | int) -> int | str:
    """FineTuneConfig.layers: `all` or a block count (0 = off)."""
    if str(text).strip().lower() == "all":
        return "all"
    try:
        layers = int(text)
    except ValueError:
        raise UserError(f"FineTuneConfig.layers must be 'all' or a number of blocks, got {text!r}") from None
    if layers < 0:
        raise UserError(f"FineTuneConfig.layers must be 'all', or 0 (off) or more, got {layers}")
    return layers


def check_fine_tuning(config: FineTuneConfig, backbone_config) -> None:
    """Fail on a flag mistake before any slow work; `backbone_config` is None for a TF Hub module."""
    from retrain.backbones import tunable_blocks
    from retrain.train.distribution import DISTRIBUTE

    if not config.active:
        return
    if backbone_config is None:
        if config.layers != "all":
            raise UserError(f"FineTuneConfig.layers {config.layers}: a TF Hub module can only be fine-tuned whole; "
                            "use FineTuneConfig.layers all")
    elif config.layers != "all" and (available := tunable_blocks(backbone_config)) is not None:
        if config.layers > available:
            raise UserError(
                f"FineTuneConfig.layers {config.layers}: {backbone_config.name} has {available} blocks "
                f"({available - 1} MBConv blocks and the head conv); 'all' also tunes the stem"
            )
    if config.epochs < 1:
        raise UserError("FineTuneConfig.epochs must be at least 1")
    if config.steps is not None and config.steps < 1:
        raise UserError("FineTuneConfig.steps must be at least 1")
    if not (math.isfinite(config.learning_rate) and config.learning_rate > 0):
        raise UserError(f"FineTuneConfig.learning_rate must be a finite number > 0, got {config.learning_rate}")
    if config.batch_size < 1:
        raise UserError("FineTuneConfig.batch_size must be at least 1")
    if not (math.isfinite(config.weight_decay) and config.weight_decay >= 0):
        raise UserError(f"FineTuneConfig.weight_decay must be a finite number >= 0, got {config.weight_decay}")
    if not (math.isfinite(config.ema_decay) and 0 <= config.ema_decay < 1):
        raise UserError(f"FineTuneConfig.ema_decay must be 0 (off) or a number in (0, 1), got {config.ema_decay}")
    if config.distribute not in DISTRIBUTE:
        raise UserError(f"FineTuneConfig.distribute must be one of {', '.join(DISTRIBUTE)}")
    check_epoch_augmentation(config.augmentation)


@dataclass(frozen=True)
class EpochResult:
    """One fine-tuning epoch; checkpoints keep these fields as the run's history."""

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

    @property
    def position(self) -> int:
        return self.epoch


@dataclass
class TunedModel:
    top_layer: TopLayer
    best_epoch: int | None  # None: no validation set, the last epoch is kept
    history: list[EpochResult]
    resumed_from: int  # epochs a checkpoint had already finished


def _tuning_net(module, variables, top_layer: TopLayer, dropout: float):
    import tensorflow as tf

    class TuningNet(tf.Module):
        """The backbone's tuning path and the top layer, with dropout on the pooled features."""

        def __init__(self):
            super().__init__(name="tuning_net")
            self.backbone = module
            self.tuned = list(variables)
            self.top_weights = tf.Variable(top_layer.weights, name="final_weights")
            self.top_bias = tf.Variable(top_layer.bias, name="final_biases")

        @property
        def trainable(self) -> list:
            return self.tuned + [self.top_weights, self.top_bias]

        def logits(self, images, dropout_seed=None):
            features = self.backbone.tuning_features(images)
            if dropout_seed is not None and dropout:
                features = tf.nn.experimental.stateless_dropout(features, dropout, seed=dropout_seed)
            return tf.matmul(features, self.top_weights) + self.top_bias

    return TuningNet()


def run_fingerprint(**settings) -> str:
    """Names what a checkpoint continues: a run with other settings or images starts afresh."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


class _Checkpointing(Callback):
    def __init__(self, run_dir: Path, fingerprint: str, seed: int, net, optimizer, keep_best: KeepBest, history: list[dict],
                 averaging: WeightAveraging | None):
        self.run_dir, self.fingerprint, self.seed = run_dir, fingerprint, seed
        self.net, self.optimizer, self.keep_best, self.history = net, optimizer, keep_best, history
        self.averaging = averaging

    def on_period_end(self, result: EpochResult, state: FitState) -> None:
        self.history.append(dataclasses.asdict(result))
        try:
            save_checkpoint(self.run_dir, Checkpoint(
                fingerprint=self.fingerprint, seed=self.seed, epoch=result.epoch,
                weights=[v.numpy() for v in self.net.trainable],
                optimizer=[v.numpy() for v in self.optimizer.variables],
                best_epoch=self.keep_best.at, best_score=self.keep_best.score,
                best_weights=self.keep_best.kept, history=self.history,
                averaged=self.averaging.averaged if self.averaging else [],
            ))
        except OSError as e:
            raise UserError(f"cannot write the fine-tuning checkpoint in {self.run_dir}: {e.strerror or e}") from e


class _Report(Callback):
    """A progress bar within each epoch, then one line per epoch."""

    def __init__(self, images_in_epoch: Callable[[int], int], epochs: int, log, progress_factory):
        self.images_in_epoch, self.epochs, self.log, self.progress_factory = images_in_epoch, epochs, log, progress_factory
        self.update, self.expected, self.seen = None, 0, 0

    def on_period_begin(self, epoch: int) -> None:
        if self.progress_factory:
            self.expected, self.seen = self.images_in_epoch(epoch), 0
            self.update = self.progress_factory(self.expected, f"Epoch {epoch}/{self.epochs}")

    def on_batch_end(self, step: int, size: int) -> None:
        if self.update:
            self.seen += size
            self.update(size)

    def on_period_end(self, r: EpochResult, state: FitState) -> None:
        if self.update and self.seen < self.expected:  # unreadable images: close the bar all the same
            self.update(self.expected - self.seen)
        line = f"Epoch {r.epoch}/{r.epochs}: train loss {r.train_loss:.4f}"
        if r.validation_auc is not None:
            line += (f", validation loss {r.validation_loss:.4f}, accuracy {100 * r.validation_accuracy:.1f}%, "
                     f"AUC {r.validation_auc:.3f}")
        self.log(line + f" ({r.seconds:.0f} s, {r.images_per_second:.1f} images/s)")


@dataclass(frozen=True)
class TuningData:
    """The (image, class index) pairs fine-tuning trains and validates on, at the backbone's input size."""

    training: list[tuple[Path, int]]
    validation: list[tuple[Path, int]]
    class_count: int
    input_size: int


@dataclass(frozen=True)
class RunFolder:
    """Where the checkpoint lives, and the fingerprint of the settings and images it continues."""

    path: Path
    fingerprint: str


def fine_tune(
    backbone,
    build_backbone: Callable[[], object],
    top_layer: TopLayer,
    data: TuningData,
    config: FineTuneConfig,
    training: TrainingConfig,
    run: RunFolder,
    reporter: Reporter = Reporter(),
    callbacks: tuple[Callback, ...] = (),
    images_factory=TrainingImages,
    strategy=None,
) -> tuple[object, TunedModel]:
    """Tune a copy of `backbone` (built by `build_backbone` inside the strategy's scope, so
    its variables live on every replica) and the top layer; return the copy, holding the
    kept epoch's weights, and the tuned top layer. `images_factory` (TrainingImages'
    signature) lets the benchmark feed pre-decoded batches through the same loop;
    `strategy` is made from config.distribute when not given (a multi-machine one must
    exist before other TF work)."""
    import tensorflow as tf

    from retrain.train.distribution import make_strategy

    strategy = strategy or make_strategy(config.distribute)
    replicas = strategy.num_replicas_in_sync
    if config.batch_size < replicas:
        raise UserError(f"FineTuneConfig.batch_size {config.batch_size}: smaller than the {replicas} replicas training it")
    log, warn = reporter.log, reporter.warn
    checkpoint = _usable_checkpoint(run.path, run.fingerprint, log, warn)
    seed = checkpoint.seed if checkpoint else (training.random_seed if training.random_seed is not None
                                               else secrets.randbits(31))
    images = images_factory([p for p, _ in data.training], np.array([c for _, c in data.training], np.int64), data.input_size,
                            config.augmentation, seed, config.batch_size)
    schedule = _Schedule.of(images.batches_per_epoch, config)
    twin, net, optimizer = _build_net(strategy, backbone, build_backbone, top_layer, config, training, schedule)
    log(_plan_line(twin, net, config, data.input_size, strategy, schedule))
    first_epoch, history = _resume(checkpoint, net, optimizer, schedule.epochs, run.path, log)
    train_epoch = _epoch_trainer(images, schedule, _distributed_step(strategy, net, optimizer, data.class_count, training),
                                 seed, warn)
    predict = tf.function(lambda pixels: tf.nn.softmax(net.logits(pixels)), reduce_retracing=True)
    averaging = WeightAveraging(config.ema_decay, lambda: [v.numpy() for v in net.trainable],
                                checkpoint.averaged if checkpoint else None) if config.ema_decay else None

    def validated_weights(result) -> list[np.ndarray]:
        """A copy of what each epoch validates: the moving average (updated in place), or the weights."""
        return [np.copy(v) for v in averaging.averaged] if averaging else [v.numpy() for v in net.trainable]

    def finish(epoch: int, trained: tuple[float, int], seconds: float) -> EpochResult:
        # Before the checkpoint, so a diverged epoch is never kept; the weights cost little next to an epoch.
        if not (math.isfinite(trained[0]) and all(np.isfinite(v.numpy()).all() for v in net.trainable)):
            raise UserError(f"fine-tuning diverged in epoch {epoch}: the training loss became NaN or infinite; "
                            f"try a lower FineTuneConfig.learning_rate (now {config.learning_rate:g})")
        with _weights_in(net, averaging.averaged if averaging else None):
            scores = _validate(predict, data.validation, data.input_size, data.class_count)
        return EpochResult(epoch, schedule.epochs, *trained, seconds,
                           *((scores.loss, scores.accuracy, scores.auc) if scores else ()))

    keep_best = KeepBest(training.early_stopping_metric, validated_weights,
                         later_wins_ties=True,  # a tie goes to the later, further-trained epoch
                         **({"at": checkpoint.best_epoch, "score": checkpoint.best_score,
                             "kept": checkpoint.best_weights} if checkpoint else {"kept": []}))
    hooks = [
        _Report(lambda epoch: min(len(data.training), config.batch_size * schedule.batches_in(epoch)), schedule.epochs,
                log, reporter.progress),
        *((averaging,) if averaging else ()),
        keep_best,
        _Checkpointing(run.path, run.fingerprint, seed, net, optimizer, keep_best, history, averaging),
        *callbacks,
    ]
    Learner(train_epoch, finish, hooks).fit(range(first_epoch + 1, schedule.epochs + 1), net)
    averaged = " of the weights' moving average" if averaging else ""
    if keep_best.at is not None:
        _assign(net, keep_best.kept)
        log(f"Fine-tuning: kept epoch {keep_best.at}{averaged} (best validation {training.early_stopping_metric})")
    elif averaging:
        _assign(net, averaging.averaged)
        log(f"Fine-tuning: kept the last epoch{averaged}")
    tuned = TopLayer(net.top_weights.numpy().copy(), net.top_bias.numpy().copy())
    return twin, TunedModel(tuned, keep_best.at, [EpochResult(**r) for r in history], first_epoch)


@dataclass(frozen=True)
class _Schedule:
    """How many batches run, in how many epochs: FineTuneConfig.steps may end the last epoch early."""

    batches_per_epoch: int
    total_batches: int
    epochs: int

    @classmethod
    def of(cls, batches_per_epoch: int, config: FineTuneConfig) -> "_Schedule":
        total = batches_per_epoch * config.epochs
        if config.steps is not None:
            total = min(total, config.steps)
        return cls(batches_per_epoch, total, math.ceil(total / batches_per_epoch))

    def batches_in(self, epoch: int) -> int:
        return min(self.batches_per_epoch, self.total_batches - (epoch - 1) * self.batches_per_epoch)


def _build_net(strategy, backbone, build_backbone, top_layer: TopLayer, config: FineTuneConfig,
               training: TrainingConfig, schedule: _Schedule):
    """The twin backbone, the network tuned and its AdamW, all inside the strategy's scope."""
    import keras

    with strategy.scope():
        twin = build_backbone()
        _copy_variables(backbone.module, twin.module)
        net = _tuning_net(twin.module, twin.module.unfreeze(config.layers), top_layer, training.dropout)
        decay = keras.optimizers.schedules.CosineDecay(config.learning_rate, decay_steps=schedule.total_batches,
                                                       alpha=0.0)
        optimizer = keras.optimizers.AdamW(learning_rate=decay, weight_decay=config.weight_decay)
        optimizer.build(net.trainable)  # a Keras 3 optimizer makes its slots here, not in a replica step
    return twin, net, optimizer


def _assign(net, values: list[np.ndarray]) -> None:
    for variable, value in zip(net.trainable, values):
        variable.assign(value)


@contextlib.contextmanager
def _weights_in(net, values: list[np.ndarray] | None):
    """The net holding `values` (the moving average) for a validation, its own weights again after."""
    if values is None:
        yield
        return
    own = [v.numpy() for v in net.trainable]
    _assign(net, values)
    try:
        yield
    finally:
        _assign(net, own)


def _plan_line(twin, net, config: FineTuneConfig, input_size: int, strategy, schedule: _Schedule) -> str:
    from retrain.train.distribution import describe

    epochs = schedule.epochs
    return (f"Fine-tuning {_what_is_tuned(twin, config.layers, len(net.tuned))} at {input_size} px on "
            f"{describe(strategy)}: {epochs} epoch{'s' * (epochs != 1)} of {schedule.batches_per_epoch} batches of "
            f"{config.batch_size}, AdamW at {config.learning_rate:g} (cosine decay, weight decay "
            f"{config.weight_decay:g}){_averaging_words(config)}; augmentation: {config.augmentation.describe()}")


def _averaging_words(config: FineTuneConfig) -> str:
    return f", weights averaged (EMA, decay {config.ema_decay:g})" if config.ema_decay else ""


def _resume(checkpoint: Checkpoint | None, net, optimizer, epochs: int, run_dir: Path, log) -> tuple[int, list[dict]]:
    """The epochs a checkpoint already finished, and their history; its weights restored."""
    if not checkpoint:
        return 0, []
    _restore(net, optimizer, checkpoint)
    if checkpoint.epoch >= epochs:
        log(f"Fine-tuning: all {epochs} epochs were already done in {run_dir} (delete it to train again)")
    else:
        log(f"Fine-tuning: resuming after epoch {checkpoint.epoch} from {run_dir}")
    return checkpoint.epoch, list(checkpoint.history)


def _epoch_trainer(images, schedule: _Schedule, train_step, seed: int, warn):
    """train(epoch, on_batch) -> (mean loss, images seen) for the learner."""

    def train_epoch(epoch: int, on_batch) -> tuple[float, int]:
        loss_sum, seen = 0.0, 0
        for index, batch in enumerate(images.epoch(epoch, limit=schedule.batches_in(epoch), on_unreadable=lambda e: warn(
                f"skipped {e.path}: {e.reason} (left out of every epoch)"))):
            step = (epoch - 1) * schedule.batches_per_epoch + index
            loss_sum += train_step(batch.pixels, batch.labels, seed, step)
            seen += len(batch.labels)
            on_batch(step, len(batch.labels))
        return loss_sum / max(seen, 1), seen

    return train_epoch


def _validate(predict, validation: list[tuple[Path, int]], input_size: int, class_count: int) -> Validation | None:
    """The tuned network's figures on the whole validation set (None without one)."""
    if not validation:
        return None
    probabilities, ok, _ = map_batches(predict, [p for p, _ in validation], input_size, EVALUATION_BATCH_SIZE)
    labels = np.array([c for _, c in validation], np.int64)[ok]
    probabilities = probabilities[ok] if probabilities is not None else np.zeros((0, class_count), np.float32)
    return Validation(cross_entropy(probabilities, labels), accuracy(probabilities, labels), mean_auc(probabilities, labels))


def _distributed_step(strategy, net, optimizer, class_count: int, training: TrainingConfig):
    """One step on one global batch: each replica takes its share and divides its loss by
    the global batch's size, so the gradients summed across replicas are the batch mean's,
    whatever the number of devices. Returns step(pixels, labels, seed, step) -> loss sum."""
    import tensorflow as tf

    smoothing = training.label_smoothing
    targets = tf.constant(np.eye(class_count, dtype=np.float32) * (1 - smoothing) + smoothing / class_count)
    weights = tf.constant(np.ones(class_count, np.float32) if training.class_weights is None
                          else np.asarray(training.class_weights, np.float32))
    replicas = strategy.num_replicas_in_sync

    def replica_step(pixels, labels, seed_pair, count):
        replica = tf.cast(tf.distribute.get_replica_context().replica_id_in_sync_group, tf.int64)
        with tf.GradientTape() as tape:
            logits = net.logits(pixels, dropout_seed=seed_pair + tf.constant([0, 1_000_003], tf.int64) * replica)
            losses = tf.nn.softmax_cross_entropy_with_logits(tf.gather(targets, labels), logits) * tf.gather(weights, labels)
            loss = tf.reduce_sum(losses) / count
        gradients = tape.gradient(loss, net.trainable)
        optimizer.apply_gradients(zip(gradients, net.trainable))
        return tf.reduce_sum(losses)

    @tf.function(reduce_retracing=True)
    def global_step(pixels, labels, seed_pair, count):
        per_replica = strategy.run(replica_step, args=(pixels, labels, seed_pair, count))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    def distribute(array: np.ndarray):
        parts = np.array_split(array, replicas)
        return strategy.experimental_distribute_values_from_function(lambda ctx: parts[ctx.replica_id_in_sync_group])

    def step(pixels: np.ndarray, labels: np.ndarray, seed: int, index: int) -> float:
        return float(global_step(distribute(pixels), distribute(labels), tf.constant([seed, index], tf.int64),
                                 tf.constant(len(labels), tf.float32)))

    return step


def _usable_checkpoint(run_dir: Path, fingerprint: str, log, warn) -> Checkpoint | None:
    try:
        checkpoint = load_checkpoint(run_dir)
    except DamagedCheckpoint as e:
        warn(f"{run_dir}: the fine-tuning checkpoint is damaged ({e}); fine-tuning starts afresh")
        return None
    if checkpoint is not None and checkpoint.fingerprint != fingerprint:
        log(f"{run_dir}: its checkpoint is from other settings or images; fine-tuning starts afresh")
        return None
    return checkpoint


def _copy_variables(source, target) -> None:
    """Make the copy start from exactly the backbone's weights, however it was built."""
    pairs = list(zip(source.variables, target.variables))
    if len(source.variables) != len(target.variables) or any(a.shape != b.shape for a, b in pairs):
        raise UserError("internal: the backbone built for fine-tuning differs from the one the bottlenecks came from")
    for a, b in pairs:
        b.assign(a)


def _restore(net, optimizer, checkpoint: Checkpoint) -> None:
    pairs = list(zip(net.trainable, checkpoint.weights)) + list(zip(optimizer.variables, checkpoint.optimizer))
    if len(checkpoint.weights) != len(net.trainable) or len(checkpoint.optimizer) != len(optimizer.variables) or any(
            tuple(v.shape) != value.shape for v, value in pairs):
        raise UserError("the fine-tuning checkpoint does not fit this network; delete its run folder")
    for variable, value in pairs:
        variable.assign(value)


def _what_is_tuned(backbone, layers, variable_count: int) -> str:
    if layers == "all":
        return f"all of {backbone.config.name} ({variable_count} weight arrays)"
    return f"the last {layers} blocks of {backbone.config.name} ({variable_count} weight arrays)"


def copy_tuned_weights(tuned, backbone, layers) -> None:
    """Write the tuned copy's weights into the backbone the exports are made from, and give it
    a new identity naming them."""
    targets = backbone.module.unfreeze(layers)
    sources = tuned.module.unfreeze(layers)
    digest = hashlib.sha256()
    for target, source in zip(targets, sources):
        value = source.numpy()
        target.assign(value)
        digest.update(value.tobytes())
    backbone.identity = f"{backbone.identity}-ft{layers}-{digest.hexdigest()[:12]}"
