"""The class-per-folder image tree and retrain.py's stable train/validation/test split."""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from retrain.data.images import is_image_file
from retrain.errors import UserError

# retrain.py's constant: the hash is taken modulo this, so a file's set never changes
# when other files are added.
MAX_NUM_IMAGES_PER_CLASS = 2**27 - 1

SETS = ("training", "validation", "test")


@dataclass
class ImageClass:
    label: str
    folder: Path
    images: list[Path]


@dataclass
class ImageTree:
    root: Path
    classes: list[ImageClass]
    skipped_empty: list[Path] = field(default_factory=list)

    @property
    def labels(self) -> list[str]:
        return [c.label for c in self.classes]


def label_for_folder(name: str) -> str:
    """retrain.py's rule: lower-case, each run of non-alphanumerics becomes one space."""
    return re.sub(r"[^a-z0-9]+", " ", name.lower())


def _visible(name: str) -> bool:
    return not name.startswith(".")


def list_images(folder: Path) -> list[Path]:
    """Every image under folder, nested subfolders included, hidden ones skipped, sorted."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if _visible(d))
        found.extend(Path(dirpath) / f for f in filenames if _visible(f) and is_image_file(Path(f)))
    return sorted(found)


def scan_image_tree(image_dir: Path | str, flag: str = "--image_dir") -> ImageTree:
    """Find the classes (top-level folders) and their images; folders with no images are skipped.

    flag names the tree in error messages (--image_dir, --validation_dir, --test_dir)."""
    root = Path(image_dir).expanduser()
    if not root.exists():
        raise UserError(f"{flag} {root}: no such directory")
    if not root.is_dir():
        raise UserError(f"{flag} {root}: not a directory")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and _visible(p.name))
    by_label: dict[str, ImageClass] = {}
    skipped = []
    for folder in folders:
        label = label_for_folder(folder.name)
        if not label.strip():
            raise UserError(f"{folder}: folder name gives an empty label; rename it")
        if label in by_label:
            raise UserError(
                f"folders {by_label[label].folder.name!r} and {folder.name!r} in {root} both map to label {label!r}; rename one"
            )
        images = list_images(folder)
        if not images:
            skipped.append(folder)
            continue
        by_label[label] = ImageClass(label, folder, images)
    if not by_label and not skipped:
        raise UserError(f"{flag} {root}: no class folders found (expected one subfolder of images per class)")
    classes = sorted(by_label.values(), key=lambda c: c.label)
    return ImageTree(root, classes, skipped)


def set_for_file(path: Path, validation_percentage: float, testing_percentage: float) -> str:
    """retrain.py's stable split: SHA-1 of the file name with any _nohash_ part removed."""
    hash_name = re.sub(r"_nohash_.*$", "", path.name)
    digest = int(hashlib.sha1(hash_name.encode("utf-8")).hexdigest(), 16)
    percentage = (digest % (MAX_NUM_IMAGES_PER_CLASS + 1)) * (100.0 / MAX_NUM_IMAGES_PER_CLASS)
    if percentage < validation_percentage:
        return "validation"
    if percentage < validation_percentage + testing_percentage:
        return "test"
    return "training"


@dataclass
class Split:
    """For each set, the (image path, class index) pairs in it."""

    training: list[tuple[Path, int]]
    validation: list[tuple[Path, int]]
    test: list[tuple[Path, int]]
    notes: list[str]


def split_images(
    images_by_class: list[list[Path]],
    labels: list[str],
    validation_percentage: float,
    testing_percentage: float,
) -> Split:
    """Split with retrain.py's hash, then make sure every class has a training image.

    A class whose every image hashed into validation or testing lends one back to
    training, so the classifier still sees it (the original crashed or silently
    dropped the class).
    """
    for name, value in (("validation", validation_percentage), ("testing", testing_percentage)):  # flag names
        if not 0 <= value < 100:
            raise UserError(f"--{name}_percentage must be in [0, 100), got {value}")
    if validation_percentage + testing_percentage >= 100:
        raise UserError("--validation_percentage + --testing_percentage must leave room for training")
    sets: dict[str, list[tuple[Path, int]]] = {name: [] for name in SETS}
    notes = []
    for index, images in enumerate(images_by_class):
        assigned = {name: [] for name in SETS}
        for path in images:
            assigned[set_for_file(path, validation_percentage, testing_percentage)].append(path)
        if not assigned["training"]:
            donor = "test" if assigned["test"] else "validation"
            assigned["training"].append(assigned[donor].pop())
            notes.append(f"class {labels[index]!r}: all its images fell outside training; moved one from {_SET_WORDS[donor]}")
        for name in SETS:
            sets[name].extend((path, index) for path in assigned[name])
    if not sets["validation"] and validation_percentage > 0:
        notes.append(_EMPTY_SET_NOTES["validation"])
    if not sets["test"] and testing_percentage > 0:
        notes.append(_EMPTY_SET_NOTES["test"])
    return Split(sets["training"], sets["validation"], sets["test"], notes)


_EMPTY_SET_NOTES = {
    "validation": "validation set is empty (too few images); validation accuracy is not reported",
    "test": "test set is empty (too few images); no final test accuracy",
}

# Held-out set -> (its flag, what a class missing from its tree is not)
HELD_OUT_FLAGS = {"validation": ("--validation_dir", "validated"), "test": ("--test_dir", "tested")}
# How messages name each set (their wording predates the one word "test").
_SET_WORDS = {"training": "training", "validation": "validation", "test": "testing"}


def scan_held_out_tree(directory: Path | str, set_name: str, image_tree: ImageTree, warn) -> ImageTree:
    """Scan a --validation_dir or --test_dir tree and check its classes against --image_dir's.

    A class --image_dir has but the tree lacks is a warning; a class the tree has but
    --image_dir lacks is a UserError (the classifier could never predict it)."""
    flag, verb = HELD_OUT_FLAGS[set_name]
    tree = scan_image_tree(directory, flag)
    known = set(image_tree.labels)
    extra = [c.folder.name for c in tree.classes if c.label not in known]
    if extra:
        raise UserError(
            f"{flag} {tree.root}: {', '.join(map(repr, extra))} not among --image_dir's classes "
            f"({', '.join(repr(c.folder.name) for c in image_tree.classes)})"
        )
    present = set(tree.labels)
    for image_class in image_tree.classes:
        if image_class.label not in present:
            warn(f"{flag} {tree.root}: no {image_class.folder.name!r} folder; that class is not {verb}")
    return tree


def add_held_out_trees(split: Split, labels: list[str], trees: dict[str, ImageTree], usable=None) -> Split:
    """The split with each held-out tree's (path, class index) pairs appended to its set.

    trees maps "validation"/"test" to a tree from scan_held_out_tree; labels are the
    classes being trained (class index = position). Images of a class not in labels, and
    images for which usable(path) is false (unreadable), are left out. A set that is no
    longer empty loses split_images' "set is empty" note."""
    index = {label: i for i, label in enumerate(labels)}
    sets = {"validation": list(split.validation), "test": list(split.test)}
    notes = list(split.notes)
    for set_name, tree in trees.items():
        for image_class in tree.classes:
            if image_class.label in index:
                sets[set_name].extend(
                    (path, index[image_class.label]) for path in image_class.images if usable is None or usable(path)
                )
        flag = HELD_OUT_FLAGS[set_name][0]
        if sets[set_name]:
            notes = [note for note in notes if note != _EMPTY_SET_NOTES[set_name]]
        elif tree.classes:
            notes.append(f"{flag} {tree.root}: no usable images; the {_SET_WORDS[set_name]} set is empty")
    return Split(list(split.training), sets["validation"], sets["test"], notes)
