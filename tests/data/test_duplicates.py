"""Copies of one image in two sets (exact, or resized / re-encoded) are found, reported and
kept out of validation and test."""

from __future__ import annotations

import hashlib
import re
import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from retrain.cli import evaluate as evaluate_command
from retrain.cli import retrain
from retrain.data.duplicates import NEAR_DISTANCE, find_copies, hamming, perceptual_hash
from tests.conftest import run_cli

ISIC = Path(__file__).resolve().parents[3] / "shared" / "data" / "isic2017" / "ISIC-2017_Training_Data"
TINTS = {"red": (200, 60, 50), "blue": (50, 70, 200)}


def textured_image(seed: int, tint=(150, 120, 100), size=(160, 120)) -> Image.Image:
    """Smooth random blobs (a coarse random grid, enlarged) plus fine grain: a picture with structure at every scale."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray((rng.random((6, 8)) * 255).astype(np.uint8)).resize(size, Image.Resampling.BICUBIC)
    shade = np.asarray(coarse, np.float32)[..., None] / 255.0
    pixels = np.array(tint, np.float32) * (0.4 + 0.8 * shade) + rng.normal(0, 6, (size[1], size[0], 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def variants(image: Image.Image) -> dict[str, Image.Image]:
    """The copies a data set ships: resized to 0.5x and 0.75x, and re-encoded at JPEG quality 60."""
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=60)
    w, h = image.size
    return {"0.5x": image.resize((w // 2, h // 2), Image.Resampling.BICUBIC),
            "0.75x": image.resize((w * 3 // 4, h * 3 // 4), Image.Resampling.BILINEAR),
            "jpeg q60": Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")}


def _phash(image: Image.Image):
    return perceptual_hash(image)[0]


# --- the hash and its threshold --------------------------------------------------------

def test_resized_and_recompressed_copies_of_a_textured_picture_are_within_the_threshold():
    for seed in range(10):
        original = textured_image(seed)
        for name, copy in variants(original).items():
            assert hamming(_phash(original), _phash(copy)) <= NEAR_DISTANCE, (seed, name)


def test_different_textured_pictures_are_far_apart():
    hashes = [_phash(textured_image(seed)) for seed in range(30)]
    closest = min(hamming(a, b) for i, a in enumerate(hashes) for b in hashes[i + 1:])
    assert closest > NEAR_DISTANCE


def _save_all(folder: Path, images: dict[str, Image.Image]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    for name, image in images.items():
        image.save(folder / name)
    return [folder / name for name in images]


def test_find_copies_names_exact_and_near_copies_and_nothing_else(tmp_path):
    originals = _save_all(tmp_path / "train", {f"t{i}.jpg": textured_image(i) for i in range(6)})
    shutil.copy(originals[0], tmp_path / "exact.jpg")
    near = _save_all(tmp_path / "near", {f"{k}.png": v for k, v in variants(Image.open(originals[1])).items()})
    others = _save_all(tmp_path / "others", {f"o{i}.jpg": textured_image(100 + i) for i in range(6)})
    copies = find_copies(originals, [tmp_path / "exact.jpg", *near, *others])
    assert [(c.path, c.original, c.kind) for c in copies] == [
        (tmp_path / "exact.jpg", originals[0], "exact"), *((path, originals[1], "near") for path in near)]


def test_one_pattern_in_two_colours_is_not_a_copy(tmp_path):
    """The hash is grey; the mean colour tells a red picture from a blue one with the same blobs."""
    red = _save_all(tmp_path, {"red.png": textured_image(7, TINTS["red"])})
    blue = _save_all(tmp_path, {"blue.png": textured_image(7, TINTS["blue"])})
    assert find_copies(red, blue) == []


def test_flat_pictures_match_only_as_exact_copies(tmp_path):
    flat = _save_all(tmp_path, {"grey.png": Image.new("RGB", (40, 40), (128, 128, 128)),
                                "grey2.png": Image.new("RGB", (64, 64), (128, 128, 128)),
                                "black.png": Image.new("RGB", (40, 40), (0, 0, 0))})
    shutil.copy(flat[0], tmp_path / "grey_copy.png")
    copies = find_copies(flat[:1], [flat[1], flat[2], tmp_path / "grey_copy.png"])
    assert [(c.path.name, c.kind) for c in copies] == [("grey_copy.png", "exact")]


def test_real_isic_images_resized_and_recompressed_match_and_other_lesions_do_not(tmp_path):
    if not ISIC.is_dir():
        pytest.skip(f"the shared ISIC 2017 images are not at {ISIC}")
    originals = sorted(ISIC.glob("*.jpg"))[:12]
    copies = {f"{p.stem}_{name}.jpg": v for p in originals[:4] for name, v in variants(Image.open(p)).items()}
    planted = _save_all(tmp_path, {name.replace(" ", ""): image for name, image in copies.items()})
    found = find_copies(originals[:4], planted + originals[4:])
    assert sorted(c.path for c in found) == sorted(planted)
    assert all(c.original.stem == c.path.stem.rsplit("_", 1)[0] for c in found)


# --- the retrain and evaluate commands ---------------------------------------------------

def _textured_tree(root: Path, per_class: int, seed: int) -> Path:
    for index, (name, tint) in enumerate(TINTS.items()):
        _save_all(root / name, {f"{name}_{seed}_{i}.jpg": textured_image(seed + 50 * index + i, tint, (96, 72))
                                for i in range(per_class)})
    return root


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    """A training tree, and a validation tree with one exact copy and one half-size copy of training images planted."""
    root = tmp_path_factory.mktemp("duplicates")
    train = _textured_tree(root / "train", 4, 0)
    validation = _textured_tree(root / "validation", 2, 1000)
    shutil.copy(train / "red" / "red_0_0.jpg", validation / "red" / "exact_copy.jpg")
    Image.open(train / "blue" / "blue_0_1.jpg").resize((48, 36)).save(validation / "blue" / "small_copy.png")
    return root, train, validation


def _retrain(root: Path, name: str, *trees_and_flags):
    out = root / name
    return run_cli(retrain, [*trees_and_flags, "--output_graph", out / "g.pb", "--output_labels", out / "labels.txt",
                             "--bottleneck_dir", root / "bn", "--image_size", 64, "--how_many_training_steps", 10,
                             "--random_seed", 1]), out


def _warnings(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("warning:")]


def _digests(folder: Path) -> dict[Path, str]:
    return {p: hashlib.sha1(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def removed(trees):
    root, train, validation = trees
    before = _digests(validation)
    result, out = _retrain(root, "removed", "--image_dir", train, "--validation_dir", validation, "--testing_percentage", 0)
    assert _digests(validation) == before
    return result, out


def test_copies_planted_in_validation_dir_are_one_warning_and_leave_the_validation_set(removed, trees):
    result, _ = removed
    _, train, validation = trees
    assert result.exit_code == 0, result.output
    assert _warnings(result) == [(
        "warning: 2 images of the validation set are copies of training images (1 exact, 1 near); removed from "
        "validation so the figures stay honest (--keep_duplicates keeps them); pairs: see below")]
    assert "Split: 8 training, 4 validation, 0 testing" in result.stdout
    assert f"copy of a training image: {validation / 'red' / 'exact_copy.jpg'} = {train / 'red' / 'red_0_0.jpg'} " \
           "(same bytes)" in result.stdout
    assert f"{validation / 'blue' / 'small_copy.png'} = {train / 'blue' / 'blue_0_1.jpg'} (near copy" in result.stdout


def test_keep_duplicates_keeps_the_copies_and_still_warns(trees):
    root, train, validation = trees
    result, _ = _retrain(root, "kept", "--image_dir", train, "--validation_dir", validation, "--testing_percentage", 0,
                         "--keep_duplicates")
    assert result.exit_code == 0, result.output
    assert _warnings(result) == [(
        "warning: 2 images of the validation set are copies of training images (1 exact, 1 near); kept "
        "(--keep_duplicates): the validation figures overstate accuracy on new images; pairs: see below")]
    assert "Split: 8 training, 6 validation, 0 testing" in result.stdout


def test_the_same_tree_as_training_validation_and_test_is_one_warning_and_no_test_accuracy(trees):
    root, train, _ = trees
    result, _ = _retrain(root, "thrice", "--image_dir", train, "--validation_dir", train, "--test_dir", train)
    assert result.exit_code == 0, result.output
    assert _warnings(result) == [(
        f"warning: --image_dir, --validation_dir and --test_dir name one and the same folder ({train.resolve()}): its "
        "training images are removed from validation/test, so the figures stay honest (--keep_duplicates keeps them)"),
        "warning: no validation images: the probabilities are not calibrated, and no operating point or "
        "out-of-distribution threshold is stored; give --validation_dir or a --validation_percentage"]
    assert "Split: 8 training, 0 validation, 0 testing" in result.stdout
    assert "Final test accuracy" not in result.stdout


def test_evaluate_with_training_dir_warns_of_the_copies_and_lists_them(removed, trees):
    _, out = removed
    _, train, validation = trees
    result = run_cli(evaluate_command, ["--graph", out / "g.pb", "--image_dir", validation, "--training_dir", train])
    assert result.exit_code == 0, result.output
    assert _warnings(result) == [(
        "warning: 2 images of --image_dir are copies of --training_dir images (1 exact, 1 near); kept, so the figures "
        "overstate accuracy on new images; pairs: see below")]
    assert f"{validation / 'red' / 'exact_copy.jpg'} = {train / 'red' / 'red_0_0.jpg'} (same bytes)" in result.stdout


def test_evaluate_with_a_missing_training_dir_is_one_error_line(removed, trees, tmp_path):
    _, out = removed
    _, _, validation = trees
    result = run_cli(evaluate_command, ["--graph", out / "g.pb", "--image_dir", validation,
                                        "--training_dir", tmp_path / "nowhere"])
    assert result.exit_code == 1
    assert [line for line in result.stderr.splitlines() if line.startswith("error:")] == [
        f"error: --training_dir {tmp_path / 'nowhere'}: no such directory"]


def test_evaluate_on_its_own_training_dir_is_one_warning(removed, trees):
    _, out = removed
    _, train, _ = trees
    result = run_cli(evaluate_command, ["--graph", out / "g.pb", "--image_dir", train, "--training_dir", train])
    assert result.exit_code == 0, result.output
    assert _warnings(result) == [(
        f"warning: --image_dir and --training_dir name one and the same folder ({train.resolve()}): every image "
        "measured is a training image, so the figures measure memory, not new images")]


def _split_line(result) -> str:
    return next(line for line in result.stdout.splitlines() if line.startswith("Split:"))


def test_the_training_tree_as_validation_dir_leaves_no_test_image_in_validation_too(trees):
    """Validation keeps the tree's images held out of training, which are the test split's: they leave the
    test set (said in one line), so no test figure comes from images validation judged."""
    root, train, _ = trees
    result, _ = _retrain(root, "same_validation", "--image_dir", train, "--validation_dir", train,
                         "--testing_percentage", 40)
    assert result.exit_code == 0, result.output
    tested = [line for line in _warnings(result) if "of the test set" in line]
    assert len(tested) == 1 and "are copies of validation images" in tested[0]
    assert tested[0].endswith("removed from test so its figures are independent of validation (--keep_duplicates "
                              "keeps them); the test set is now empty")
    training, validation, test = (int(n) for n in re.findall(r"\d+", _split_line(result)))
    assert validation > 0 and test == 0 and training + validation == 8
    assert "Final test" not in result.stdout


def test_a_copied_training_tree_as_validation_dir_leaves_no_test_image_in_validation_too(trees, tmp_path):
    root, train, _ = trees
    shutil.copytree(train, tmp_path / "copy")
    result, _ = _retrain(root, "copied_validation", "--image_dir", train, "--validation_dir", tmp_path / "copy",
                         "--testing_percentage", 40)
    assert result.exit_code == 0, result.output
    tested = [line for line in _warnings(result) if "of the test set" in line]
    assert len(tested) == 1 and "are copies of validation images" in tested[0]
    assert f"copy of a validation image: {train}" in result.stdout  # the pairs are listed
    training, validation, test = (int(n) for n in re.findall(r"\d+", _split_line(result)))
    assert validation > 0 and test == 0 and training + validation == 8


def test_the_same_tree_as_validation_and_test_is_one_warning_and_leaves_the_test_set(trees):
    root, train, validation = trees
    result, _ = _retrain(root, "val_is_test", "--image_dir", train, "--validation_dir", validation,
                         "--test_dir", validation)
    assert result.exit_code == 0, result.output
    assert (f"warning: --validation_dir and --test_dir name one and the same folder ({validation.resolve()}): its "
            "images stay in validation and are left out of the test set, whose figures must be of images validation "
            "did not judge (--keep_duplicates keeps them)") in _warnings(result)
    assert not [line for line in _warnings(result) if re.match(r"warning: \d+ images? of the test set", line)]
    assert "Split: 8 training, 4 validation, 0 testing" in result.stdout
