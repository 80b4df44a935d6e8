import hashlib
from pathlib import Path

import pytest

from retrain.data.dataset import MAX_NUM_IMAGES_PER_CLASS, label_for_folder, scan_image_tree, set_for_file, split_images
from retrain.errors import UserError


def _touch(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")


def test_label_is_lower_case_with_runs_of_other_characters_as_one_space():
    assert label_for_folder("Seborrheic_Keratosis") == "seborrheic keratosis"
    assert label_for_folder("Benign--2 (old)") == "benign 2 old "


def test_images_in_nested_folders_belong_to_the_class_and_hidden_files_are_ignored(tmp_path):
    for rel in ["benign/a.jpg", "benign/sub/deeper/b.JPEG", "benign/c.PNG", "benign/.hidden.jpg",
                "benign/.cache/d.jpg", "benign/notes.txt", "malignant/e.jpg", ".trash/f.jpg"]:
        _touch(tmp_path / rel)
    tree = scan_image_tree(tmp_path)
    assert tree.labels == ["benign", "malignant"]
    assert sorted(p.name for p in tree.classes[0].images) == ["a.jpg", "b.JPEG", "c.PNG"]


def test_two_folders_with_the_same_label_are_an_error_naming_both(tmp_path):
    _touch(tmp_path / "Benign" / "a.jpg")
    _touch(tmp_path / "benign" / "b.jpg")
    with pytest.raises(UserError, match="'Benign' and 'benign'"):
        scan_image_tree(tmp_path)


def test_class_folder_without_images_is_skipped_and_reported(tmp_path):
    _touch(tmp_path / "a" / "x.jpg")
    (tmp_path / "empty").mkdir()
    tree = scan_image_tree(tmp_path)
    assert tree.labels == ["a"] and [p.name for p in tree.skipped_empty] == ["empty"]


@pytest.mark.parametrize("problem", ["missing", "file", "empty"])
def test_unusable_image_dir_is_a_user_error(tmp_path, problem):
    target = tmp_path / "dir"
    if problem == "file":
        target.write_text("x")
    elif problem == "empty":
        target.mkdir()
    with pytest.raises(UserError, match="--image_dir"):
        scan_image_tree(target)


def test_split_uses_retrain_py_hash_of_the_name_without_nohash_part():
    name = "ISIC_0000001.jpg"
    value = (int(hashlib.sha1(name.encode()).hexdigest(), 16) % (MAX_NUM_IMAGES_PER_CLASS + 1)) * (
        100.0 / MAX_NUM_IMAGES_PER_CLASS
    )
    expected = "validation" if value < 10 else "test" if value < 20 else "training"
    assert set_for_file(Path("/x") / name, 10, 10) == expected
    for i in range(50):
        assert set_for_file(Path(f"a/img{i}_nohash_1.jpg"), 10, 10) == set_for_file(Path(f"b/img{i}_nohash_7.jpg"), 10, 10)


def test_split_of_a_file_does_not_change_when_images_are_added():
    images = [Path(f"c/img{i}.jpg") for i in range(200)]
    small = split_images([images[:100]], ["c"], 10, 10)
    large = split_images([images], ["c"], 10, 10)
    for name in ("training", "validation", "test"):
        assert set(getattr(small, name)) <= set(getattr(large, name))
    assert len(large.validation) > 5 and len(large.test) > 5


def test_every_class_keeps_a_training_image_and_empty_sets_are_noted():
    # Find one name that hashes into validation, so the class would have no training image.
    lonely = next(Path(f"v{i}.jpg") for i in range(1000) if set_for_file(Path(f"v{i}.jpg"), 10, 10) == "validation")
    split = split_images([[lonely], [Path("other.jpg")]], ["a", "b"], 10, 10)
    assert (lonely, 0) in split.training
    assert any("moved one from validation" in note for note in split.notes)
    assert any("test set is empty" in note for note in split.notes)


def test_percentages_that_leave_no_training_are_refused():
    with pytest.raises(UserError):
        split_images([[Path("a.jpg")]], ["a"], 60, 50)
