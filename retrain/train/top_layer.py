"""Training the new top layer (fully connected + softmax) on cached bottlenecks.

Plain NumPy: on a few thousand cached feature vectors a step costs well under a
millisecond, every run with the same seed gives the same weights, and training
needs no TensorFlow graph at all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from retrain.train.callbacks import KeepBest
from retrain.train.learner import Callback, Learner


@dataclass(frozen=True)
class TrainingConfig:
    steps: int = 4000
    learning_rate: float = 0.01
    train_batch_size: int = 100
    eval_step_interval: int = 10
    validation_batch_size: int = 100  # -1 = the whole validation set
    random_seed: int | None = None
    class_weights: tuple[float, ...] | None = None  # loss weight per class, in label order
    optimizer: str = "sgd"  # sgd (retrain.py's), momentum (0.9) or adam
    learning_rate_schedule: str = "constant"  # or cosine: decays to zero by the last step
    weight_decay: float = 0.0  # L2 penalty on the weights
    dropout: float = 0.0  # fraction of bottleneck values dropped per training example
    label_smoothing: float = 0.0
    early_stopping_patience: int = 0  # evaluations without improvement before stopping; 0 = off
    early_stopping_metric: str = "auc"  # or loss; judged on the whole validation set


# The validation images whose AUC and loss each evaluation reports when no early stopping reads
# them: a fixed sample, the same at every evaluation, so that 40,000 validation images cost a
# training run what 5,000 do. Early stopping, and the figures after training, take the whole set.
EVALUATION_SAMPLE = 5000

OPTIMIZERS = ("sgd", "momentum", "adam")
SCHEDULES = ("constant", "cosine")
EARLY_STOPPING_METRICS = ("auc", "loss")

@dataclass
class TopLayer:
    weights: np.ndarray  # [features, classes]
    bias: np.ndarray  # [classes]
    step: int | None = None  # the training step these weights were taken at, when kept early
    # [encoded patient metadata, classes] for a model that also takes patient metadata (retrain.patient.fusion)
    patient_weights: np.ndarray | None = None

    def logits(self, features: np.ndarray, patient: np.ndarray | None = None) -> np.ndarray:
        logits = features @ self.weights + self.bias
        if self.patient_weights is not None:
            logits = logits + patient @ self.patient_weights
        return logits

    def probabilities(self, features: np.ndarray, patient: np.ndarray | None = None) -> np.ndarray:
        return softmax(self.logits(features, patient))

    def copy(self, step: int | None = None) -> "TopLayer":
        """A copy that later training steps do not change, taken at `step`."""
        return TopLayer(self.weights.copy(), self.bias.copy(), step,
                        None if self.patient_weights is None else self.patient_weights.copy())


@dataclass(frozen=True)
class StepReport:
    step: int
    train_accuracy: float
    cross_entropy: float
    validation_accuracy: float | None
    validation_count: int
    validation_auc: float | None = None  # on the whole validation set, or EVALUATION_SAMPLE of it
    validation_loss: float | None = None  # on the same images
    learning_rate: float | None = None
    figures_count: int = 0  # the validation images of validation_auc and validation_loss

    @property
    def position(self) -> int:
        return self.step


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def accuracy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(probabilities, axis=1) == labels)) if len(labels) else float("nan")


def cross_entropy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    picked = probabilities[np.arange(len(labels)), labels]
    return float(-np.mean(np.log(np.maximum(picked, 1e-12))))


@dataclass(frozen=True)
class ClassWeights:
    """`balanced` (each class weighs n / (classes * count), as scikit-learn does) or a weight
    per named class (the others weigh 1). Labels are checked once the classes are known."""

    balanced: bool = False
    given: tuple[tuple[str, str, float | None], ...] = ()  # (as written, label, weight; None: no weight given)

    def check(self, labels: list[str]) -> None:
        from retrain.errors import UserError

        for part, label, weight in self.given:
            if weight is None or label not in labels:
                raise UserError(f"RetrainConfig.class_weights: {part!r} is not label=weight for one of: {', '.join(labels)}")

    def resolve(self, labels: list[str], train_labels: np.ndarray) -> tuple[float, ...]:
        """One weight per class, in label order."""
        if self.balanced:
            counts = np.bincount(train_labels, minlength=len(labels))
            return tuple(float(len(train_labels) / (len(labels) * c)) if c else 1.0 for c in counts)
        self.check(labels)
        weights = dict.fromkeys(labels, 1.0)
        weights.update((label, weight) for _, label, weight in self.given)
        return tuple(weights.values())


def _truncated_normal(rng: np.random.Generator, shape, stddev: float) -> np.ndarray:
    values = rng.normal(0.0, stddev, size=shape)
    outside = np.abs(values) > 2 * stddev
    while outside.any():
        values[outside] = rng.normal(0.0, stddev, size=int(outside.sum()))
        outside = np.abs(values) > 2 * stddev
    return values


def _sample(rng: np.random.Generator, count: int, size: int) -> np.ndarray:
    """retrain.py draws batches with replacement; -1 means every example, in order."""
    if size < 0:
        return np.arange(count)
    return rng.integers(0, count, size=size)


def mean_auc(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """The positive class's AUC for two classes, else the mean one-vs-rest AUC."""
    from retrain.metrics import roc_auc

    classes = probabilities.shape[1]
    if classes == 2:
        return roc_auc(probabilities[:, 1], labels == 1)
    values = [roc_auc(probabilities[:, c], labels == c) for c in range(classes)]
    values = [v for v in values if not np.isnan(v)]
    return float(np.mean(values)) if values else float("nan")


def _learning_rate(config: TrainingConfig, step: int) -> float:
    if config.learning_rate_schedule == "cosine":
        return config.learning_rate * 0.5 * (1 + np.cos(np.pi * step / max(config.steps - 1, 1)))
    return config.learning_rate


@dataclass
class _Optimizer:
    """SGD, momentum or Adam over the top layer's two arrays, in place."""

    kind: str
    slots: list | None = None
    step: int = 0

    def apply(self, params: list[np.ndarray], grads: list[np.ndarray], rate: float) -> None:
        self.step += 1
        if self.kind == "sgd":
            for p, g in zip(params, grads):
                p -= rate * g
            return
        if self.slots is None:
            self.slots = [[np.zeros_like(p), np.zeros_like(p)] for p in params]
        for p, g, (m, v) in zip(params, grads, self.slots):
            if self.kind == "momentum":
                m *= 0.9
                m += g
                p -= rate * m
            else:
                m *= 0.9
                m += 0.1 * g
                v *= 0.999
                v += 0.001 * g * g
                m_hat = m / (1 - 0.9**self.step)
                v_hat = v / (1 - 0.999**self.step)
                p -= rate * m_hat / (np.sqrt(v_hat) + 1e-7)


def check_config(config: TrainingConfig) -> None:
    from retrain.errors import UserError

    if config.optimizer not in OPTIMIZERS:
        raise UserError(f"TrainingConfig.optimizer must be one of {', '.join(OPTIMIZERS)}, got {config.optimizer!r}")
    if config.learning_rate_schedule not in SCHEDULES:
        raise UserError(f"TrainingConfig.learning_rate_schedule must be one of {', '.join(SCHEDULES)}")
    if config.early_stopping_metric not in EARLY_STOPPING_METRICS:
        raise UserError(f"TrainingConfig.early_stopping_metric must be one of {', '.join(EARLY_STOPPING_METRICS)}")
    if not (math.isfinite(config.learning_rate) and config.learning_rate > 0):
        raise UserError(f"TrainingConfig.learning_rate must be a finite number > 0, got {config.learning_rate}")
    if not (math.isfinite(config.weight_decay) and config.weight_decay >= 0):
        raise UserError(f"TrainingConfig.weight_decay must be a finite number >= 0, got {config.weight_decay}")
    if not 0 <= config.dropout < 1:
        raise UserError(f"TrainingConfig.dropout must be in [0, 1), got {config.dropout}")
    if not 0 <= config.label_smoothing < 1:
        raise UserError(f"TrainingConfig.label_smoothing must be in [0, 1), got {config.label_smoothing}")
    if config.validation_batch_size == 0 or config.validation_batch_size < -1:
        raise UserError(f"TrainingConfig.validation_batch_size must be -1 (the whole validation set) or >= 1, "
                        f"got {config.validation_batch_size}")
    if config.early_stopping_patience < 0:
        raise UserError(f"TrainingConfig.early_stopping_patience must be >= 0 (0 = off), got {config.early_stopping_patience}")


def _evaluation_periods(steps: int, interval: int) -> list[range]:
    """The steps between validations: retrain.py validates at step 0, every `interval` steps
    and at the last step."""
    ends = [step for step in range(steps) if step % interval == 0 or step == steps - 1]
    return [range(first, last + 1) for first, last in zip([0] + [end + 1 for end in ends[:-1]], ends)]


def train_top_layer(
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    class_count: int,
    config: TrainingConfig,
    callbacks: Sequence[Callback] = (),
) -> TopLayer:
    """Softmax regression by minibatch gradient descent, as retrain.py's final layer, with
    optional weight decay, dropout, label smoothing, momentum/Adam, a cosine schedule and
    early stopping that keeps the best validated top layer. `callbacks` see a `StepReport`
    at every validation."""
    check_config(config)
    rng = np.random.default_rng(config.random_seed)
    # Validation draws from its own stream, so how often we validate never changes the weights.
    eval_rng = np.random.default_rng(None if config.random_seed is None else config.random_seed + 1)
    layer = TopLayer(_truncated_normal(rng, (train_x.shape[1], class_count), 0.001).astype(np.float32),
                     np.zeros(class_count, np.float32))
    step_once = _gradient_step(layer, config, class_count, rng)

    def train(period: range, on_batch) -> tuple[np.ndarray, np.ndarray, float]:
        for step in period:
            batch = _sample(rng, len(train_y), config.train_batch_size)
            x, y = train_x[batch], train_y[batch]
            with np.errstate(over="ignore", invalid="ignore"):  # divergence is reported below, in one line
                rate = step_once(x, y, step)
            if not np.isfinite(layer.bias).all():  # a few numbers: free to check every step
                _diverged(step, config)
            on_batch(step, 1)
        return x, y, rate

    keep_best = None
    if config.early_stopping_patience > 0 and len(val_y):
        keep_best = KeepBest(config.early_stopping_metric, lambda report: layer.copy(report.step),
                             patience=config.early_stopping_patience)
    figures = _figure_rows(len(val_y), keep_best is not None, config.random_seed)
    figure_x, figure_y = (val_x, val_y) if figures is None else (val_x[figures], val_y[figures])

    def finish(period: range, trained, seconds: float) -> StepReport:
        x, y, rate = trained
        if not np.isfinite(layer.weights).all():
            _diverged(period[-1], config)
        return _step_report(period[-1], layer, x, y, rate, (val_x, val_y), (figure_x, figure_y),
                            config.validation_batch_size, eval_rng)

    learner = Learner(train, finish, [*callbacks, *([keep_best] if keep_best else [])])
    learner.fit(_evaluation_periods(config.steps, config.eval_step_interval), layer)
    return keep_best.kept if keep_best and keep_best.kept is not None else layer


def _diverged(step: int, config: TrainingConfig) -> None:
    """A NaN or infinite loss: stop, so no useless model is exported."""
    from retrain.errors import UserError

    raise UserError(f"training diverged at step {step}: the loss became NaN or infinite; "
                    f"try a lower TrainingConfig.learning_rate (now {config.learning_rate:g})")


def _gradient_step(layer: TopLayer, config: TrainingConfig, class_count: int, rng: np.random.Generator):
    """One minibatch update of `layer` in place; returns the learning rate it used."""
    targets = np.eye(class_count, dtype=np.float32) * (1 - config.label_smoothing) + config.label_smoothing / class_count
    example_weight = (np.ones(class_count, np.float32) if config.class_weights is None
                      else np.asarray(config.class_weights, np.float32))
    optimizer = _Optimizer(config.optimizer)

    def step_once(x: np.ndarray, y: np.ndarray, step: int) -> float:
        inputs = x
        if config.dropout:
            inputs = x * (rng.random(x.shape) >= config.dropout) / (1 - config.dropout)
        gradient = (layer.probabilities(inputs) - targets[y]) * example_weight[y][:, None] / len(y)
        weight_gradient = inputs.T @ gradient
        if config.weight_decay:
            weight_gradient += config.weight_decay * layer.weights
        rate = _learning_rate(config, step)
        optimizer.apply([layer.weights, layer.bias], [weight_gradient, gradient.sum(axis=0)], rate)
        return rate

    return step_once


def _figure_rows(count: int, whole: bool, seed: int | None) -> np.ndarray | None:
    """The validation rows each evaluation's AUC and loss are taken on: all (None) when `whole` (early
    stopping reads them) or when there are at most EVALUATION_SAMPLE, else a fixed sample, drawn from
    a stream of its own so that the weights and the accuracy lines stay as they were."""
    if whole or count <= EVALUATION_SAMPLE:
        return None
    rng = np.random.default_rng(None if seed is None else seed + 2)
    return np.sort(rng.choice(count, EVALUATION_SAMPLE, replace=False))


def _step_report(step: int, layer: TopLayer, x, y, rate: float, validation, figures, validation_batch_size: int,
                 eval_rng: np.random.Generator) -> StepReport:
    """The last batch's figures after its update, and the validation set's (a sample of
    `validation_batch_size` for accuracy, as retrain.py, but drawn without replacement so that
    N counts distinct images; the `figures` rows, see _figure_rows, for AUC and loss)."""
    (val_x, val_y), (figure_x, figure_y) = validation, figures
    val_accuracy, val_count, val_auc, val_loss = None, 0, None, None
    if len(val_y):
        chosen = np.arange(len(val_y))
        if 0 <= validation_batch_size < len(val_y):
            chosen = eval_rng.choice(len(val_y), validation_batch_size, replace=False)
        val_accuracy = accuracy(layer.probabilities(val_x[chosen]), val_y[chosen])
        val_count = len(chosen)
        every = layer.probabilities(figure_x)
        val_auc, val_loss = mean_auc(every, figure_y), cross_entropy(every, figure_y)
    train_probabilities = layer.probabilities(x)
    return StepReport(step=step, train_accuracy=accuracy(train_probabilities, y),
                      cross_entropy=cross_entropy(train_probabilities, y), validation_accuracy=val_accuracy,
                      validation_count=val_count, validation_auc=val_auc, validation_loss=val_loss, learning_rate=rate,
                      figures_count=len(figure_y))
