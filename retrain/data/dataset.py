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
    notes: list[str] = field(default_factory=list)  # symlinks not followed, one warning line each

    @property
    def labels(self) -> list[str]:
        return [c.label for c in self.classes]


def label_for_folder(name: str) -> str:
    """retrain.py's rule: lower-case, each run of non-alphanumerics becomes one space; no
    leading or trailing space, so 'red ' and 'red' are one class, not two."""
    return re.sub(r"[^a-z0-9]+", " ", name.lower()).strip()


def _visible(name: str) -> bool:
    return not name.startswith(".")


def _within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _leads_into(target: str, tree_dirs) -> bool:
    """Whether a real path is inside, or above, one of the tree's real folders."""
    return any(_within(target, d) or _within(d, target) for d in tree_dirs)


def _entries(directory: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(directory) as entries:
            return sorted((e for e in entries if _visible(e.name)), key=lambda e: e.name)
    except OSError:
        return []  # as os.walk: an unreadable folder holds nothing


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


def _image_files(folder: Path, tree_dirs=(), notes: list[str] | None = None) -> dict[str, Path]:
    """Each real image file under folder -> the path it is listed by.

    A linked file counts as that file, once however often it is reached (by its direct path
    if it has one). A linked folder leading back into the tree (tree_dirs: the real root and
    class folders; folder itself always) is not followed, with a line in notes; no real folder
    is walked twice, so no loop can hang the scan."""
    tree_dirs = {os.path.realpath(folder), *tree_dirs}
    visited: set[str] = set()
    found: dict[str, tuple[bool, Path]] = {}  # real path -> (reached through a link, path)
    stack = [(Path(folder), False)]
    while stack:
        directory, via_link = stack.pop()
        real_dir = os.path.realpath(directory)
        if real_dir in visited:
            continue
        visited.add(real_dir)
        for entry in _entries(directory):
            path, linked = directory / entry.name, via_link or entry.is_symlink()
            real = os.path.realpath(path) if entry.is_symlink() else os.path.join(real_dir, entry.name)
            if not _is_dir(entry):
                if is_image_file(path):
                    found[real] = min(found.get(real, (linked, path)), (linked, path))
            elif entry.is_symlink() and _leads_into(real, tree_dirs):
                if notes is not None:
                    notes.append(f"{path}: symlink to {real} leads back into the image tree; not followed")
            else:
                stack.append((path, linked))
    return {real: path for real, (_, path) in found.items()}


def list_images(folder: Path) -> list[Path]:
    """Every image under folder, nested subfolders included, hidden ones skipped, sorted;
    symlinks followed safely (see _image_files)."""
    return sorted(_image_files(folder).values())


def _class_folders(root: Path, notes: list[str]) -> list[Path]:
    """The visible top-level folders; a linked one that holds the whole tree is skipped."""
    real_root = os.path.realpath(root)
    folders = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and _visible(p.name)):
        if folder.is_symlink() and _within(real_root, os.path.realpath(folder)):
            notes.append(f"{folder}: symlink to {os.path.realpath(folder)} holds the whole image tree; not a class")
        else:
            folders.append(folder)
    return folders


def _check_no_file_in_two_classes(files_by_label: dict[str, dict[str, Path]]) -> None:
    """One real file under two classes would train as both: refuse, naming both paths."""
    owner: dict[str, tuple[str, Path]] = {}
    for label, files in files_by_label.items():
        for real, path in files.items():
            if real in owner and owner[real][0] != label:
                other_label, other = owner[real]
                raise UserError(
                    f"{other} (class {other_label!r}) and {path} (class {label!r}) are the same file {real}; "
                    "keep it in one class"
                )
            owner[real] = (label, path)


def scan_image_tree(image_dir: Path | str, flag: str = "DataConfig.image_dir") -> ImageTree:
    """Find the classes (top-level folders) and their images; folders with no images are skipped.

    flag names the tree in error messages (DataConfig.image_dir, DataConfig.validation_dir, DataConfig.test_dir)."""
    root = Path(image_dir).expanduser()
    if not root.exists():
        raise UserError(f"{flag} {root}: no such directory")
    if not root.is_dir():
        raise UserError(f"{flag} {root}: not a directory")
    notes: list[str] = []
    folders = _class_folders(root, notes)
    by_label: dict[str, Path] = {}
    for folder in folders:
        label = label_for_folder(folder.name)
        if not label:
            raise UserError(f"{folder}: folder name gives an empty label; rename it")
        if label in by_label:
            raise UserError(
                f"folders {by_label[label].name!r} and {folder.name!r} in {root} both map to label {label!r}; rename one"
            )
        by_label[label] = folder
    tree_dirs = {os.path.realpath(root), *(os.path.realpath(f) for f in folders)}
    files = {label: _image_files(folder, tree_dirs, notes) for label, folder in by_label.items()}
    _check_no_file_in_two_classes(files)
    classes = [ImageClass(label, by_label[label], sorted(files[label].values())) for label in sorted(files) if files[label]]
    skipped = [by_label[label] for label in by_label if not files[label]]
    if not classes and not skipped:
        raise UserError(f"{flag} {root}: no class folders found (expected one subfolder of images per class)")
    return ImageTree(root, classes, skipped, notes)


def set_for_file(path: Path, validation_percentage: float, testing_percentage: float) -> str:
    """retrain.py's stable split: SHA-1 of the file name with any _nohash_ part removed."""
    hash_name = re.sub(r"_nohash_.*$", "", path.name)
    # The OS's bytes of the name: UTF-8 for every valid name, and defined for any other.
    digest = int(hashlib.sha1(os.fsencode(hash_name)).hexdigest(), 16)
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


def check_percentages(validation_percentage: float, testing_percentage: float) -> None:
    """The split's two shares: each in [0, 100) (NaN fails too), with room left for training."""
    for name, value in (("validation", validation_percentage), ("testing", testing_percentage)):  # flag names
        if not 0 <= value < 100:
            raise UserError(f"DataConfig.{name}_percentage must be in [0, 100), got {value}")
    if validation_percentage + testing_percentage >= 100:
        raise UserError("DataConfig.validation_percentage + DataConfig.testing_percentage must leave room for training")


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
    check_percentages(validation_percentage, testing_percentage)
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

# Held-out set -> (its config field, what a class missing from its tree is not)
HELD_OUT_FIELDS = {"validation": ("DataConfig.validation_dir", "validated"), "test": ("DataConfig.test_dir", "tested")}
# How messages name each set (their wording predates the one word "test").
_SET_WORDS = {"training": "training", "validation": "validation", "test": "testing"}


def scan_held_out_tree(directory: Path | str, set_name: str, image_tree: ImageTree, warn) -> ImageTree:
    """Scan a DataConfig.validation_dir or DataConfig.test_dir tree and check its classes against DataConfig.image_dir's.

    A class DataConfig.image_dir has but the tree lacks is a warning; a class the tree has but
    DataConfig.image_dir lacks is a UserError (the classifier could never predict it)."""
    flag, verb = HELD_OUT_FIELDS[set_name]
    tree = scan_image_tree(directory, flag)
    for note in tree.notes:
        warn(note)
    known = set(image_tree.labels)
    extra = [c.folder.name for c in tree.classes if c.label not in known]
    if extra:
        raise UserError(
            f"{flag} {tree.root}: {', '.join(map(repr, extra))} not among DataConfig.image_dir's classes "
            f"({', '.join(repr(c.folder.name) for c in image_tree.classes)})"
        )
    present = set(tree.labels)
    for image_class in image_tree.classes:
        if image_class.label not in present:
            warn(f"{flag} {tree.root}: no {image_class.folder.name!r} folder; that class is not {verb}")
    return tree


def add_held_out_trees(split: Split, labels: list[str], trees: dict[str, ImageTree], usable=None,
                       names: dict[str, str] | None = None) -> Split:
    """The split with each held-out tree's (path, class index) pairs appended to its set.

    trees maps "validation"/"test" to a tree from scan_held_out_tree; labels are the
    classes being trained (class index = position). Images of a class not in labels, and
    images for which usable(path) is false (unreadable), are left out. A set that is no
    longer empty loses split_images' "set is empty" note. `names`: how the notes name each set's
    source, when not its HELD_OUT_FIELDS field (a manifest's rows)."""
    index = {label: i for i, label in enumerate(labels)}
    sets = {"validation": list(split.validation), "test": list(split.test)}
    notes = list(split.notes)
    for set_name, tree in trees.items():
        for image_class in tree.classes:
            if image_class.label in index:
                sets[set_name].extend(
                    (path, index[image_class.label]) for path in image_class.images if usable is None or usable(path)
                )
        flag = (names or {}).get(set_name, HELD_OUT_FIELDS[set_name][0])
        if sets[set_name]:
            notes = [note for note in notes if note != _EMPTY_SET_NOTES[set_name]]
        elif tree.classes:
            notes.append(f"{flag} {tree.root}: no usable images; the {_SET_WORDS[set_name]} set is empty")
    return Split(list(split.training), sets["validation"], sets["test"], notes)
