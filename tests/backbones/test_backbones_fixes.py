"""A TF Hub backbone's identity names its input size; real errors are not disguised as user
errors; the EfficientNet-Lite conversion cache is checked against the weights file."""

import numpy as np
import pytest

from retrain.backbones import REGISTRY, create_hub_backbone, efficientnet_lite, tfhub
from tests.backbones.test_backbones import _save_feature_vector_module


def test_a_tf_hub_module_of_any_size_has_one_identity_per_image_size(tmp_path):
    module = str(_save_feature_vector_module(tmp_path / "any_size", size=None))
    small, large = create_hub_backbone(module, image_size=40), create_hub_backbone(module, image_size=48)
    assert small.identity != large.identity
    assert small.identity.endswith("-40px") and large.identity.endswith("-48px")
    assert create_hub_backbone(module, image_size=40).identity == small.identity


def test_a_bug_while_probing_a_tf_hub_module_keeps_its_traceback(tmp_path, monkeypatch):
    module = str(_save_feature_vector_module(tmp_path / "fixed", size=32))

    def broken(self, images):
        raise AttributeError("a bug, not a bad module")

    monkeypatch.setattr(tfhub.HubFeatureVector, "features", broken)
    with pytest.raises(AttributeError, match="a bug"):
        create_hub_backbone(module)


def test_a_conversion_cache_from_other_weights_is_converted_again_with_one_warning(tmp_path, monkeypatch):
    config = REGISTRY["efficientnet_lite0"]
    weights = tmp_path / "efficientnet-lite0-test.pth"
    monkeypatch.setattr(efficientnet_lite, "load_state_dict", lambda path: {"value": _first_byte(path)})
    monkeypatch.setattr(efficientnet_lite, "convert_state_dict",
                        lambda state, blocks: {"stem_kernel": np.full(1, state["value"], np.float32)})
    warnings = []
    weights.write_bytes(b"\x01" * 64)
    first, first_digest = efficientnet_lite.converted_layers(config, tmp_path, [], warnings.append)
    weights.write_bytes(b"\x02" * 64)  # same name, same size: the same cache file name
    second, second_digest = efficientnet_lite.converted_layers(config, tmp_path, [], warnings.append)
    assert (first["stem_kernel"][0], second["stem_kernel"][0]) == (1.0, 2.0)
    assert first_digest != second_digest
    (line,) = warnings
    assert "converting again" in line and str(weights) in line
    again, _ = efficientnet_lite.converted_layers(config, tmp_path, [], warnings.append)
    assert again["stem_kernel"][0] == 2.0 and len(warnings) == 1


def _first_byte(path) -> float:
    """The first byte of the stand-in weights file: what its 'conversion' holds."""
    from pathlib import Path

    return float(Path(path).read_bytes()[0])
