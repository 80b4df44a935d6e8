from pathlib import Path

import numpy as np
import pytest
import sklearn.datasets
from click.testing import CliRunner

from retrain.backbones import REGISTRY, efficientnet_lite
from retrain.backbones.efficientnet_lite import (
    block_plan,
    convert_state_dict,
    round_filters,
)
from retrain.cli import label_image

SAMPLE_PHOTOS = Path(sklearn.datasets.__file__).parent / "images"


def test_lite0_block_plan_has_sixteen_blocks_with_residuals_where_shapes_match():
    blocks = block_plan(1.0, 1.0)
    assert len(blocks) == 16
    assert [b.channels_out for b in blocks][-1] == 320
    assert sum(b.residual for b in blocks) == 9


def test_width_rounding_follows_efficientnet():
    assert round_filters(32, 1.1) == 32
    assert round_filters(40, 1.1) == 48
    assert round_filters(320, 1.1) == 352


def test_batch_norm_is_folded_into_the_convolution_exactly():
    rng = np.random.default_rng(0)
    blocks = block_plan(1.0, 1.0)
    state = {}

    def conv(name, out, inp, k):
        state[f"{name}.weight"] = rng.normal(size=(out, inp, k, k)).astype(np.float32)

    def bn(name, c):
        state[f"{name}.weight"] = rng.uniform(0.5, 2, c).astype(np.float32)
        state[f"{name}.bias"] = rng.normal(size=c).astype(np.float32)
        state[f"{name}.running_mean"] = rng.normal(size=c).astype(np.float32)
        state[f"{name}.running_var"] = rng.uniform(0.5, 2, c).astype(np.float32)

    conv("_conv_stem", 32, 3, 3)
    bn("_bn0", 32)
    for i, b in enumerate(blocks):
        mid = b.channels_in * b.expand
        if b.expand != 1:
            conv(f"_blocks.{i}._expand_conv", mid, b.channels_in, 1)
            bn(f"_blocks.{i}._bn0", mid)
        conv(f"_blocks.{i}._depthwise_conv", mid, 1, b.kernel)
        bn(f"_blocks.{i}._bn1", mid)
        conv(f"_blocks.{i}._project_conv", b.channels_out, mid, 1)
        bn(f"_blocks.{i}._bn2", b.channels_out)
    conv("_conv_head", 1280, 320, 1)
    bn("_bn1", 1280)
    state["_fc.weight"] = rng.normal(size=(1000, 1280)).astype(np.float32)
    state["_fc.bias"] = rng.normal(size=1000).astype(np.float32)

    layers = convert_state_dict(state, blocks)
    # The stem on one input patch: conv then batch norm, against the folded kernel and bias.
    patch = rng.normal(size=(3, 3, 3))
    conv_out = np.einsum("oikl,kli->o", state["_conv_stem.weight"], patch)
    g, beta, m, v = (state[f"_bn0.{k}"] for k in ("weight", "bias", "running_mean", "running_var"))
    expected = (conv_out - m) / np.sqrt(v + 1e-3) * g + beta
    folded = np.einsum("klio,kli->o", layers["stem_kernel"], patch) + layers["stem_bias"]
    np.testing.assert_allclose(folded, expected, rtol=1e-4, atol=1e-4)
    assert layers["block1_depthwise_kernel"].shape == (3, 3, 96, 1)


def _stock_predictions(photo: str) -> list[str]:
    result = CliRunner().invoke(label_image, ["--image", str(SAMPLE_PHOTOS / photo)])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stdout.splitlines() if "(score=" in line]
    assert len(lines) == 5
    return [line.split(" (score=")[0] for line in lines]


@pytest.mark.slow
def test_stock_imagenet_model_sees_a_daisy_in_the_flower_photo():
    assert _stock_predictions("flower.jpg")[0] == "daisy"


@pytest.mark.slow
def test_stock_imagenet_model_sees_a_bell_cote_in_the_china_photo():
    assert "bell cote" in _stock_predictions("china.jpg")


def test_features_are_1280_wide_and_differ_between_images(backbone):
    rng = np.random.default_rng(1)
    images = rng.uniform(0, 255, size=(2, 224, 224, 3)).astype(np.float32)
    features = backbone.module.features(images).numpy()
    assert features.shape == (2, 1280)
    assert not np.allclose(features[0], features[1])


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
    return float(Path(path).read_bytes()[0])
