"""A tree measured or chosen on, against the model's training tree: the same folder, one inside
the other, and copies of training images."""

from __future__ import annotations

import shutil

import pytest

from retrain.data.training_copies import (
    check_not_training_tree,
    copies_of_training_images,
    recorded_training_tree,
    warn_of_missing_classes,
    warn_of_training_copies,
)
from retrain.errors import UserError

NAMES = ("f.image_dir", "f.training_dir")


def test_a_tree_inside_the_training_tree_is_refused_unless_allowed(make_tree, tmp_path):
    training = make_tree({"red": 2, "blue": 2})
    with pytest.raises(UserError, match=r"^f.image_dir .*: is inside the model's training tree .*pass f.allow"):
        check_not_training_tree(training / "red", training, False, ("f.image_dir", "f.allow"), print)
    warnings = []
    assert check_not_training_tree(training, training, True, ("f.image_dir", "f.allow"), warnings.append)
    assert "is the model's training tree" in warnings[0] and "chosen on anyway (f.allow)" in warnings[0]
    assert not check_not_training_tree(tmp_path / "elsewhere", training, False, ("f.image_dir", "f.allow"), print)


def test_copies_of_training_images_are_listed_and_kept(make_tree, tmp_path):
    training = make_tree({"red": 2, "blue": 2})
    measured = tmp_path / "measured"
    shutil.copytree(training / "red", measured / "red")
    lines, warnings = [], []
    found = copies_of_training_images(measured, training, NAMES, lines.append, warnings.append)
    assert len(found.copies) == 2 and not found.same_folder
    assert warnings[0].startswith("2 images of f.image_dir are copies of f.training_dir images (2 exact, 0 near)")
    assert len(lines) == 2 and found.as_dict()["count"] == 2


def test_the_training_tree_itself_is_measured_with_one_warning(make_tree):
    training = make_tree({"red": 2})
    warnings = []
    found = copies_of_training_images(training, training, NAMES, print, warnings.append)
    assert found.same_folder and warnings[0].startswith("f.image_dir and f.training_dir name one and the same folder")


def test_a_missing_training_tree_is_one_error_for_evaluate_and_one_line_for_set_operating_point(tmp_path):
    with pytest.raises(UserError, match="^f.training_dir .*: no such directory$"):
        copies_of_training_images(tmp_path, tmp_path / "gone", NAMES, print, print)
    lines = []
    warn_of_training_copies(tmp_path, tmp_path / "gone", "f.image_dir", lines.append, print)
    assert lines == [f"The model's training tree {tmp_path / 'gone'} is not here; no check for copies of its images"]


def test_a_class_missing_from_the_tree_is_warned_of(make_tree):
    tree = make_tree({"red": 2})
    warnings = []
    warn_of_missing_classes(tree, ["red", "blue"], "f.image_dir", warnings.append)
    assert warnings == [f"f.image_dir {tree}: no 'blue' folder; the thresholds are chosen without any blue image"]


def test_a_recorded_relative_training_tree_is_taken_from_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert recorded_training_tree("images") == tmp_path / "images"
    assert recorded_training_tree(None) is None and recorded_training_tree("") is None
