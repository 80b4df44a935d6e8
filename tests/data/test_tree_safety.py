"""Image trees are read safely: symlinks never loop or leak one class's images into another,
any file name the OS allows trains and evaluates, and class labels never collide silently."""

from __future__ import annotations

import hashlib
import os
import re
import signal
from contextlib import contextmanager
from pathlib import Path

import pytest

from retrain.cli import evaluate, retrain
from retrain.data.dataset import label_for_folder, scan_image_tree, set_for_file
from retrain.errors import UserError
from tests.conftest import run_cli


@contextmanager
def finishes_within(seconds: int):
    """Fail, instead of hanging the suite, if the block runs longer than seconds."""

    def stop(*_):
        raise TimeoutError(f"still running after {seconds}s")

    old = signal.signal(signal.SIGALRM, stop)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _retrain(tmp_path: Path, image_dir: Path):
    out = tmp_path / "out"
    return run_cli(retrain, [
        "--image_dir", image_dir, "--how_many_training_steps", 10, "--bottleneck_dir", tmp_path / "bn",
        "--output_graph", out / "g.pb", "--output_labels", out / "labels.txt", "--saved_model_dir", out / "sm",
        "--random_seed", 1,
    ])


def _class_counts(output: str) -> dict[str, int]:
    return {label: int(n) for label, n in re.findall(r"Class '([^']*)': (\d+) images", output)}


def test_symlink_up_to_the_root_is_not_followed_and_the_class_keeps_its_images(tmp_path, make_tree):
    images = make_tree({"red": 4, "blue": 4})
    os.symlink("..", images / "red" / "up")
    result = _retrain(tmp_path, images)
    assert result.exit_code == 0, result.output
    assert _class_counts(result.output) == {"blue": 4, "red": 4}
    assert re.search(r"warning: .*red/up: symlink to .* leads back into the image tree; not followed", result.output)


def test_symlink_to_its_own_folder_counts_each_image_once(tmp_path, make_tree):
    images = make_tree({"red": 4, "blue": 4})
    os.symlink(".", images / "red" / "again")
    result = _retrain(tmp_path, images)
    assert result.exit_code == 0, result.output
    assert _class_counts(result.output) == {"blue": 4, "red": 4}


@pytest.mark.slow
def test_two_symlinks_back_to_the_root_finish_quickly(tmp_path, make_tree):
    images = make_tree({"red": 4, "blue": 4})
    os.symlink("..", images / "red" / "a")
    os.symlink("..", images / "red" / "b")
    os.symlink("../..", images / "blue" / "c")
    with finishes_within(10):
        tree = scan_image_tree(images)
    assert [len(c.images) for c in tree.classes] == [4, 4] and len(tree.notes) == 3
    with finishes_within(300):
        result = _retrain(tmp_path, images)
    assert result.exit_code == 0, result.output
    assert _class_counts(result.output) == {"blue": 4, "red": 4}


def test_a_file_linked_into_another_class_is_one_error_naming_both(tmp_path, make_tree):
    images = make_tree({"red": 4, "blue": 4})
    os.symlink("../blue/blue_0.jpg", images / "red" / "stolen.jpg")
    result = _retrain(tmp_path, images)
    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    assert str(images / "blue" / "blue_0.jpg") in errors[0] and str(images / "red" / "stolen.jpg") in errors[0]
    assert not (tmp_path / "bn").exists() and not (tmp_path / "out").exists()


def test_a_file_linked_from_outside_the_tree_counts_as_that_file(tmp_path, make_tree):
    images = make_tree({"red": 4, "blue": 4})
    outside = make_tree({"red": 1}, root=tmp_path / "elsewhere")
    os.symlink(outside / "red" / "red_0.jpg", images / "red" / "borrowed.jpg")
    result = _retrain(tmp_path, images)
    assert result.exit_code == 0, result.output
    assert _class_counts(result.output) == {"blue": 4, "red": 5}


def test_a_file_reached_twice_in_one_class_counts_once_by_its_own_path(make_tree):
    images = make_tree({"red": 2, "blue": 2})
    os.symlink("red_0.jpg", images / "red" / "a_link.jpg")
    (images / "red" / "sub").mkdir()
    os.symlink("../red_1.jpg", images / "red" / "sub" / "b_link.jpg")
    red = next(c for c in scan_image_tree(images).classes if c.label == "red")
    assert red.images == [images / "red" / "red_0.jpg", images / "red" / "red_1.jpg"]


def test_a_linked_folder_outside_the_tree_is_followed_once_even_with_a_loop(tmp_path, make_tree):
    images = make_tree({"red": 2, "blue": 2})
    outside = make_tree({"extra": 3}, root=tmp_path / "elsewhere")
    os.symlink(outside / "extra", images / "red" / "extra")
    os.symlink(outside / "extra", images / "red" / "extra_again")
    os.symlink(".", outside / "extra" / "loop")
    with finishes_within(10):
        red = next(c for c in scan_image_tree(images).classes if c.label == "red")
    assert len(red.images) == 5


def test_a_linked_folder_into_another_class_is_not_followed(make_tree):
    images = make_tree({"red": 2, "blue": 2})
    os.symlink("../blue", images / "red" / "more")
    tree = scan_image_tree(images)
    assert [len(c.images) for c in tree.classes] == [2, 2]
    assert any("red/more" in note and "not followed" in note for note in tree.notes)


def test_a_class_folder_linked_to_the_root_is_not_a_class(make_tree):
    images = make_tree({"red": 2, "blue": 2})
    os.symlink(".", images / "everything")
    tree = scan_image_tree(images)
    assert tree.labels == ["blue", "red"] and any("everything" in note for note in tree.notes)


def test_an_ordinary_tree_lists_the_same_images_in_the_same_order(make_tree):
    images = make_tree({"red": 3, "blue": 2})
    (images / "red" / "b" / "deeper").mkdir(parents=True)
    (images / "red" / "red_0.jpg").rename(images / "red" / "b" / "deeper" / "z.jpg")
    (images / "red" / "red_1.jpg").rename(images / "red" / "b" / "a.jpg")
    expected = sorted(
        Path(d) / f for d, _, files in os.walk(images / "red") for f in files if f.endswith(".jpg")
    )
    assert next(c for c in scan_image_tree(images).classes if c.label == "red").images == expected


@pytest.mark.slow
def test_a_name_that_is_not_utf8_trains_and_evaluates_with_every_output(tmp_path, make_tree):
    images = make_tree({"red": 4, "blue": 4})
    red_bytes = os.fsencode(images / "red")
    os.rename(os.path.join(red_bytes, b"red_0.jpg"), os.path.join(red_bytes, b"red_\xff.jpg"))
    result = _retrain(tmp_path, images)
    assert result.exit_code == 0, result.output
    assert _class_counts(result.output) == {"blue": 4, "red": 4}
    out = tmp_path / "out"
    result = run_cli(evaluate, ["--graph", out / "g.pb", "--labels", out / "labels.txt", "--image_dir", images,
                                "--predictions", out / "p.csv", "--json", out / "e.json", "--report", out / "r.html"])
    assert result.exit_code == 0, result.output
    assert os.path.join(red_bytes, b"red_\xff.jpg") in (out / "p.csv").read_bytes()
    (out / "e.json").read_text(encoding="utf-8")
    assert "red_\N{REPLACEMENT CHARACTER}.jpg" in (out / "r.html").read_text(encoding="utf-8")


def test_the_split_hash_is_the_names_bytes_so_valid_names_keep_their_set():
    for name in ("ISIC_0000001.jpg", "café.jpg", "红色.png"):
        digest = int(hashlib.sha1(name.encode("utf-8")).hexdigest(), 16)
        percentage = (digest % 2**27) * (100.0 / (2**27 - 1))
        expected = "validation" if percentage < 10 else "test" if percentage < 20 else "training"
        assert set_for_file(Path(name), 10, 10) == expected
    assert set_for_file(Path(os.fsdecode(b"red_\xff.jpg")), 10, 10) in ("training", "validation", "test")


def test_folders_whose_labels_collide_are_one_error_naming_both(tmp_path, make_tree):
    images = make_tree({"red": 2, "Red!": 2, "blue": 2})
    result = _retrain(tmp_path, images)
    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "'Red!'" in errors[0] and "'red'" in errors[0], result.output
    assert not (tmp_path / "bn").exists()


def test_a_label_never_has_leading_or_trailing_spaces(tmp_path, make_tree):
    assert label_for_folder(" red ") == label_for_folder("(red)") == "red"
    images = make_tree({"red ": 4, "blue": 4})
    result = _retrain(tmp_path, images)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "labels.txt").read_text().splitlines() == ["blue", "red"]


def test_a_folder_named_only_punctuation_is_refused(tmp_path):
    (tmp_path / "--").mkdir()
    with pytest.raises(UserError, match="empty label"):
        scan_image_tree(tmp_path)
