"""An ensemble's backbone (the members' features side by side) and its top layer (the mean of the
members' logits), on random-weight EfficientNet-Lite0 members."""

import numpy as np
import tensorflow as tf

from retrain.api.ensemble import mean_of_logits
from retrain.backbones import create_backbone
from retrain.backbones.ensemble import ensemble_backbone
from retrain.train.top_layer import TopLayer


def _member(size: int, colour_constancy: bool = False):
    return create_backbone("efficientnet_lite0", "/nonexistent", random_weights=True, image_size=size,
                           colour_constancy=colour_constancy)


def _pixels(size: int, count: int = 2) -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 255, (count, size, size, 3)).astype(np.float32)


def test_the_features_are_each_members_features_side_by_side_smaller_members_resized_in_the_graph():
    big, small = _member(64), _member(32, colour_constancy=True)
    combined = ensemble_backbone([big, small])
    pixels = _pixels(64)
    want = np.concatenate([big.module.features(pixels).numpy(),
                           small.module.features(tf.image.resize(pixels, [32, 32], "bilinear")).numpy()], axis=1)
    assert combined.input_size == 64 and combined.feature_size == 2560
    np.testing.assert_allclose(combined.module.features(pixels).numpy(), want, rtol=1e-5, atol=1e-5)
    assert not combined.has_feature_map  # maps of two sizes cannot be put side by side


def test_members_of_one_size_give_a_feature_map_whose_mean_is_the_features():
    combined = ensemble_backbone([_member(32), _member(32)])
    pixels = _pixels(32)
    assert combined.has_feature_map
    np.testing.assert_allclose(tf.reduce_mean(combined.module.feature_map(pixels), axis=[1, 2]).numpy(),
                               combined.module.features(pixels).numpy(), rtol=1e-5, atol=1e-5)


def test_the_identity_names_the_members_and_their_sizes():
    a, b = _member(32), _member(32)
    assert ensemble_backbone([a, b]).identity == ensemble_backbone([a, b]).identity
    assert ensemble_backbone([a, b]).identity != ensemble_backbone([b, a]).identity
    assert ensemble_backbone([a, b]).identity.startswith("ensemble-")


def test_the_top_layer_gives_the_mean_of_the_members_logits_in_the_trees_class_order():
    rng = np.random.default_rng(1)
    first = TopLayer(rng.normal(size=(4, 3)).astype(np.float32), rng.normal(size=3).astype(np.float32))
    second = TopLayer(rng.normal(size=(5, 3)).astype(np.float32), rng.normal(size=3).astype(np.float32))
    labels = ["a", "b", "c"]
    layer = mean_of_logits([first, second], [("a", "b", "c"), ("c", "a", "b")], labels)
    x1, x2 = rng.normal(size=(6, 4)), rng.normal(size=(6, 5))
    second_in_order = second.logits(x2)[:, [1, 2, 0]]  # its columns are c, a, b
    np.testing.assert_allclose(layer.logits(np.concatenate([x1, x2], axis=1)),
                               (first.logits(x1) + second_in_order) / 2, rtol=1e-5, atol=1e-5)
