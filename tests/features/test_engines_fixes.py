"""The LiteRT engine falls back to TensorFlow only for a backbone that does not convert,
and says why; any other error is a bug and is raised."""

from dataclasses import dataclass
from types import SimpleNamespace

import pytest

from retrain.features.engines import create_engine
from tests.features.test_engines import PythonOpBackbone


@dataclass
class BuggyBackbone:
    identity: str = "buggy-backbone"
    input_size: int = 8
    feature_size: int = 3

    def __post_init__(self):
        def features(images):
            raise AttributeError("a bug in the backbone's code")

        self.module = SimpleNamespace(features=features)


def test_a_bug_in_the_backbone_is_raised_not_hidden_by_a_fallback_to_tensorflow():
    with pytest.raises(AttributeError, match="a bug in the backbone"):
        create_engine(BuggyBackbone())


def test_the_fallback_note_says_why_the_backbone_does_not_convert():
    engine = create_engine(PythonOpBackbone(identity="python-op-why"))
    assert engine.name == "tensorflow"
    assert "LiteRT unavailable: python-op-why does not convert to LiteRT (ConverterError: " in engine.note
    assert "\n" not in engine.note
