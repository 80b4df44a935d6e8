"""Joining patient metadata (age, sex, site, encoded by retrain.patient.table) to the
image model, after the image model is trained.

Both fusions end as one linear layer over [pooled image features, encoded metadata], so
every export takes the same two inputs whichever is used:

- `shift`: the image model stays as trained; a small second stage learns, from the image
  logits and the metadata, how far the metadata should move each class's logit (and how
  far to trust the image logits). It is fitted on out-of-fold image logits: logits of
  images the image top layer never trained on, so it does not learn to over-trust them.
- `concat`: the top layer is trained afresh on the image features and the metadata side
  by side.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from retrain.decisions.out_of_fold import out_of_fold_logits
from retrain.features.arrays import Arrays
from retrain.reporter import Reporter
from retrain.train.fitting import log_validation_auc
from retrain.train.top_layer import TopLayer, TrainingConfig, train_top_layer

FUSIONS = ("shift", "concat")
# The second stage: a handful of weights per class, so Adam converges well within these steps.
SECOND_STAGE = TrainingConfig(steps=2000, learning_rate=0.01, train_batch_size=100, optimizer="adam",
                              learning_rate_schedule="cosine", weight_decay=1e-3)


def fuse(kind: str, image_layer: TopLayer, train_x: np.ndarray, train_m: np.ndarray, train_y: np.ndarray,
         val_x: np.ndarray, val_m: np.ndarray, val_y: np.ndarray, class_count: int, config: TrainingConfig,
         logits_in_sample: bool = False) -> TopLayer:
    """The image top layer extended to take patient metadata. `config` is the image top layer's training
    configuration (for `concat`, and the out-of-fold top layers of `shift`). With
    `logits_in_sample` (after fine-tuning, whose folds would each cost a fine-tune) the
    second stage learns from the image top layer's own logits on its training images."""
    if kind == "concat":
        layer = train_top_layer(np.hstack([train_x, train_m]), train_y, np.hstack([val_x, val_m]), val_y, class_count, config)
        features = train_x.shape[1]
        return TopLayer(layer.weights[:features], layer.bias, layer.step, layer.weights[features:])
    if kind != "shift":
        raise ValueError(f"unknown fusion {kind!r}")
    logits = image_layer.logits(train_x) if logits_in_sample else out_of_fold_logits(train_x, train_y, class_count, config)
    second = train_top_layer(np.hstack([logits, train_m]), train_y, np.zeros((0, class_count + train_m.shape[1]), np.float32),
                        np.zeros(0, np.int64), class_count,
                        dataclasses.replace(SECOND_STAGE, random_seed=config.random_seed, class_weights=config.class_weights))
    scale, shift = second.weights[:class_count], second.weights[class_count:]
    return TopLayer(image_layer.weights @ scale, image_layer.bias @ scale + second.bias, image_layer.step, shift)


def fuse_patient_metadata(layer: TopLayer, fusion: str, labels: list[str], training: Arrays, validation: Arrays,
                          config: TrainingConfig, tuned: bool, reporter: Reporter) -> TopLayer:
    """The top layer extended to take patient metadata, its validation AUC logged; after fine-tuning
    (`tuned`: `training` holds the tuned features) its logits on the training images are in-sample."""
    fused = fuse(fusion, layer, training.x, training.patient, training.y, validation.x, validation.patient,
                 validation.y, len(labels), config, logits_in_sample=tuned)
    log_validation_auc("Validation with patient metadata", fused, validation, labels, reporter)
    return fused
