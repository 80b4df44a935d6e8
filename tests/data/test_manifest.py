"""--image_list: a CSV of images and labels (and optionally their set) instead of a tree of
class folders, giving the same sets, checked row by row before any slow work."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from retrain.cli import retrain
from retrain.data.dataset import scan_image_tree
from retrain.data.manifest import read_manifest, splits_given
from retrain.errors import UserError
from tests.conftest import run_cli, write_colour_tree


def _manifest(path: Path, rows: list[tuple], header: str = "image,label") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([header, *(",".join(map(str, row)) for row in rows)]) + "\n")
    return path


def _rows_of_tree(tree: Path, relative_to: Path) -> list[tuple[str, str]]:
    return [(os.path.relpath(p, relative_to), p.parent.name) for p in sorted(tree.rglob("*.jpg"))]


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return write_colour_tree(tmp_path_factory.mktemp("manifest") / "images", {"red": 12, "blue": 12})


# --- the library ----------------------------------------------------------------------------

def test_a_manifest_of_a_tree_reads_as_the_same_classes_and_images(tree, tmp_path):
    listed = read_manifest(_manifest(tmp_path / "list.csv", _rows_of_tree(tree, tmp_path)))
    scanned = scan_image_tree(tree)
    assert listed.image_tree.labels == scanned.labels
    assert [[p.resolve() for p in c.images] for c in listed.image_tree.classes] == \
        [[p.resolve() for p in c.images] for c in scanned.classes]
    assert listed.held_out == {}


def test_absolute_paths_and_the_split_column_make_held_out_trees(tree, tmp_path):
    rows = [(p, label, "validation" if i % 4 == 0 else "Test" if i % 4 == 1 else "train" if i % 4 == 2 else "")
            for i, (p, label) in enumerate(_rows_of_tree(tree, tree))]
    rows = [(tree / p, label, split) for p, label, split in rows]
    listed = read_manifest(_manifest(tmp_path / "elsewhere" / "list.csv", rows, "image,label,split"))
    assert set(listed.held_out) == {"validation", "test"}
    assert sum(len(c.images) for c in listed.image_tree.classes) == 12
    assert sum(len(c.images) for c in listed.held_out["validation"].classes) == 6
    assert splits_given(tmp_path / "elsewhere" / "list.csv") == {"validation", "test"}


@pytest.mark.parametrize("rows, header, expected", [
    ([("images/red/red_0.jpg", "red"), ("images/red/nope.jpg", "red")], "image,label", r"list\.csv:3: .*nope\.jpg: no such file"),
    ([("images/red/red_0.jpg", "red"), ("images/blue", "blue")], "image,label", r"list\.csv:3: images/blue: not an image file"),
    ([("images/red/red_0.jpg", "red"), ("images/blue/blue_0.jpg", "")], "image,label", r"list\.csv:3: .*: no label"),
    ([("images/red/red_0.jpg", "red", "train"), ("images/blue/blue_0.jpg", "blue", "holdout")], "image,label,split",
     r"list\.csv:3: .*split 'holdout'; use train, validation or test"),
    ([("images/red/red_0.jpg",), ("images/blue/blue_0.jpg",)], "image", r"list\.csv:1: no label column"),
    ([("images/red/red_0.jpg", "red"), ("images/red/red_1.jpg", "red")], "image,label",
     r"list\.csv: 1 label\(s\) among the training rows \('red'\); need at least two"),
    ([("images/red/red_0.jpg", "red"), ("images/blue/blue_0.jpg", "blue"), ("images/./red/red_0.jpg", "blue")],
     "image,label", r"list\.csv:4: .*is the same file as line 2"),
    ([("images/red/red_0.jpg", "red"), ("images/blue/blue_0.jpg", "blue"), ("images/red/red_1.jpg", "Red")],
     "image,label", r"list\.csv:4: label 'Red' and 'red' \(line 2\) are one class"),
    ([("images/red/red_0.jpg", "red"), ("images/blue/blue_0.jpg", "blue"), ("images/red/red_1.jpg", "green", "test")],
     "image,label,split", r"the test rows have label\(s\) 'green' that no training row has"),
])
def test_a_bad_row_is_one_error_naming_the_file_and_the_line(tree, rows, header, expected):
    path = _manifest(tree.parent / "list.csv", rows, header)
    with pytest.raises(UserError, match=expected):
        read_manifest(path)


def test_a_missing_manifest_is_one_error(tmp_path):
    with pytest.raises(UserError, match=r"DataConfig\.image_list .*absent\.csv: no such file"):
        read_manifest(tmp_path / "absent.csv")


# --- the retrain command ------------------------------------------------------------------

def _retrain(tmp_path: Path, *source):
    out = tmp_path / "out"
    return run_cli(retrain, [*source, "--bottleneck_dir", tmp_path / "bn", "--output_graph", out / "g.pb",
                             "--output_labels", out / "l.txt", "--how_many_training_steps", 3, "--random_seed", 1,
                             "--image_size", 64])


def _line(result, start: str) -> str:
    (line,) = [line for line in result.stdout.splitlines() if line.startswith(start)]
    return line


@pytest.mark.slow
def test_retrain_on_a_manifest_splits_and_trains_as_on_the_tree(tree, tmp_path):
    by_tree = _retrain(tmp_path / "tree", "--image_dir", tree)
    listed = _manifest(tmp_path / "list.csv", _rows_of_tree(tree, tmp_path))
    by_list = _retrain(tmp_path / "list", "--image_list", listed)
    assert by_tree.exit_code == 0 and by_list.exit_code == 0, by_list.output
    assert _line(by_list, "Split:") == _line(by_tree, "Split:")
    assert _line(by_list, "Final test accuracy") == _line(by_tree, "Final test accuracy")
    assert f"listed in {listed}" in (tmp_path / "list" / "out" / "g.model_card.md").read_text()


@pytest.mark.slow
def test_retrain_keeps_the_manifest_split_and_takes_no_percentage_of_its_sets(tree, tmp_path):
    rows = [(p, label, "validation" if i % 3 == 0 else "train") for i, (p, label) in
            enumerate(_rows_of_tree(tree, tmp_path))]
    result = _retrain(tmp_path, "--image_list", _manifest(tmp_path / "list.csv", rows, "image,label,split"),
                      "--testing_percentage", 0)
    assert result.exit_code == 0, result.output
    assert _line(result, "Split:") == "Split: 16 training, 8 validation, 0 testing"


@pytest.mark.parametrize("source, expected", [
    (("--image_list", "{list}", "--image_dir", "{tree}"), r"^error: give --image_dir .* or --image_list .*, not both$"),
    (("--image_list", "{list}", "--validation_dir", "{tree}"), r"^error: --validation_dir goes with --image_dir; "
                                                               r"with --image_list, give the held-out images in its split column"),
    (("--image_list", "{bad}"), r"^error: --image_list .*bad\.csv:3: .*no such file$"),
])
def test_a_bad_image_list_is_one_error_line_before_any_work(tree, tmp_path, source, expected):
    paths = {"list": _manifest(tmp_path / "list.csv", _rows_of_tree(tree, tmp_path)), "tree": tree,
             "bad": _manifest(tmp_path / "bad.csv", [(tree / "red" / "red_0.jpg", "red"), ("gone.jpg", "blue")])}
    result = _retrain(tmp_path, *(part.format(**paths) for part in source))
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code != 0 and len(errors) == 1 and re.search(expected, errors[0]), result.output
    assert not (tmp_path / "bn").exists()


def test_retrain_without_image_dir_or_image_list_is_a_usage_error(tmp_path):
    result = _retrain(tmp_path)
    assert result.exit_code == 2 and "Missing option '--image_dir' (or '--image_list')" in result.output


@pytest.mark.slow
def test_validation_rows_that_cannot_be_read_are_named_as_the_manifest_rows(tree, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    rows = [(p, label, "train") for p, label in _rows_of_tree(tree, tmp_path)] + [("broken.jpg", "red", "validation")]
    result = _retrain(tmp_path, "--image_list", _manifest(tmp_path / "list.csv", rows, "image,label,split"))
    assert result.exit_code == 0, result.output
    assert f"warning: --image_list's validation rows in {tmp_path / 'list.csv'}: no usable images; the validation " \
           "set is empty" in result.output
