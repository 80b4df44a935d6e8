"""Out-of-fold predictions: each training image scored by a model fitted on the other folds,
what held-out images of the same source would score. The decisions use them where the
validation set is too small (calibration, operating points, the out-of-distribution
threshold) and patient-metadata fusion to learn from logits the image model did not fit.
One fold assignment for all of them: stratified by class, fixed by the seed."""

from __future__ import annotations

import dataclasses

import numpy as np

from retrain.train.top_layer import TrainingConfig, train_top_layer

FOLDS = 5


def fold_of(true: np.ndarray, seed: int | None, folds: int = FOLDS) -> np.ndarray:
    """Each image's fold: every class dealt round the folds in a shuffled order."""
    true = np.asarray(true)
    assigned = np.zeros(len(true), np.int64)
    rng = np.random.default_rng(0 if seed is None else seed)
    for label in np.unique(true):
        members = rng.permutation(np.flatnonzero(true == label))
        assigned[members] = np.arange(len(members)) % folds
    return assigned


def out_of_fold_logits(x: np.ndarray, true: np.ndarray, class_count: int, config: TrainingConfig,
                       folds: int = FOLDS) -> np.ndarray:
    """Each image's logits from a top layer trained on the other folds, with `config` but for
    its full number of steps: no early stopping, since the held fold must not choose the step."""
    assigned = fold_of(true, config.random_seed, folds)
    logits = np.zeros((len(true), class_count), np.float32)
    settings = dataclasses.replace(config, early_stopping_patience=0)
    empty_x, empty_y = np.zeros((0, x.shape[1]), np.float32), np.zeros(0, np.int64)
    for fold in range(folds):
        held = assigned == fold
        if not held.any() or len(np.unique(true[~held])) < 2:
            continue
        layer = train_top_layer(x[~held], true[~held], empty_x, empty_y, class_count, settings)
        logits[held] = layer.logits(x[held])
    return logits
