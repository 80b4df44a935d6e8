"""--validation_dir / --test_dir: separate class-per-folder trees as the validation and test sets."""

import re
import zlib
from pathlib import Path

import pytest
from click.testing import CliRunner

from retrain.cli import retrain
from retrain.data.dataset import (
    add_held_out_trees,
    scan_held_out_tree,
    scan_image_tree,
    split_images,
)
from retrain.errors import UserError
from tests.conftest import COLOURS, noisy_colour_image


def _held_out_tree(root: Path, counts: dict[str, int]) -> Path:
    """Like make_tree, but other pictures (different for each root) under other file names (held_<class>_<i>.jpg)."""
    for name, count in counts.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            image = noisy_colour_image(COLOURS.get(name, (160, 40, 160)), seed=zlib.crc32(f"{root.name}_{name}_{i}".encode()))
            image.save(root / name / f"held_{name}_{i}.jpg")
    return root


def _retrain(tmp_path, image_dir, *extra):
    args = ["--image_dir", image_dir, "--bottleneck_dir", tmp_path / "bn", "--output_graph", tmp_path / "out" / "g.pb",
            "--output_labels", tmp_path / "out" / "l.txt", "--how_many_training_steps", "3", "--random_seed", "1", *extra]
    result = CliRunner().invoke(retrain, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    return result


def _split_line(result) -> str:
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("Split:")]
    return line


def _warnings(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("warning:")]


# --- the library functions -------------------------------------------------------------

def test_zero_percentages_put_everything_in_training_without_notes():
    images = [[Path(f"a{i}.jpg") for i in range(20)], [Path(f"b{i}.jpg") for i in range(20)]]
    split = split_images(images, ["a", "b"], 0, 0)
    assert len(split.training) == 40 and not split.validation and not split.test
    assert split.notes == []


def test_held_out_images_are_appended_with_the_image_dir_class_index(make_tree, tmp_path):
    tree = scan_image_tree(make_tree({"red": 3, "blue": 3}))
    held = scan_held_out_tree(_held_out_tree(tmp_path / "val", {"red": 2, "blue": 1}), "validation", tree, print)
    split = split_images([c.images for c in tree.classes], tree.labels, 0, 0)
    combined = add_held_out_trees(split, tree.labels, {"validation": held})
    assert combined.training == split.training and combined.test == []
    assert sorted((p.name, tree.labels[c]) for p, c in combined.validation) == [
        ("held_blue_0.jpg", "blue"), ("held_red_0.jpg", "red"), ("held_red_1.jpg", "red")]


def test_unusable_held_out_images_and_dropped_classes_are_left_out(make_tree, tmp_path):
    tree = scan_image_tree(make_tree({"red": 3, "blue": 3}))
    held = scan_held_out_tree(_held_out_tree(tmp_path / "test", {"red": 2, "blue": 2}), "test", tree, print)
    split = split_images([tree.classes[1].images], ["red"], 0, 0)  # as if blue were unreadable
    combined = add_held_out_trees(split, ["red"], {"test": held}, usable=lambda p: p.name != "held_red_1.jpg")
    assert [(p.name, c) for p, c in combined.test] == [("held_red_0.jpg", 0)]


def test_a_filled_set_loses_the_empty_set_note(make_tree, tmp_path):
    tree = scan_image_tree(make_tree({"red": 1, "blue": 1}))
    split = split_images([c.images for c in tree.classes], tree.labels, 10, 10)
    assert any("validation set is empty" in n for n in split.notes)
    held = scan_held_out_tree(_held_out_tree(tmp_path / "val", {"red": 1}), "validation", tree, lambda m: None)
    combined = add_held_out_trees(split, tree.labels, {"validation": held})
    assert not any("validation set is empty" in n for n in combined.notes)
    assert any("test set is empty" in n for n in combined.notes)


def test_held_out_tree_errors_name_the_config_field(make_tree, tmp_path):
    tree = scan_image_tree(make_tree({"red": 1, "blue": 1}))
    with pytest.raises(UserError, match=r"^DataConfig.test_dir .*nowhere: no such directory"):
        scan_held_out_tree(tmp_path / "nowhere", "test", tree, print)
    with pytest.raises(UserError, match=r"^DataConfig.validation_dir .*: 'purple', 'teal' not among DataConfig.image_dir's classes"):
        scan_held_out_tree(_held_out_tree(tmp_path / "val", {"red": 1, "purple": 1, "teal": 1}), "validation", tree, print)


# --- through the command line ----------------------------------------------------------

def test_all_of_image_dir_trains_when_validation_and_test_dirs_are_given(make_tree, tmp_path):
    image_dir = make_tree({"red": 4, "blue": 4})
    val_dir = _held_out_tree(tmp_path / "val", {"red": 2, "blue": 2})
    test_dir = _held_out_tree(tmp_path / "test", {"red": 1, "blue": 2})
    result = _retrain(tmp_path, image_dir, "--validation_dir", val_dir, "--test_dir", test_dir)
    assert result.exit_code == 0, result.output
    assert f"Validation set: 4 images from {val_dir}" in result.stdout
    assert f"Test set: 3 images from {test_dir}" in result.stdout
    assert _split_line(result) == "Split: 8 training, 4 validation, 3 testing"
    assert "Bottlenecks: 0 reused, 15 computed, 0 failed" in result.stdout  # the held-out images are cached too
    assert "Final test accuracy" in result.stdout and "(N=3)" in result.stdout
    assert _warnings(result) == []


def test_explicit_percentage_and_validation_dir_combine(make_tree, tmp_path):
    image_dir = make_tree({"red": 8, "blue": 8})
    val_dir = _held_out_tree(tmp_path / "val", {"red": 2, "blue": 2})
    tree = scan_image_tree(image_dir)
    hashed = split_images([c.images for c in tree.classes], tree.labels, 50, 0)
    assert hashed.validation  # the test means something only if the hash split takes some
    result = _retrain(tmp_path, image_dir, "--validation_dir", val_dir, "--validation_percentage", "50",
                      "--testing_percentage", "0", "--recipe", "strong")
    assert result.exit_code == 0, result.output
    assert _split_line(result) == f"Split: {len(hashed.training)} training, {len(hashed.validation) + 4} validation, 0 testing"


def test_a_class_missing_from_validation_dir_is_one_warning_and_the_run_succeeds(make_tree, tmp_path):
    image_dir = make_tree({"red": 3, "green": 3, "blue": 3})
    val_dir = _held_out_tree(tmp_path / "val", {"red": 1, "blue": 1})
    result = _retrain(tmp_path, image_dir, "--validation_dir", val_dir, "--testing_percentage", "0")
    assert result.exit_code == 0, result.output
    assert _warnings(result) == [f"warning: --validation_dir {val_dir}: no 'green' folder; that class is not validated"]
    assert _split_line(result) == "Split: 9 training, 2 validation, 0 testing"


def test_an_extra_class_in_test_dir_is_one_error_before_any_bottleneck(make_tree, tmp_path):
    image_dir = make_tree({"red": 2, "blue": 2})
    test_dir = _held_out_tree(tmp_path / "test", {"red": 1, "purple": 1})
    result = _retrain(tmp_path, image_dir, "--test_dir", test_dir)
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    assert re.match(rf"error: --test_dir {re.escape(str(test_dir))}: 'purple' not among --image_dir's classes", errors[0])
    assert not (tmp_path / "bn").exists()


def test_zero_percentages_are_accepted(make_tree, tmp_path):
    image_dir = make_tree({"red": 3, "blue": 3})
    result = _retrain(tmp_path, image_dir, "--validation_percentage", "0", "--testing_percentage", "0")
    assert result.exit_code == 0, result.output
    assert _split_line(result) == "Split: 6 training, 0 validation, 0 testing"
    assert _warnings(result) == [  # too few images for out-of-fold predictions either
        "warning: no validation images: the probabilities are not calibrated, and no operating point or "
        "out-of-distribution threshold is stored; give --validation_dir or a --validation_percentage"]
