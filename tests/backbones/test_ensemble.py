"""The ensemble backbone: its members' features side by side, each member at its own input size."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from retrain.backbones import create_backbone
from retrain.backbones.ensemble import ensemble_backbone


def _member(size: int, tmp_path):
    return create_backbone("efficientnet_lite0", tmp_path, random_weights=True, image_size=size)


def _images(size: int, count: int = 2) -> np.ndarray:
    return np.random.default_rng(size).uniform(0, 255, (count, size, size, 3)).astype(np.float32)


def test_the_features_are_the_members_features_side_by_side(tmp_path):
    first, second = _member(32, tmp_path), _member(32, tmp_path)
    backbone = ensemble_backbone([first, second])
    images = _images(32)
    expected = np.concatenate([first.module.features(images), second.module.features(images)], axis=1)
    assert backbone.feature_size == 2560 and backbone.input_size == 32
    np.testing.assert_allclose(backbone.module.features(images), expected, rtol=1e-5, atol=1e-5)


def test_a_smaller_member_sees_the_image_resized_bilinearly_inside_the_model(tmp_path):
    small, large = _member(32, tmp_path), _member(64, tmp_path)
    backbone = ensemble_backbone([small, large])
    images = _images(64)
    resized = tf.image.resize(images, [32, 32], "bilinear")
    expected = np.concatenate([small.module.features(resized), large.module.features(images)], axis=1)
    assert backbone.input_size == 64
    np.testing.assert_allclose(backbone.module.features(images), expected, rtol=1e-5, atol=1e-5)


def test_members_of_one_size_have_a_feature_map_and_mixed_sizes_have_none(tmp_path):
    first, second = _member(32, tmp_path), _member(32, tmp_path)
    same = ensemble_backbone([first, second])
    images = _images(32)
    feature_map = same.module.feature_map(images)
    assert same.has_feature_map and feature_map.shape[-1] == 2560
    np.testing.assert_allclose(tf.reduce_mean(feature_map, axis=[1, 2]), same.module.features(images), atol=1e-5)
    assert not ensemble_backbone([first, _member(64, tmp_path)]).has_feature_map


def test_the_identity_names_the_members_and_their_sizes(tmp_path):
    first, second = _member(32, tmp_path), _member(32, tmp_path)
    identity = ensemble_backbone([first, second]).identity
    assert identity == ensemble_backbone([first, second]).identity and identity.startswith("ensemble-")
    assert identity != ensemble_backbone([second, first]).identity
    resized = _member(32, tmp_path)
    resized.identity, resized.config = first.identity, type(first.config)(**{**first.config.__dict__, "input_size": 64})
    assert identity != ensemble_backbone([resized, second]).identity


def test_members_that_normalise_differently_are_refused(tmp_path):
    from retrain.errors import UserError

    other = _member(32, tmp_path)
    other.config = type(other.config)(**{**other.config.__dict__, "preprocessing": "x / 127.5 - 1"})
    with pytest.raises(UserError, match="normalise their pixels differently"):
        ensemble_backbone([_member(32, tmp_path), other])
