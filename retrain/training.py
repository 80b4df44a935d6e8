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


@dataclass
class Head:
    weights: np.ndarray  # [features, classes]
    bias: np.ndarray  # [classes]

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        return softmax(features @ self.weights + self.bias)


@dataclass(frozen=True)
class StepReport:
    step: int
    train_accuracy: float
    cross_entropy: float
    validation_accuracy: float | None
    validation_count: int


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def accuracy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(probabilities, axis=1) == labels)) if len(labels) else float("nan")


def cross_entropy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    picked = probabilities[np.arange(len(labels)), labels]
    return float(-np.mean(np.log(np.maximum(picked, 1e-12))))


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


def train_head(
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    class_count: int,
    config: TrainingConfig,
    report: Callable[[StepReport], None] | None = None,
) -> Head:
    """Softmax regression by minibatch gradient descent, as retrain.py's final layer."""
    rng = np.random.default_rng(config.random_seed)
    # Evaluation draws from its own stream, so how often we evaluate never changes the weights.
    eval_rng = np.random.default_rng(None if config.random_seed is None else config.random_seed + 1)
    features = train_x.shape[1]
    weights = _truncated_normal(rng, (features, class_count), 0.001).astype(np.float32)
    bias = np.zeros(class_count, np.float32)
    head = Head(weights, bias)
    one_hot = np.eye(class_count, dtype=np.float32)
    for step in range(config.steps):
        batch = _sample(rng, len(train_y), config.train_batch_size)
        x, y = train_x[batch], train_y[batch]
        probabilities = head.probabilities(x)
        gradient = (probabilities - one_hot[y]) / len(y)
        head.weights -= config.learning_rate * (x.T @ gradient)
        head.bias -= config.learning_rate * gradient.sum(axis=0)
        last = step + 1 == config.steps
        if report and (step % config.eval_step_interval == 0 or last):
            train_probabilities = head.probabilities(x)
            val_accuracy, val_count = None, 0
            if len(val_y):
                chosen = _sample(eval_rng, len(val_y), config.validation_batch_size)
                val_accuracy = accuracy(head.probabilities(val_x[chosen]), val_y[chosen])
                val_count = len(chosen)
            report(
                StepReport(
                    step=step,
                    train_accuracy=accuracy(train_probabilities, y),
                    cross_entropy=cross_entropy(train_probabilities, y),
                    validation_accuracy=val_accuracy,
                    validation_count=val_count,
                )
            )
    return head
