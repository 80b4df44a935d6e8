"""The trees of a run and its sets: the class folders scanned and checked against one
another, then split into training, validation and test images."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from retrain.data.dataset import (
    ImageTree,
    Split,
    add_held_out_trees,
    scan_held_out_tree,
    scan_image_tree,
    split_images,
)
from retrain.data.held_out_copies import IMAGE_DIR, TEST_DIR, VALIDATION_DIR, without_copies
from retrain.data.manifest import IMAGE_LIST, missing_labels, read_manifest
from retrain.errors import UserError
from retrain.reporter import Reporter


@dataclass(frozen=True)
class Folders:
    """The trees a run reads (DataConfig.image_dir, DataConfig.validation_dir, DataConfig.test_dir),
    or the manifest that lists its images instead (DataConfig.image_list)."""

    image_dir: Path | None
    validation_dir: Path | None = None
    test_dir: Path | None = None
    image_list: Path | None = None

    def by_name(self) -> dict[str, Path | None]:
        """The trees by the names of their DataConfig fields, as the warnings name them."""
        return {IMAGE_DIR: self.image_dir, VALIDATION_DIR: self.validation_dir, TEST_DIR: self.test_dir}

    @property
    def source(self) -> str:
        """The field the training images came from, as messages name it."""
        return IMAGE_LIST if self.image_list is not None else IMAGE_DIR


@dataclass(frozen=True)
class Trees:
    """The training tree and any held-out trees (DataConfig.validation_dir, DataConfig.test_dir) by set name."""

    image_tree: ImageTree
    held_out: dict[str, ImageTree]

    def paths(self) -> list[Path]:
        trees = [self.image_tree, *self.held_out.values()]
        return [path for tree in trees for image_class in tree.classes for path in image_class.images]


def scan_trees(folders: Folders, reporter: Reporter) -> Trees:
    """The class folders of every tree, checked against one another before any slow work; or the
    manifest's rows, into the same trees."""
    if folders.image_list is not None:
        return _scan_manifest(folders.image_list, reporter)
    tree = scan_image_tree(folders.image_dir)
    for folder in tree.skipped_empty:
        reporter.warn(f"{folder}: no .jpg/.jpeg/.png images; class skipped")
    for note in tree.notes:
        reporter.warn(note)
    if len(tree.classes) < 2:
        raise UserError(f"{IMAGE_DIR} {tree.root}: found {len(tree.classes)} class folder(s) with images; "
                        "need at least two")
    for image_class in tree.classes:
        reporter.log(f"Class {image_class.label!r}: {len(image_class.images)} images in {image_class.folder}")
    return Trees(tree, {})


def _scan_manifest(image_list: Path, reporter: Reporter) -> Trees:
    manifest = read_manifest(image_list)
    for image_class in manifest.image_tree.classes:
        reporter.log(f"Class {image_class.label!r}: {len(image_class.images)} images in {image_class.folder}")
    for line in missing_labels(manifest):
        reporter.warn(line)
    for set_name, held in manifest.held_out.items():
        count = sum(len(c.images) for c in held.classes)
        reporter.log(f"{'Validation' if set_name == 'validation' else 'Test'} set: {count} images from {held.root}")
    return Trees(manifest.image_tree, manifest.held_out)


def scan_held_out(trees: Trees, folders: Folders, reporter: Reporter) -> Trees:
    held_out = dict(trees.held_out)  # a manifest's validation and test rows
    for set_name, directory in (("validation", folders.validation_dir), ("test", folders.test_dir)):
        if directory is not None:
            held = held_out[set_name] = scan_held_out_tree(directory, set_name, trees.image_tree, reporter.warn)
            count = sum(len(c.images) for c in held.classes)
            reporter.log(f"{'Validation' if set_name == 'validation' else 'Test'} set: {count} images from {held.root}")
    return Trees(trees.image_tree, held_out)


@dataclass(frozen=True)
class Sets:
    """The classes that train, and the (image, class index) pairs of each set."""

    labels: list[str]
    split: Split


def split_sets(trees: Trees, readable, folders: Folders, percentages: tuple[float, float], keep_duplicates: bool,
               reporter: Reporter, fingerprints: dict | None = None) -> Sets:
    """Classes with a `readable` image (a set of paths), split by retrain.py's hash (`percentages`:
    validation and testing) plus the held-out trees, without the held-out copies of training
    images unless `keep_duplicates`. `fingerprints`: the copy fingerprints the bottleneck cache
    gave, by path, so the copy check reads no image again."""
    labels, images_by_class = [], []
    for image_class in trees.image_tree.classes:
        usable = [p for p in image_class.images if p in readable]
        if usable:
            labels.append(image_class.label)
            images_by_class.append(usable)
        else:
            reporter.warn(f"{image_class.folder}: no readable images; class {image_class.label!r} skipped")
    if len(labels) < 2:
        raise UserError(f"{folders.source} {trees.image_tree.root}: fewer than two classes have readable images")
    split = split_images(images_by_class, labels, *percentages)
    names = {name: f"{IMAGE_LIST}'s {name} rows in" for name in trees.held_out} if folders.image_list else None
    split = add_held_out_trees(split, labels, trees.held_out, usable=readable.__contains__, names=names)
    for note in split.notes:
        reporter.warn(note)
    split = without_copies(split, folders.by_name(), keep_duplicates, reporter, fingerprints)
    reporter.log(f"Split: {len(split.training)} training, {len(split.validation)} validation, {len(split.test)} testing")
    return Sets(labels, split)


@dataclass(frozen=True)
class TrainingData:
    """Where the images came from (absolute paths) and how many of each class each set has."""

    image_dir: str | None
    validation_dir: str | None = None
    test_dir: str | None = None
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # set -> class -> images
    image_list: str | None = None  # the manifest the images were listed in, instead of image_dir

    def to_json(self) -> dict:
        """image_list only when given, so a card without one is written as before."""
        written = dataclasses.asdict(self)
        if written["image_list"] is None:
            del written["image_list"]
        return written


def training_data(sets: Sets, folders: Folders) -> TrainingData:
    """Where the images came from and how many of each class each set has, for the model card."""
    def counts(pairs: list[tuple[Path, int]]) -> dict:
        return {label: sum(1 for _, c in pairs if c == index) for index, label in enumerate(sets.labels)}

    def absolute(folder: Path | None) -> str | None:  # the card travels with the model, away from the cwd
        return None if folder is None else str(Path(folder).expanduser().resolve())

    split = sets.split
    return TrainingData(absolute(folders.image_dir), absolute(folders.validation_dir), absolute(folders.test_dir),
                        {"training": counts(split.training), "validation": counts(split.validation),
                         "test": counts(split.test)}, absolute(folders.image_list))
