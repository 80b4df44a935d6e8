from pathlib import Path

import pytest

from retrain.data.dataset import (
    label_for_folder,
    scan_image_tree,
    set_for_file,
    split_images,
)
from retrain.errors import UserError


def _touch(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")


def test_label_is_lower_case_with_runs_of_other_characters_as_one_space():
    assert label_for_folder("Seborrheic_Keratosis") == "seborrheic keratosis"
    assert label_for_folder("Benign--2 (old)") == "benign 2 old"


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
    with pytest.raises(UserError, match="DataConfig.image_dir"):
        scan_image_tree(target)


# Sets worked out once with tensorflow-for-poets' retrain.py rule: SHA-1 of the file name with
# any "_nohash_..." removed, as an integer, mod 2**27, times 100 / (2**27 - 1); below the validation
# percentage -> validation, below validation + testing -> test, else training. The percentages
# each name hashes to are in the comments.
HASHED = {
    "ISIC_0000000.jpg": 7.167,
    "ISIC_0000001.jpg": 73.145,
    "ISIC_0000002.jpg": 3.250,
    "ISIC_0000003.jpg": 40.851,
    "ISIC_0000005.jpg": 5.982,
    "ISIC_0000006.jpg": 25.159,
    "patient0.jpg": 24.335,
    "patient0_nohash_0.jpg": 15.911,  # the hash of "patient0": no extension
    "patient0_nohash_7.png": 15.911,
    "patient6.jpg": 2.201,
}


@pytest.mark.parametrize("validation, testing, expected", [
    (10, 10, {"validation": {"ISIC_0000000.jpg", "ISIC_0000002.jpg", "ISIC_0000005.jpg", "patient6.jpg"},
              "test": {"patient0_nohash_0.jpg", "patient0_nohash_7.png"},
              "training": {"ISIC_0000001.jpg", "ISIC_0000003.jpg", "ISIC_0000006.jpg", "patient0.jpg"}}),
    (20, 30, {"validation": {"ISIC_0000000.jpg", "ISIC_0000002.jpg", "ISIC_0000005.jpg", "patient6.jpg",
                             "patient0_nohash_0.jpg", "patient0_nohash_7.png"},
              "test": {"ISIC_0000003.jpg", "ISIC_0000006.jpg", "patient0.jpg"},
              "training": {"ISIC_0000001.jpg"}}),
    (0, 0, {"validation": set(), "test": set(), "training": set(HASHED)}),
    (7.2, 0, {"validation": {"ISIC_0000002.jpg", "ISIC_0000005.jpg", "patient6.jpg", "ISIC_0000000.jpg"},
              "test": set(), "training": set(HASHED) - {"ISIC_0000002.jpg", "ISIC_0000005.jpg", "patient6.jpg",
                                                          "ISIC_0000000.jpg"}}),
    (7.1, 0, {"validation": {"ISIC_0000002.jpg", "ISIC_0000005.jpg", "patient6.jpg"}, "test": set(),
              "training": set(HASHED) - {"ISIC_0000002.jpg", "ISIC_0000005.jpg", "patient6.jpg"}}),
    (0, 25, {"validation": set(), "test": {"ISIC_0000000.jpg", "ISIC_0000002.jpg", "ISIC_0000005.jpg", "patient6.jpg",
                                           "patient0_nohash_0.jpg", "patient0_nohash_7.png", "patient0.jpg"},
             "training": {"ISIC_0000001.jpg", "ISIC_0000003.jpg", "ISIC_0000006.jpg"}}),
])
def test_split_puts_each_file_where_retrain_py_s_hash_of_its_name_does(validation, testing, expected):
    assert set().union(*expected.values()) == set(HASHED)
    found = {name: set() for name in ("training", "validation", "test")}
    for name in HASHED:
        found[set_for_file(Path("/some/folder") / name, validation, testing)].add(name)
    assert found == expected


def test_the_split_depends_on_the_file_name_only_and_not_on_its_nohash_part_or_folder():
    for i in range(50):
        assert set_for_file(Path(f"a/img{i}_nohash_1.jpg"), 10, 10) == set_for_file(Path(f"b/c/img{i}_nohash_7.png"), 10, 10)
        assert set_for_file(Path(f"a/img{i}.jpg"), 10, 10) == set_for_file(Path(f"b/img{i}.jpg"), 10, 10)


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
