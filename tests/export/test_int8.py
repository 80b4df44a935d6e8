"""Rounding EfficientNet-Lite weights to int8 with calibration images (GPTQ + bias correction):
the grid the converter keeps, the rounding itself, and what it buys on the real backbone."""

from pathlib import Path

import numpy as np
import pytest
import sklearn.datasets
from PIL import Image

from retrain.backbones.efficientnet_lite import EfficientNetLite
from retrain.export.int8 import (
    converter_quantizes,
    gptq_grid,
    int8_grid,
    int8_ready_layers,
)
from retrain.export.saved_model_reading import lite_config
from tests.conftest import as_card

SAMPLE_PHOTOS = Path(sklearn.datasets.__file__).parent / "images"


def _steps(kernel: np.ndarray, depthwise: bool, scale_from: np.ndarray) -> np.ndarray:
    """The kernel in units of the converter's per-channel step (max |w| / 127 of `scale_from`)."""
    axis = 2 if depthwise else 3
    other = tuple(a for a in range(4) if a != axis)
    return kernel / (np.abs(scale_from).max(axis=other, keepdims=True) / 127)


@pytest.mark.parametrize("shape, depthwise", [((3, 3, 8, 16), False), ((1, 1, 24, 12), False), ((5, 5, 10, 1), True)])
def test_gptq_keeps_every_channel_on_the_converters_grid(shape, depthwise):
    rng = np.random.default_rng(0)
    kernel = rng.normal(size=shape).astype(np.float32)
    width = shape[0] * shape[1] * (1 if depthwise else shape[2])
    inputs = rng.normal(size=(500, width)) @ rng.normal(size=(width, width))
    moments = np.stack([inputs.T @ inputs] * shape[2]) if depthwise else inputs.T @ inputs
    rounded = gptq_grid(kernel, depthwise, moments)
    steps = _steps(rounded, depthwise, kernel)
    np.testing.assert_allclose(steps, np.round(steps), atol=1e-3)
    axis = 2 if depthwise else 3
    other = tuple(a for a in range(4) if a != axis)
    # The largest weight of each channel stays at 127 steps, so the converter derives the same scale.
    np.testing.assert_allclose(np.abs(steps).max(axis=other), 127, atol=1e-3)


def test_gptq_with_uncorrelated_inputs_is_round_to_nearest():
    kernel = np.random.default_rng(1).normal(size=(3, 3, 4, 8)).astype(np.float32)
    np.testing.assert_array_equal(gptq_grid(kernel, False, np.eye(36)), int8_grid(kernel, False))


def test_gptq_moves_the_layer_output_less_than_round_to_nearest():
    rng = np.random.default_rng(2)
    kernel = rng.normal(size=(1, 1, 64, 32)).astype(np.float32)
    inputs = rng.normal(size=(2000, 64)) @ rng.normal(size=(64, 64)) * rng.uniform(0.1, 3, 64)
    weights = kernel.reshape(64, 32)

    def output_error(rounded):
        return np.linalg.norm(inputs @ (rounded.reshape(64, 32) - weights))

    assert output_error(gptq_grid(kernel, False, inputs.T @ inputs)) < 0.8 * output_error(int8_grid(kernel, False))


def test_the_converter_keeps_prepared_kernels_exactly(tmp_path):
    """The whole method rests on this: TFLite's per-channel quantization of a kernel already on
    its grid gives back the same values, in dynamic and in int8 mode."""
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    rng = np.random.default_rng(3)
    pointwise = gptq_grid(rng.normal(size=(1, 1, 32, 64)).astype(np.float32), False, np.eye(32) + 0.5)
    depthwise = gptq_grid(rng.normal(size=(5, 5, 64, 1)).astype(np.float32), True, np.stack([np.eye(25) + 0.3] * 64))

    class Tiny(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1, 8, 8, 32], tf.float32)])
        def serve(self, x):
            x = tf.nn.relu6(tf.nn.conv2d(x, pointwise, 1, "SAME") + 0.1)
            return {"out": tf.nn.depthwise_conv2d(x, depthwise, [1, 1, 1, 1], "SAME") + 0.1}

    tiny = Tiny()
    tf.saved_model.save(tiny, str(tmp_path / "tiny"), signatures={"serving_default": tiny.serve})
    for mode in ("dynamic", "int8"):
        converter = tf.lite.TFLiteConverter.from_saved_model(str(tmp_path / "tiny"))
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if mode == "int8":
            converter.representative_dataset = lambda: ([rng.uniform(0, 1, (1, 8, 8, 32)).astype(np.float32)] for _ in range(8))
        interpreter = Interpreter(model_content=converter.convert())
        found = {}
        for detail in interpreter.get_tensor_details():
            if detail["dtype"] == np.int8 and len(detail["shape"]) == 4:
                try:
                    values = interpreter.get_tensor(detail["index"]).astype(np.float64)
                except ValueError:
                    continue  # an activation, not a constant
                params = detail["quantization_parameters"]
                shape = [1, 1, 1, 1]
                shape[params["quantized_dimension"]] = -1
                # TFLite keeps conv kernels as (out, kh, kw, in) and depthwise as (1, kh, kw, C).
                found[tuple(detail["shape"])] = (values * params["scales"].reshape(shape)).transpose(1, 2, 3, 0)
        np.testing.assert_allclose(found[(64, 1, 1, 32)], pointwise, rtol=0, atol=1e-6 * np.abs(pointwise).max())
        np.testing.assert_allclose(found[(1, 5, 5, 64)], depthwise, rtol=0, atol=1e-6 * np.abs(depthwise).max())


def _photo_crops(count: int, first: int) -> list[np.ndarray]:
    """224x224 crops at different places and scales of the two sample photos: natural images."""
    crops = []
    photos = [Image.open(SAMPLE_PHOTOS / name).convert("RGB") for name in ("china.jpg", "flower.jpg")]
    for i in range(first, first + count):
        photo = photos[i % 2]
        side = 160 + 37 * (i % 7)
        left, top = (53 * i) % (photo.width - side), (31 * i) % (photo.height - side)
        crop = photo.crop((left, top, left + side, top + side)).resize((224, 224), Image.BILINEAR)
        crops.append(np.asarray(crop, dtype=np.float32))
    return crops


@pytest.fixture(scope="module")
def prepared(backbone):
    calibration = _photo_crops(8, first=0)
    return {mode: int8_ready_layers(backbone.module, calibration, mode) for mode in ("dynamic", "int8")}


def _feature_error(backbone, layers) -> float:
    images = np.stack(_photo_crops(8, first=100))
    reference = backbone.module.features(images).numpy()
    features = EfficientNetLite(layers, backbone.module.blocks, name="candidate").features(images).numpy()
    return float(np.mean(np.linalg.norm(features - reference, axis=1) / np.linalg.norm(reference, axis=1)))


@pytest.mark.slow
def test_prepared_weights_keep_features_closer_to_float_than_round_to_nearest(backbone, prepared):
    reference = {name: v.numpy() for name, v in backbone.module.layers.items()}
    nearest = {
        name: int8_grid(value, "_depthwise_" in name) if name.endswith("_kernel") and not name.startswith("classifier") else value
        for name, value in reference.items()
    }
    nearest_error, prepared_error = _feature_error(backbone, nearest), _feature_error(backbone, prepared["int8"].layers)
    assert prepared_error < 0.6 * nearest_error, (prepared_error, nearest_error)


@pytest.mark.slow
def test_dynamic_mode_leaves_the_kernels_the_converter_keeps_in_float(backbone, prepared):
    reference = {name: v.numpy() for name, v in backbone.module.layers.items()}
    layers = prepared["dynamic"].layers
    small = [name for name in reference if name.endswith("_kernel") and not converter_quantizes(reference[name], "dynamic")]
    assert "stem_kernel" in small and "block0_depthwise_kernel" in small
    for name in small:
        np.testing.assert_array_equal(layers[name], reference[name])
    assert not np.array_equal(layers["head_kernel"], reference["head_kernel"])
    # Nothing before block 1's expand conv is quantized, so nothing there needs correcting; after
    # it, even a float layer's bias absorbs the shift of the quantized layers before it.
    assert "block1_expand_kernel" not in small and "block1_depthwise_kernel" in small
    for name in ("stem_bias", "block0_depthwise_bias", "block0_project_bias"):
        np.testing.assert_array_equal(layers[name], reference[name])
    assert not np.array_equal(layers["block1_depthwise_bias"], reference["block1_depthwise_bias"])
    assert prepared["dynamic"].images == 8


def test_only_efficientnet_lite_models_are_prepared():
    assert lite_config(as_card({"labels": ["a"], "architecture": "efficientnet_lite0"})).name == "efficientnet_lite0"
    assert lite_config(as_card({"labels": ["a"], "architecture": "mobilenet_v2_1.0_224"})) is None
    assert lite_config(as_card({"labels": ["a"], "architecture": "tfhub_module"})) is None
    assert lite_config(as_card({"labels": ["a"]})) is None


@pytest.mark.slow
def test_rounding_starts_from_the_saved_models_own_weights(backbone, tmp_path):
    """A fine-tuned model's SavedModel holds weights that differ from the stock backbone's:
    those are the ones rounded, and the rounded model still classifies like the original."""
    import tensorflow as tf

    from retrain.backbones import Backbone
    from retrain.export.graph import ServingModel, export_saved_model, model_card
    from retrain.export.int8 import write_int8_ready_saved_model
    from retrain.train.top_layer import TopLayer

    layers = {name: v.numpy() for name, v in backbone.module.layers.items()}
    layers["head_kernel"] = layers["head_kernel"] * np.linspace(0.5, 1.5, layers["head_kernel"].shape[-1], dtype=np.float32)
    tuned = Backbone(backbone.config, backbone.identity, EfficientNetLite(layers, backbone.module.blocks, name="tuned"))
    rng = np.random.default_rng(4)
    head = TopLayer(rng.normal(0, 0.05, (1280, 2)).astype(np.float32), np.zeros(2, np.float32))
    metadata = model_card(tuned, ["a", "b"], "final_result")
    export_saved_model(ServingModel(tuned, head, "final_result"), metadata, tmp_path / "tuned")
    ready = write_int8_ready_saved_model(tmp_path / "tuned", metadata, _photo_crops(4, first=0), "int8", tmp_path / "ready")
    assert ready.images == 4

    rounded = tf.saved_model.load(str(tmp_path / "ready"))
    head_kernel = rounded.backbone.layers["head_kernel"].numpy()
    step = np.abs(layers["head_kernel"]).max(axis=(0, 1, 2)) / 127
    assert np.all(np.abs(head_kernel - layers["head_kernel"]).max(axis=(0, 1, 2)) <= 4 * step)
    stock = backbone.module.layers["head_kernel"].numpy()
    assert np.abs(head_kernel - stock).max() > 10 * step.max()
    images = tf.constant(np.stack(_photo_crops(4, first=50)))
    tuned_model = tf.saved_model.load(str(tmp_path / "tuned"))
    original = tuned_model.serve(images)["final_result"].numpy()
    np.testing.assert_allclose(rounded.serve(images)["final_result"].numpy(), original, atol=0.05)
