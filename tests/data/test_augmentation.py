"""Cached augmentation (distorted copies of training images) and test-time augmentation."""

import csv
import hashlib
import re
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from retrain.cli import evaluate, label_image, retrain
from retrain.data.augmentation import AugmentationDraw, CopyAugmentation, DistortedCopy
from retrain.data.images import load_image
from retrain.features.cache import BottleneckCache, open_cache
from retrain.features.distorted_copies import add_distorted_copies
from retrain.features.extraction import compute_bottlenecks
from retrain.predict.loaded_model import LoadedModel
from retrain.predict.prediction import with_flip_tta
from tests.conftest import write_colour_tree

FLIPS = CopyAugmentation(flip_left_right=True, flip_up_down=True, rotate90=True)


@dataclass
class QuadrantBackbone:
    """A fast stand-in backbone whose features are the mean colour of each quadrant, so
    they change when an image is flipped, turned, cropped or brightened."""

    identity: str = "quadrant-v1"
    input_size: int = 8
    feature_size: int = 12

    def __post_init__(self):
        import tensorflow as tf

        def features(images):
            quadrants = [images[:, :4, :4], images[:, :4, 4:], images[:, 4:, :4], images[:, 4:, 4:]]
            return tf.concat([tf.reduce_mean(q, axis=[1, 2]) for q in quadrants], axis=1)

        self.module = SimpleNamespace(features=features)


def quadrant_image(size=(16, 16)) -> Image.Image:
    """Four differently coloured quadrants: red, green / blue, white."""
    width, height = size
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[: height // 2, : width // 2] = (255, 0, 0)
    pixels[: height // 2, width // 2 :] = (0, 255, 0)
    pixels[height // 2 :, : width // 2] = (0, 0, 255)
    pixels[height // 2 :, width // 2 :] = (255, 255, 255)
    return Image.fromarray(pixels)


@pytest.fixture
def training(tmp_path):
    """Four quadrant PNGs (each a little different, so each has its own content key) and their features."""
    paths = []
    for i in range(4):
        image = np.asarray(quadrant_image()).copy()
        image[0, 0] = (i, i, i)
        path = tmp_path / f"img{i}.png"
        Image.fromarray(image).save(path)
        paths.append(path)
    return paths, np.zeros((4, 12), np.float32), np.array([0, 0, 1, 1])


def _copies(training, distortion, cache_dir, copies=2):
    backbone = QuadrantBackbone()
    paths, x, y = training
    return add_distorted_copies(paths, x, y, distortion, copies, backbone, open_cache(cache_dir, backbone))


def test_distorted_copies_are_cached_and_reused_on_rerun(training, tmp_path):
    first = _copies(training, FLIPS, tmp_path / "bn")
    assert (first.computed, first.reused) == (8, 0)
    assert first.features.shape == (4 + 8, 12)
    np.testing.assert_array_equal(first.labels, [0, 0, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1])
    second = _copies(training, FLIPS, tmp_path / "bn")
    assert (second.computed, second.reused) == (0, 8)
    np.testing.assert_array_equal(first.features, second.features)


def test_changed_settings_make_new_entries_and_old_ones_stay_usable(training, tmp_path):
    _copies(training, FLIPS, tmp_path / "bn")
    other = _copies(training, CopyAugmentation(flip_left_right=True, random_crop=20), tmp_path / "bn")
    assert (other.computed, other.reused) == (8, 0)
    more = _copies(training, FLIPS, tmp_path / "bn", copies=3)
    assert (more.computed, more.reused) == (4, 8)


def test_distorted_entry_keys_extend_the_content_key():
    copy = DistortedCopy(CopyAugmentation(flip_up_down=True, random_crop=10), 3)
    assert copy.cache_key("abc123") == "abc123-aug2-ud-c10-s0-b0-copy3"


def test_copies_are_deterministic_and_differ_from_each_other(training, tmp_path):
    distortion = CopyAugmentation(flip_left_right=True, rotate90=True, random_crop=10, random_scale=10, random_brightness=20)
    one = _copies(training, distortion, tmp_path / "one", copies=4)
    two = _copies(training, distortion, tmp_path / "two", copies=4)
    np.testing.assert_array_equal(one.features, two.features)
    copies_of_first_image = one.features[4:8]
    assert len({row.tobytes() for row in copies_of_first_image}) > 1
    assert DistortedCopy(distortion, 0).draw_for("k") == DistortedCopy(distortion, 0).draw_for("k")
    assert DistortedCopy(distortion, 0).draw_for("k") != DistortedCopy(distortion, 1).draw_for("k")


def test_load_image_applies_flips_turns_crop_and_brightness(tmp_path):
    path = tmp_path / "q.png"
    quadrant_image().save(path)
    plain = load_image(path, 8)

    def draw(**changes):
        values = dict(zoom=1.0, crop_x=0.0, crop_y=0.0, flip_left_right=False, flip_up_down=False, quarter_turns=0,
                      brightness=1.0)
        return AugmentationDraw(**{**values, **changes})

    np.testing.assert_array_equal(load_image(path, 8, draw=draw(flip_left_right=True)), plain[:, ::-1])
    np.testing.assert_array_equal(load_image(path, 8, draw=draw(flip_up_down=True)), plain[::-1])
    np.testing.assert_array_equal(load_image(path, 8, draw=draw(quarter_turns=1)), np.rot90(plain))
    top_left = load_image(path, 8, draw=draw(zoom=2.0))
    assert (top_left == (255, 0, 0)).all()
    bottom_right = load_image(path, 8, draw=draw(zoom=2.0, crop_x=1.0, crop_y=1.0))
    assert (bottom_right == 255).all()
    darker = load_image(path, 8, draw=draw(brightness=0.5))
    np.testing.assert_array_equal(darker, np.rint(plain * 0.5).astype(np.uint8))


def test_load_image_without_distortion_is_unchanged(tmp_path):
    path = tmp_path / "q.png"
    quadrant_image((30, 20)).save(path)
    assert load_image(path, 8, draw=None).shape == (8, 8, 3)
    np.testing.assert_array_equal(load_image(path, 8), load_image(path, 8, draw=None))


def test_compute_bottlenecks_mixes_plain_and_distorted_items(training, tmp_path):
    paths, _, _ = training
    backbone = QuadrantBackbone()
    cache = open_cache(tmp_path / "bn", backbone)
    plain = compute_bottlenecks(paths[:1], backbone, cache)
    flipped = DistortedCopy(CopyAugmentation(flip_left_right=True), 0)
    mixed = compute_bottlenecks([paths[0], paths[0]], backbone, cache, distortions=[None, flipped])
    assert (mixed.computed, mixed.reused) == (1, 1)
    np.testing.assert_array_equal(mixed.features[0], plain.features[0])


@pytest.fixture(scope="module")
def poets_run(tmp_path_factory):
    """The tensorflow-for-poets command line with its distortion flags, on a tiny tree."""
    root = tmp_path_factory.mktemp("augmented")
    write_colour_tree(root / "images", {"red": 8, "blue": 8})
    args = [
        f"--bottleneck_dir={root / 'bn'}", f"--image_dir={root / 'images'}", "--architecture=efficientnet_lite0",
        f"--output_graph={root / 'g.pb'}", f"--output_labels={root / 'l.txt'}", "--how_many_training_steps=20",
        "--validation_percentage=25", "--testing_percentage=25", "--random_seed=0",
        "--flip_left_right", "--random_crop=10", "--random_scale=10", "--random_brightness=10", "--distorted_copies=2",
    ]
    result = CliRunner().invoke(retrain, args)
    assert result.exit_code == 0, result.output
    return root, result


def test_the_poets_distortion_flags_train_on_cached_copies(poets_run):
    _, result = poets_run
    assert "Distorted copies (flip_left_right, random_crop 10%, random_scale 10%, random_brightness 10%)" in result.output
    assert "2 per training image, 0 reused" in result.output


def test_only_training_images_are_distorted(poets_run):
    from retrain.data.dataset import split_images

    root, _ = poets_run
    images = root / "images"
    by_class = [sorted((images / name).glob("*.jpg")) for name in ("blue", "red")]
    split = split_images(by_class, ["blue", "red"], 25, 25)
    held_back = [path for path, _ in split.validation + split.test]
    assert held_back and split.training
    key = {path: hashlib.sha1(path.read_bytes()).hexdigest() for path in sum(by_class, [])}
    [namespace] = (root / "bn").iterdir()
    distorted = [key.split("-aug")[0] for key in BottleneckCache(namespace, 1280).keys() if "-aug" in key]
    assert len(distorted) == 2 * len(split.training)
    assert set(distorted) == {key[path] for path, _ in split.training}
    assert not set(distorted) & {key[path] for path in held_back}


def test_rerun_reuses_every_distorted_copy(poets_run):
    root, first = poets_run
    args = [f"--bottleneck_dir={root / 'bn'}", f"--image_dir={root / 'images'}", f"--output_graph={root / 'g2.pb'}",
            f"--output_labels={root / 'l2.txt'}", "--how_many_training_steps=5", "--validation_percentage=25",
            "--testing_percentage=25", "--flip_left_right", "--random_crop=10", "--random_scale=10",
            "--random_brightness=10", "--distorted_copies=2"]
    result = CliRunner().invoke(retrain, args)
    assert result.exit_code == 0, result.output
    assert re.search(r"2 per training image, [1-9]\d* reused, 0 computed; training on", result.output), result.output


def _error_line(result) -> str:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.output
    return lines[0]


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--random_crop", "-5"], "--random_crop must be a percentage >= 0, got -5"),
        (["--random_scale", "-1"], "--random_scale must be a percentage >= 0"),
        (["--random_brightness", "-10"], "--random_brightness must be a percentage >= 0"),
        (["--random_brightness", "100"], "--random_brightness must be below 100"),
        (["--flip_up_down", "--distorted_copies", "-1"], "--distorted_copies must be >= 0, got -1"),
        (["--distorted_copies", "3"], "--distorted_copies needs a distortion flag"),
    ],
)
def test_bad_distortion_values_give_one_error_line(make_tree, flags, message):
    result = CliRunner().invoke(retrain, ["--image_dir", str(make_tree({"red": 2, "blue": 2})), *flags])
    assert message in _error_line(result)


def _orientation_model() -> LoadedModel:
    """P(class 0) is the red of the top-left pixel: only the unflipped image scores 1."""

    def predict(pixels):
        red = pixels[:, 0, 0, 0] / 255.0
        return np.stack([red, 1 - red], axis=1).astype(np.float32)

    return LoadedModel(predict, 8, 8, ["corner", "elsewhere"], "orientation model")


def _corner_image(path):
    pixels = np.zeros((8, 8, 3), np.uint8)
    pixels[0, 0] = (255, 0, 0)
    Image.fromarray(pixels).save(path)
    return path


def test_tta_averages_over_the_four_flips():
    pixels = np.zeros((1, 8, 8, 3), np.float32)
    pixels[0, 0, 0, 0] = 255
    model = _orientation_model()
    np.testing.assert_allclose(model.predict(pixels), [[1, 0]])
    np.testing.assert_allclose(with_flip_tta(model).predict(pixels), [[0.25, 0.75]])


def test_tta_flag_of_label_image_and_evaluate(tmp_path, monkeypatch):
    from retrain.predict import prediction

    monkeypatch.setattr(prediction, "load_model", lambda *args, **kwargs: _orientation_model())
    image = _corner_image(tmp_path / "corner.png")
    plain = CliRunner().invoke(label_image, ["--image", str(image), "--graph", str(image)])
    assert plain.output.splitlines()[0] == "corner (score=1.00000)", plain.output
    tta = CliRunner().invoke(label_image, ["--image", str(image), "--graph", str(image), "--tta"])
    assert tta.output.splitlines()[0] == "elsewhere (score=0.75000)", tta.output

    (tmp_path / "tree" / "corner").mkdir(parents=True)
    _corner_image(tmp_path / "tree" / "corner" / "a.png")
    result = CliRunner().invoke(evaluate, ["--graph", str(image), "--image_dir", str(tmp_path / "tree"), "--tta",
                                           "--predictions", str(tmp_path / "p.csv")])
    assert result.exit_code == 0, result.output
    (row,) = list(csv.DictReader((tmp_path / "p.csv").open()))
    assert (float(row["corner"]), float(row["elsewhere"])) == (0.25, 0.75)


def test_distortion_flags_without_a_count_use_the_default():
    from retrain.data.augmentation import DEFAULT_DISTORTED_COPIES, copies_to_make

    assert copies_to_make(CopyAugmentation(rotate90=True), None) == DEFAULT_DISTORTED_COPIES == 5
    assert copies_to_make(CopyAugmentation(rotate90=True), 2) == 2
    assert copies_to_make(CopyAugmentation(), None) == 0
