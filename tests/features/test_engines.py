"""The feature engines: LiteRT where the backbone converts and computes the same features,
TensorFlow otherwise, with a note saying why; any other error is a bug and is raised."""

from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import pytest

from retrain.features import engines as feature_engines
from retrain.features.cache import open_cache
from retrain.features.engines import EngineUnavailable, create_engine
from retrain.features.extraction import compute_bottlenecks


@dataclass
class PythonOpBackbone:
    """Features computed by a Python op, which LiteRT's built-in ops cannot run."""

    identity: str = "python-op-backbone"
    input_size: int = 8
    feature_size: int = 3

    def __post_init__(self):
        import tensorflow as tf

        def features(images):
            mean = tf.numpy_function(lambda x: x.mean(axis=(1, 2)).astype(np.float32), [images], tf.float32)
            return tf.reshape(mean, [-1, 3])

        self.module = SimpleNamespace(features=features)


@dataclass
class ChannelMaxBackbone:
    identity: str
    input_size: int = 8
    feature_size: int = 3

    def __post_init__(self):
        import tensorflow as tf

        self.module = SimpleNamespace(features=lambda images: tf.reduce_max(images, axis=[1, 2]))


@dataclass
class BuggyBackbone:
    identity: str = "buggy-backbone"
    input_size: int = 8
    feature_size: int = 3

    def __post_init__(self):
        def features(images):
            raise AttributeError("a bug in the backbone's code")

        self.module = SimpleNamespace(features=features)


def test_auto_falls_back_to_tensorflow_when_the_backbone_does_not_convert(make_tree, tmp_path):
    backbone = PythonOpBackbone()
    engine = create_engine(backbone)
    assert engine.name == "tensorflow" and "LiteRT unavailable" in engine.note
    paths = sorted(make_tree({"red": 2, "blue": 2}).rglob("*.jpg"))
    result = compute_bottlenecks(paths, backbone, open_cache(tmp_path / "bn", backbone))
    assert result.engine == "tensorflow" and result.computed == 4
    assert result.features[0, 2] > 150 and result.features[-1, 0] > 150  # blue first, red last


def test_asking_for_litert_where_it_cannot_run_is_an_error():
    with pytest.raises(EngineUnavailable, match="does not convert"):
        create_engine(PythonOpBackbone(identity="python-op-strict"), "litert")


def test_a_conversion_that_computes_something_else_is_caught_before_any_feature_is_cached(monkeypatch):
    """The probe image compares LiteRT with TensorFlow: a wrong conversion never reaches the cache."""
    import tensorflow as tf

    backbone = ChannelMaxBackbone(identity="channel-max-miscompiled")
    wrong = ChannelMaxBackbone(identity="channel-max-stand-in")
    wrong.module = SimpleNamespace(features=lambda images: tf.reduce_min(images, axis=[1, 2]))
    real_convert = feature_engines._convert
    monkeypatch.setattr(feature_engines, "_convert", lambda b: real_convert(wrong))
    engine = create_engine(backbone)
    assert engine.name == "tensorflow" and "differ from TensorFlow" in engine.note


def test_litert_and_tensorflow_agree_on_a_convertible_backbone():
    backbone = ChannelMaxBackbone(identity="channel-max-ok")
    pixels = np.random.default_rng(3).integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    litert, tensorflow = create_engine(backbone, "litert"), create_engine(backbone, "tensorflow")
    assert litert.per_image and not tensorflow.per_image
    np.testing.assert_allclose(litert.run(pixels), tensorflow.run(pixels), rtol=1e-6)
    np.testing.assert_allclose(litert.run(pixels), pixels.max(axis=(1, 2)), rtol=1e-6)


def test_a_bug_in_the_backbone_is_raised_not_hidden_by_a_fallback_to_tensorflow():
    with pytest.raises(AttributeError, match="a bug in the backbone"):
        create_engine(BuggyBackbone())


def test_the_fallback_note_says_why_the_backbone_does_not_convert():
    engine = create_engine(PythonOpBackbone(identity="python-op-why"))
    assert engine.name == "tensorflow"
    assert "LiteRT unavailable: python-op-why does not convert to LiteRT (ConverterError: " in engine.note
    assert "\n" not in engine.note
