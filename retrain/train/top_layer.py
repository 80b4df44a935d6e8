"""Training the new top layer (fully connected + softmax) on cached bottlenecks.

Plain NumPy: on a few thousand cached feature vectors a step costs well under a
millisecond, every run with the same seed gives the same weights, and training
needs no TensorFlow graph at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np


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


OPTIMIZERS = ("sgd", "momentum", "adam")
SCHEDULES = ("constant", "cosine")
EARLY_STOPPING_METRICS = ("auc", "loss")

@dataclass
class TopLayer:
    weights: np.ndarray  # [features, classes]
    bias: np.ndarray  # [classes]
    step: int | None = None  # the training step these weights were taken at, when kept early
    # [encoded patient metadata, classes] for a model that also takes metadata (retrain.train.fusion)
    metadata_weights: np.ndarray | None = None

    def logits(self, features: np.ndarray, metadata: np.ndarray | None = None) -> np.ndarray:
        logits = features @ self.weights + self.bias
        if self.metadata_weights is not None:
            logits = logits + metadata @ self.metadata_weights
        return logits

    def probabilities(self, features: np.ndarray, metadata: np.ndarray | None = None) -> np.ndarray:
        return softmax(self.logits(features, metadata))


@dataclass(frozen=True)
class StepReport:
    step: int
    train_accuracy: float
    cross_entropy: float
    validation_accuracy: float | None
    validation_count: int
    validation_auc: float | None = None  # on the whole validation set
    validation_loss: float | None = None  # on the whole validation set
    learning_rate: float | None = None


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def accuracy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(probabilities, axis=1) == labels)) if len(labels) else float("nan")


def cross_entropy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    picked = probabilities[np.arange(len(labels)), labels]
    return float(-np.mean(np.log(np.maximum(picked, 1e-12))))


def parse_class_weights(spec: str, labels: list[str], train_labels: np.ndarray) -> tuple[float, ...]:
    """`balanced` (each class weighs n / (classes * count), as scikit-learn does) or
    `label=weight,...` (unnamed classes weigh 1)."""
    from retrain.data.dataset import label_for_folder
    from retrain.errors import UserError

    if spec.strip().lower() == "balanced":
        counts = np.bincount(train_labels, minlength=len(labels))
        return tuple(float(len(train_labels) / (len(labels) * c)) if c else 1.0 for c in counts)
    weights = dict.fromkeys(labels, 1.0)
    for part in filter(None, (p.strip() for p in spec.split(","))):
        label, sep, value = part.rpartition("=")
        label = label_for_folder(label.strip())
        if not sep or label not in weights:
            raise UserError(f"--class_weights: {part!r} is not label=weight for one of: {', '.join(labels)}")
        try:
            weights[label] = float(value)
        except ValueError:
            raise UserError(f"--class_weights: {value!r} is not a number") from None
        if not weights[label] > 0:
            raise UserError(f"--class_weights: weight of {label!r} must be positive")
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
    """SGD, momentum or Adam over the head's two arrays, in place."""

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
        raise UserError(f"--optimizer must be one of {', '.join(OPTIMIZERS)}, got {config.optimizer!r}")
    if config.learning_rate_schedule not in SCHEDULES:
        raise UserError(f"--learning_rate_schedule must be one of {', '.join(SCHEDULES)}")
    if config.early_stopping_metric not in EARLY_STOPPING_METRICS:
        raise UserError(f"--early_stopping_metric must be one of {', '.join(EARLY_STOPPING_METRICS)}")
    if not 0 <= config.dropout < 1:
        raise UserError(f"--dropout must be in [0, 1), got {config.dropout}")
    if not 0 <= config.label_smoothing < 1:
        raise UserError(f"--label_smoothing must be in [0, 1), got {config.label_smoothing}")
    if config.weight_decay < 0 or config.learning_rate <= 0:
        raise UserError("--weight_decay must be >= 0 and --learning_rate > 0")


def train_top_layer(
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    class_count: int,
    config: TrainingConfig,
    report: Callable[[StepReport], None] | None = None,
    snapshot: Callable[[int, TopLayer], None] | None = None,
    snapshot_every: int = 0,
    progress: Callable[[int], None] | None = None,
) -> TopLayer:
    """Softmax regression by minibatch gradient descent, as retrain.py's final layer, with
    optional weight decay, dropout, label smoothing, momentum/Adam, a cosine schedule and
    early stopping that keeps the best evaluated head."""
    check_config(config)
    rng = np.random.default_rng(config.random_seed)
    # Evaluation draws from its own stream, so how often we evaluate never changes the weights.
    eval_rng = np.random.default_rng(None if config.random_seed is None else config.random_seed + 1)
    features = train_x.shape[1]
    weights = _truncated_normal(rng, (features, class_count), 0.001).astype(np.float32)
    bias = np.zeros(class_count, np.float32)
    head = TopLayer(weights, bias)
    targets = np.eye(class_count, dtype=np.float32) * (1 - config.label_smoothing) + config.label_smoothing / class_count
    example_weight = np.ones(class_count, np.float32) if config.class_weights is None else np.asarray(config.class_weights, np.float32)
    optimizer = _Optimizer(config.optimizer)
    early_stopping = config.early_stopping_patience > 0 and len(val_y) > 0
    best_score, best_head, evaluations_since_best = -np.inf, None, 0
    steps_run = 0
    for step in range(config.steps):
        steps_run = step + 1
        batch = _sample(rng, len(train_y), config.train_batch_size)
        x, y = train_x[batch], train_y[batch]
        inputs = x
        if config.dropout:
            inputs = x * (rng.random(x.shape) >= config.dropout) / (1 - config.dropout)
        probabilities = head.probabilities(inputs)
        gradient = (probabilities - targets[y]) * example_weight[y][:, None] / len(y)
        weight_gradient = inputs.T @ gradient
        if config.weight_decay:
            weight_gradient += config.weight_decay * head.weights
        rate = _learning_rate(config, step)
        optimizer.apply([head.weights, head.bias], [weight_gradient, gradient.sum(axis=0)], rate)
        last = step + 1 == config.steps
        if snapshot and snapshot_every and step > 0 and step % snapshot_every == 0:
            snapshot(step, head)
        if progress:
            progress(1)
        if not (step % config.eval_step_interval == 0 or last):
            continue
        val_accuracy, val_count, val_auc, val_loss = None, 0, None, None
        if len(val_y):
            chosen = _sample(eval_rng, len(val_y), config.validation_batch_size)
            val_accuracy = accuracy(head.probabilities(val_x[chosen]), val_y[chosen])
            val_count = len(chosen)
            all_probabilities = head.probabilities(val_x)
            val_auc, val_loss = mean_auc(all_probabilities, val_y), cross_entropy(all_probabilities, val_y)
        if report:
            train_probabilities = head.probabilities(x)
            report(
                StepReport(
                    step=step,
                    train_accuracy=accuracy(train_probabilities, y),
                    cross_entropy=cross_entropy(train_probabilities, y),
                    validation_accuracy=val_accuracy,
                    validation_count=val_count,
                    validation_auc=val_auc,
                    validation_loss=val_loss,
                    learning_rate=rate,
                )
            )
        if early_stopping:
            score = val_auc if config.early_stopping_metric == "auc" else -val_loss
            if np.isnan(score):
                continue
            if score > best_score:
                best_score, evaluations_since_best = score, 0
                best_head = TopLayer(head.weights.copy(), head.bias.copy(), step)
            else:
                evaluations_since_best += 1
                if evaluations_since_best >= config.early_stopping_patience:
                    break
    if progress and steps_run < config.steps:
        progress(config.steps - steps_run)  # the steps early stopping skipped: the bar closes
    if best_head is not None:
        return best_head
    return head
