"""Out-of-fold predictions: one fold assignment, stratified by class and fixed by the seed,
for the decisions and for patient-metadata fusion."""

import numpy as np

from retrain.decisions.out_of_fold import FOLDS, fold_of, out_of_fold_logits
from retrain.train.top_layer import TrainingConfig


def test_out_of_fold_logits_come_from_top_layers_that_never_saw_the_image():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 100)
    x = rng.normal(size=(100, 6)) + y[:, None]
    x[0] += 50  # an image no other image resembles: only a layer trained on it would be sure of it
    logits = out_of_fold_logits(x.astype(np.float32), y, 2, TrainingConfig(steps=200, random_seed=0))
    assert logits.shape == (100, 2)
    assert (logits.argmax(1) == y).mean() > 0.7


def test_each_class_is_dealt_evenly_round_the_folds():
    true = np.array([0] * 23 + [1] * 7 + [2] * 10)
    folds = fold_of(true, seed=3)
    for label in (0, 1, 2):
        counts = np.bincount(folds[true == label], minlength=FOLDS)
        assert counts.max() - counts.min() <= 1


def test_the_seed_fixes_the_folds_and_no_seed_is_seed_zero():
    true = np.arange(60) % 3
    assert (fold_of(true, 7) == fold_of(true, 7)).all()
    assert (fold_of(true, None) == fold_of(true, 0)).all()
    assert not (fold_of(true, 7) == fold_of(true, 8)).all()
