"""--fine_tune_layers N: train the last N blocks of the backbone together with the top layer.

A "block" is one MBConv block of EfficientNet-Lite, and the head 1x1 conv counts as the
last one: N = 1 tunes the head conv only, N = 2 also the last MBConv block, and so on.
The frozen part of the network is run once per image and its output (the activations
entering the first unfrozen block) is cached like a bottleneck, in its own namespace
that names the split point; every step then runs only the unfrozen blocks. The top
layer is first trained as usual on cached bottlenecks, then tuned jointly with the
blocks by Adam at --fine_tune_learning_rate. The tuned weights are written into the
backbone's own variables, so every export carries them, and the backbone's identity
changes, so nothing derived from the tuned network can reach the pretrained caches.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from retrain.augmentation import DistortedCopy, copies_to_make
from retrain.errors import UserError
from retrain.training import Head, TrainingConfig, accuracy, cross_entropy, mean_auc

FINE_TUNE_BATCH_SIZE = 32
EVALUATION_BATCH_SIZE = 64


@dataclass(frozen=True)
class FineTuneConfig:
    fine_tune_layers: int = 0  # 0 = off: the backbone stays frozen
    fine_tune_steps: int = 300
    fine_tune_learning_rate: float = 1e-4
    fine_tune_batch_size: int = FINE_TUNE_BATCH_SIZE


def check_fine_tuning(config: FineTuneConfig, backbone_config) -> None:
    """Fail on a flag mistake before any slow work; `backbone_config` is None for a TF Hub module."""
    layers = config.fine_tune_layers
    if layers < 0:
        raise UserError(f"--fine_tune_layers must be 0 (off) or more, got {layers}")
    if layers == 0:
        return
    if backbone_config is None or backbone_config.family != "efficientnet_lite":
        raise UserError("--fine_tune_layers: supported for efficientnet_lite0/1/2 only")
    from retrain.backbones.efficientnet_lite import tunable_block_count

    available = tunable_block_count(backbone_config)
    if layers > available:
        raise UserError(
            f"--fine_tune_layers {layers}: {backbone_config.name} has {available} blocks "
            f"({available - 1} MBConv blocks and the head conv)"
        )
    if config.fine_tune_steps < 1:
        raise UserError("--fine_tune_steps must be at least 1")
    if not config.fine_tune_learning_rate > 0:
        raise UserError("--fine_tune_learning_rate must be positive")
    if config.fine_tune_batch_size < 1:
        raise UserError("--fine_tune_batch_size must be at least 1")


def start_block(module, layers: int) -> int:
    """Index of the first unfrozen block; len(module.blocks) stands for the head conv."""
    return module.tunable_block_count - layers


@dataclass(frozen=True)
class ActivationSource:
    """Stands in for the backbone in compute_bottlenecks, so activations get the same
    cache, threading and bad-image handling as bottlenecks."""

    input_size: int
    feature_size: int  # the activations, flattened
    identity: str


def activation_shape(backbone, first: int) -> tuple[int, ...]:
    import tensorflow as tf

    size = backbone.input_size
    spec = tf.TensorSpec([1, size, size, 3], tf.float32)
    traced = tf.function(lambda images: backbone.module.activations_before(images, first)).get_concrete_function(spec)
    return tuple(traced.structured_outputs.shape[1:])


def open_activation_cache(bottleneck_dir: Path, backbone, first: int, feature_size: int):
    """Beside the bottlenecks of the same backbone, in a folder that names the split point."""
    from retrain.bottlenecks import BottleneckCache
    from retrain.images import PREPROCESSING_VERSION

    namespace = f"{backbone.identity}-p{PREPROCESSING_VERSION}-block{first}-input"
    return BottleneckCache(Path(bottleneck_dir).expanduser() / namespace, feature_size)


def cached_activations(paths: list[Path], backbone, first: int, bottleneck_dir: Path, progress=None, distortions=None):
    """The activations entering block `first` for every path (a distorted copy where
    `distortions` names one), from the cache where possible. Returns the Extraction
    (features flattened), the activation shape and the cache."""
    import tensorflow as tf

    from retrain.bottlenecks import compute_bottlenecks
    from retrain.feature_engines import TENSORFLOW_BATCH_SIZE, FeatureEngine

    shape = activation_shape(backbone, first)
    source = ActivationSource(backbone.input_size, int(np.prod(shape)), backbone.identity)
    cache = open_activation_cache(bottleneck_dir, backbone, first, source.feature_size)
    size = backbone.input_size
    frozen_part = tf.function(
        lambda images: backbone.module.activations_before(images, first),
        input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32)],
    )

    def run(pixels: np.ndarray) -> np.ndarray:
        return frozen_part(np.asarray(pixels, np.float32)).numpy().reshape(len(pixels), -1)

    engine = FeatureEngine("tensorflow", run)
    extraction = compute_bottlenecks(
        paths, source, cache, batch_size=TENSORFLOW_BATCH_SIZE, progress=progress, engine=engine, distortions=distortions
    )
    return extraction, shape, cache


def tuned_features(module, first: int, activations: np.ndarray) -> np.ndarray:
    """Bottlenecks of the (tuned) backbone from cached activations; kept in memory only."""
    import tensorflow as tf

    out = [
        module.features_from(tf.constant(activations[i : i + EVALUATION_BATCH_SIZE]), first).numpy()
        for i in range(0, len(activations), EVALUATION_BATCH_SIZE)
    ]
    return np.concatenate(out) if out else np.zeros((0, module.layers["head_bias"].shape[0]), np.float32)


@dataclass(frozen=True)
class FineTuneReport:
    step: int
    train_accuracy: float
    cross_entropy: float
    validation_accuracy: float | None
    validation_auc: float | None


def fine_tune(
    module,
    first: int,
    head: Head,
    train_a: np.ndarray,
    train_y: np.ndarray,
    val_a: np.ndarray,
    val_y: np.ndarray,
    training: TrainingConfig,
    config: FineTuneConfig,
    report: Callable[[FineTuneReport], None] | None = None,
) -> Head:
    """Tune blocks `first`.. of `module` (in place) and the head by Adam on cached activations.

    The top layer's own options apply (dropout, weight decay, label smoothing, class
    weights, seed); with early stopping on and a validation set, the best evaluated
    state by validation AUC is kept, the untuned one included, so tuning never leaves
    the model worse on validation than it found it."""
    import tensorflow as tf

    if training.random_seed is not None:
        tf.random.set_seed(training.random_seed)
    rng = np.random.default_rng(None if training.random_seed is None else training.random_seed + 2)
    class_count = head.weights.shape[1]
    tuned = module.unfreeze_from(first)
    weights = tf.Variable(head.weights, name="final_weights")
    bias = tf.Variable(head.bias, name="final_biases")
    params = [*tuned, weights, bias]
    slots = [(tf.Variable(tf.zeros_like(p)), tf.Variable(tf.zeros_like(p))) for p in params]
    adam_step = tf.Variable(0.0)
    targets = tf.constant(
        np.eye(class_count, dtype=np.float32) * (1 - training.label_smoothing) + training.label_smoothing / class_count
    )
    class_weight = tf.constant(
        np.ones(class_count, np.float32) if training.class_weights is None else np.asarray(training.class_weights, np.float32)
    )
    rate = config.fine_tune_learning_rate

    @tf.function(input_signature=[tf.TensorSpec([None, *train_a.shape[1:]], tf.float32), tf.TensorSpec([None], tf.int64)])
    def train_step(x, y):
        with tf.GradientTape() as tape:
            features = module.features_from(x, first)
            if training.dropout:
                features = tf.nn.dropout(features, training.dropout)
            logits = tf.matmul(features, weights) + bias
            per_example = tf.nn.softmax_cross_entropy_with_logits(tf.gather(targets, y), logits)
            loss = tf.reduce_mean(per_example * tf.gather(class_weight, y))
            loss += 0.5 * training.weight_decay * tf.reduce_sum(tf.square(weights))
        grads = tape.gradient(loss, params)
        adam_step.assign_add(1.0)
        correction = tf.sqrt(1 - 0.999**adam_step) / (1 - 0.9**adam_step)
        for p, g, (m, v) in zip(params, grads, slots):
            m.assign(0.9 * m + 0.1 * g)
            v.assign(0.999 * v + 0.001 * tf.square(g))
            p.assign_sub(rate * correction * m / (tf.sqrt(v) + 1e-7))
        return tf.nn.softmax(logits)

    def current_head(step=None) -> Head:
        return Head(weights.numpy().copy(), bias.numpy().copy(), step)

    def validation_scores():
        probabilities = current_head().probabilities(tuned_features(module, first, val_a))
        return accuracy(probabilities, val_y), mean_auc(probabilities, val_y)

    keep_best = training.early_stopping_patience > 0 and len(val_y) > 0
    best_score, best_state, evaluations_since_best = -np.inf, None, 0
    if keep_best:
        best_score = validation_scores()[1]
        best_state = ([p.numpy().copy() for p in params], None)
    for step in range(config.fine_tune_steps):
        batch = rng.integers(0, len(train_y), size=config.fine_tune_batch_size)
        probabilities = train_step(tf.constant(train_a[batch]), tf.constant(train_y[batch], tf.int64)).numpy()
        last = step + 1 == config.fine_tune_steps
        if not ((step + 1) % training.eval_step_interval == 0 or last):
            continue
        val_accuracy, val_auc = validation_scores() if len(val_y) else (None, None)
        if report:
            report(FineTuneReport(step + 1, accuracy(probabilities, train_y[batch]),
                                  cross_entropy(probabilities, train_y[batch]), val_accuracy, val_auc))
        if keep_best and not np.isnan(val_auc):
            if val_auc > best_score:
                best_score, best_state, evaluations_since_best = val_auc, ([p.numpy().copy() for p in params], step + 1), 0
            else:
                evaluations_since_best += 1
                if evaluations_since_best >= training.early_stopping_patience:
                    break
    if best_state is not None:
        for p, value in zip(params, best_state[0]):
            p.assign(value)
        return current_head(best_state[1] if best_state[1] is not None else 0)
    return current_head()


def tuned_identity(backbone, layers: int) -> str:
    """A new identity naming the tuned weights, so no cache keyed by the pretrained one is reused or polluted."""
    digest = hashlib.sha256()
    for name in backbone.module.block_layer_names(start_block(backbone.module, layers)):
        digest.update(name.encode())
        digest.update(backbone.module.layers[name].numpy().tobytes())
    return f"{backbone.identity}-ft{layers}-{digest.hexdigest()[:12]}"


def fine_tune_classifier(options, backbone, head: Head, split, training: TrainingConfig, log, warn, progress_factory=None):
    """The pipeline's fine-tuning stage: cache activations, tune, and return the tuned head
    with the tuned backbone's validation and test bottlenecks (in memory, never cached)."""
    from retrain import paths as default_paths

    config = options.fine_tuning
    module = backbone.module
    first = start_block(module, config.fine_tune_layers)
    copies = copies_to_make(options.distortion, options.distorted_copies)
    training_paths = [path for path, _ in split.training]
    # Training images, then their distorted copies, then validation and test: the rows tuning draws from are one slice.
    all_paths = training_paths + [path for path in training_paths for _ in range(copies)]
    all_paths += [path for group in (split.validation, split.testing) for path, _ in group]
    distortions = [None] * len(training_paths) + [DistortedCopy(options.distortion, i) for _ in training_paths for i in range(copies)]
    distortions += [None] * (len(all_paths) - len(distortions))
    bottleneck_dir = options.bottleneck_dir or default_paths.default_bottleneck_dir()
    progress = progress_factory(len(all_paths), "Activations") if progress_factory else None
    extraction, shape, cache = cached_activations(
        all_paths, backbone, first, bottleneck_dir, progress, distortions if copies else None
    )
    train_rows = len(training_paths) * (1 + copies)
    originals_ok = np.concatenate([extraction.ok[: len(training_paths)], extraction.ok[train_rows:]])
    if not originals_ok.all():
        failure = extraction.failures[0]
        raise UserError(f"{failure.path}: {failure.reason} (while caching activations for fine-tuning)")
    for failure in extraction.failures:
        warn(f"skipped a distorted copy of {failure.path}: {failure.reason}")
    last = len(module.blocks) - 1
    what = {last + 1: "the head conv", last: f"block {last} and the head conv"}.get(first, f"blocks {first}-{last} and the head conv")
    log(
        f"Fine-tuning {what} ({config.fine_tune_layers} of {module.tunable_block_count} blocks): activations "
        f"{'x'.join(map(str, shape))} per image, {extraction.reused} reused, {extraction.computed} computed "
        f"({extraction.features.nbytes / 1e6:.0f} MB in memory"
        + (f", {copies} distorted copies per training image" if copies else "") + f"); cache {cache.root}"
    )
    activations = extraction.features.reshape(-1, *shape)
    train_y = np.array([c for _, c in split.training], np.int64)
    train_y = np.concatenate([train_y, np.repeat(train_y, copies)])
    train_a = activations[:train_rows]
    if not extraction.ok[:train_rows].all():  # a distorted copy that failed is left out
        train_a, train_y = train_a[extraction.ok[:train_rows]], train_y[extraction.ok[:train_rows]]
    val_a = activations[train_rows : train_rows + len(split.validation)]
    test_a = activations[train_rows + len(split.validation) :]
    val_y = np.array([c for _, c in split.validation], np.int64)

    def report(r: FineTuneReport) -> None:
        line = f"Fine-tune step {r.step}: Train accuracy = {100 * r.train_accuracy:.1f}%, Cross entropy = {r.cross_entropy:f}"
        if r.validation_auc is not None:
            line += f", Validation accuracy = {100 * r.validation_accuracy:.1f}%, AUC = {r.validation_auc:.3f}"
        log(line)

    tuned_head = fine_tune(module, first, head, train_a, train_y, val_a, val_y, training, config, report)
    if tuned_head.step is not None:
        log(f"Fine-tuning: kept the state after step {tuned_head.step} (best validation AUC; 0 = untuned)")
    backbone.identity = tuned_identity(backbone, config.fine_tune_layers)
    return tuned_head, tuned_features(module, first, val_a), tuned_features(module, first, test_a)
