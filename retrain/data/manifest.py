"""Images from a manifest (DataConfig.image_list): a CSV with an image and a label column, and
optionally a split column (train, validation or test), read into the same trees a
class-per-folder tree gives, so that everything downstream is the same. Large sets come as
such lists, not as folders.

An image path is taken from the CSV's folder unless absolute. A row whose split is blank (or a
list with no split column) is a training-tree image, split by DataConfig.validation_percentage
and DataConfig.testing_percentage as a tree's are. Every row is checked before any slow work;
the first bad one is one error naming the file and the row (its line, the header being 1)."""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

from retrain.data.dataset import ImageClass, ImageTree, label_for_folder
from retrain.data.images import IMAGE_EXTENSIONS, is_image_file
from retrain.errors import UserError

IMAGE_LIST = "DataConfig.image_list"
COLUMNS = ("image", "label")
SPLITS = {"train": "training", "validation": "validation", "test": "test"}  # value -> set


@dataclass(frozen=True)
class Manifest:
    """The training tree (train and blank rows) and the held-out trees by set name."""

    image_tree: ImageTree
    held_out: dict[str, ImageTree]


@dataclass(frozen=True)
class _Row:
    line: int
    path: Path
    spelling: str  # the label as written
    label: str
    set_name: str


def read_manifest(path: Path | str) -> Manifest:
    """The manifest's images as trees; a UserError names the first bad row."""
    path = Path(path).expanduser()
    rows = _checked_rows(path, _read_rows(path))
    by_set: dict[str, dict[str, list[Path]]] = {name: {} for name in SPLITS.values()}
    for row in rows:
        by_set[row.set_name].setdefault(row.label, []).append(row.path)
    trees = {name: ImageTree(path, [ImageClass(label, path, sorted(images)) for label, images in sorted(classes.items())])
             for name, classes in by_set.items()}
    training = trees.pop("training")
    if len(training.classes) < 2:
        raise UserError(f"{IMAGE_LIST} {path}: {len(training.classes)} label(s) among the training rows "
                        f"({', '.join(map(repr, training.labels)) or 'none'}); need at least two")
    _check_held_out_labels(path, training, trees)
    return Manifest(training, {name: tree for name, tree in trees.items() if tree.classes})


def splits_given(path: Path | str) -> set[str]:
    """The sets (validation, test) the manifest's split column names; empty when it cannot be read
    (read_manifest then says why)."""
    try:
        with open(Path(path).expanduser(), newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            column = next((c for c in reader.fieldnames or [] if c.strip() == "split"), None)
            values = {(row.get(column) or "").strip().lower() for row in reader} if column else set()
    except (OSError, csv.Error, UnicodeDecodeError):
        return set()
    return {SPLITS[value] for value in values if value in SPLITS} - {"training"}


def _read_rows(path: Path) -> list[tuple[int, dict[str, str]]]:
    if path.is_dir():
        raise UserError(f"{IMAGE_LIST} {path}: is a folder; give a CSV file (a folder of class folders is "
                        "DataConfig.image_dir)")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            columns = [c.strip() for c in reader.fieldnames or []]
            missing = [c for c in COLUMNS if c not in columns]
            if missing:
                raise UserError(f"{IMAGE_LIST} {path}:1: no {' or '.join(missing)} column (found: "
                                f"{', '.join(columns) or 'none'}); the header must name image, label and optionally split")
            rows = []
            for row in reader:
                rows.append((reader.line_num, {k.strip(): (v or "").strip() for k, v in row.items()
                                               if isinstance(k, str) and isinstance(v, str)}))
            return rows
    except FileNotFoundError:
        raise UserError(f"{IMAGE_LIST} {path}: no such file") from None
    except OSError as e:
        raise UserError(f"{IMAGE_LIST} {path}: cannot read ({e.strerror or e})") from None
    except (csv.Error, UnicodeDecodeError) as e:
        raise UserError(f"{IMAGE_LIST} {path}: not a readable CSV ({e})") from None


def _checked_rows(path: Path, raw: list[tuple[int, dict[str, str]]]) -> list[_Row]:
    if not raw:
        raise UserError(f"{IMAGE_LIST} {path}: no rows under the header")
    rows, seen, spellings = [], {}, {}
    for line, values in raw:
        row = _row(path, line, values)
        real = os.path.realpath(row.path)
        if real in seen:
            raise UserError(f"{IMAGE_LIST} {path}:{line}: {values['image']} is the same file as line {seen[real]}; "
                            "list each image once")
        seen[real] = line
        first = spellings.setdefault(row.label, (row.spelling, line))
        if first[0] != row.spelling:
            raise UserError(f"{IMAGE_LIST} {path}:{line}: label {row.spelling!r} and {first[0]!r} (line {first[1]}) "
                            f"are one class, {row.label!r}; spell it one way")
        rows.append(row)
    return rows


def _row(path: Path, line: int, values: dict[str, str]) -> _Row:
    where = f"{IMAGE_LIST} {path}:{line}"
    image, spelling, split = values.get("image", ""), values.get("label", ""), values.get("split", "").lower()
    if not image:
        raise UserError(f"{where}: no image path")
    label = label_for_folder(spelling)
    if not label:
        raise UserError(f"{where}: {image}: label {spelling!r} gives an empty class name"
                        if spelling else f"{where}: {image}: no label")
    if split and split not in SPLITS:
        raise UserError(f"{where}: {image}: split {values['split']!r}; use train, validation or test (or leave it "
                        "blank)")
    file = Path(image).expanduser()
    file = file if file.is_absolute() else path.parent / file
    if not is_image_file(file):
        raise UserError(f"{where}: {image}: not an image file (expected {'/'.join(sorted(IMAGE_EXTENSIONS))})")
    if not file.is_file():
        raise UserError(f"{where}: {file}: {'not a file' if file.exists() else 'no such file'}")
    if not os.access(file, os.R_OK):
        raise UserError(f"{where}: {file}: cannot be read (permission denied)")
    return _Row(line, file, spelling, label, SPLITS[split or "train"])


def _check_held_out_labels(path: Path, training: ImageTree, held_out: dict[str, ImageTree]) -> None:
    """As with the held-out trees: a label only held-out rows have could never be predicted."""
    known = set(training.labels)
    for name, tree in held_out.items():
        extra = [label for label in tree.labels if label not in known]
        if extra:
            raise UserError(f"{IMAGE_LIST} {path}: the {name} rows have label(s) {', '.join(map(repr, extra))} that no "
                            f"training row has ({', '.join(map(repr, training.labels))})")


def missing_labels(manifest: Manifest) -> list[str]:
    """One line per training label a held-out set has no row of: that class is not validated/tested."""
    verbs = {"validation": "validated", "test": "tested"}
    return [f"{IMAGE_LIST} {manifest.image_tree.root}: no {name} row labelled {label!r}; that class is not "
            f"{verbs[name]}"
            for name, tree in manifest.held_out.items() for label in manifest.image_tree.labels
            if label not in tree.labels]
