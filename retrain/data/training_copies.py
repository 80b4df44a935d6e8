"""A tree of images measured (evaluate) or chosen on (set_operating_point) against the tree the
model trained on: the same folder, one inside the other, and copies of training images.
Figures from training images overstate what new images give, so each is refused or warned
of; the copies are kept, since the tree is the user's choice. The callers name the two
trees (`names`: the parameters that gave them) so that each line says which is which."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from retrain.data.dataset import list_images, scan_image_tree
from retrain.data.duplicates import count_line, find_copies, same_folder_groups
from retrain.errors import UserError


@dataclass(frozen=True)
class TrainingCopies:
    """The images measured that copy an image of the training tree (evaluate.training_dir): kept,
    since evaluate measures the tree it is given, but listed wherever the figures go, as they make
    the figures overstate accuracy on new images."""

    training_dir: Path
    copies: tuple  # data.duplicates.Copy, one per image measured that copies a training image
    same_folder: bool = False  # the training tree itself: every image measured is a training image

    def as_dict(self) -> dict:
        return {"training_dir": str(self.training_dir), "same_folder": self.same_folder, "count": len(self.copies),
                "copies": [{"image": str(c.path), "training_image": str(c.original), "kind": c.kind,
                            "distance": c.distance} for c in self.copies]}


def copies_of_training_images(image_dir: Path, training_dir: Path, names: tuple[str, str], log, warn,
                              known=None) -> TrainingCopies:
    """Images under `image_dir` that copy one under `training_dir`: warned of and listed, not
    removed (evaluate measures the tree it is given). `known(paths)`: the fingerprints already
    at hand for some of them, by path (the bottleneck cache's), so only the rest are read."""
    measured_name, training_name = names
    training = Path(training_dir).expanduser()
    if not training.is_dir():
        raise UserError(f"{training_name} {training}: "
                        f"{'not a directory' if training.exists() else 'no such directory'}")
    if same_folder_groups({measured_name: image_dir, training_name: training}):
        warn(f"{measured_name} and {training_name} name one and the same folder ({training.resolve()}): every image "
             "measured is a training image, so the figures measure memory, not new images")
        return TrainingCopies(training, (), same_folder=True)
    measured, trained_on = list_images(Path(image_dir).expanduser()), list_images(training)
    copies = _warn_of_copies(measured, trained_on, measured_name, f"{training_name} images",
                             "kept, so the figures overstate accuracy on new images", log, warn, known)
    if not copies and measured:
        log(f"Copies: none of the {len(measured)} images copies one of the {len(trained_on)} {training_name} images")
    return TrainingCopies(training, tuple(copies))


def recorded_training_tree(recorded: str | None) -> Path | None:
    """The training tree a model card recorded (None for a model exported before the card
    recorded it); a relative path is taken from the current folder, the best guess left."""
    return None if not recorded else Path(os.path.abspath(Path(recorded).expanduser()))


def check_not_training_tree(image_dir: Path, training: Path | None, allowed: bool, names: tuple[str, str],
                            warn) -> bool:
    """Whether `image_dir` is, is inside or holds the training tree; refused unless `allowed`
    (`names`: the parameters of the tree and of the permission)."""
    if training is None:
        return False
    tree, trained = image_dir.resolve(), training.resolve()
    relation = ("is" if tree == trained else "is inside" if trained in tree.parents
                else "holds" if tree in trained.parents else None)
    if relation is None:
        return False
    tree_name, allow_name = names
    what = f"{tree_name} {image_dir}: {relation} the model's training tree"
    if not allowed:
        raise UserError(f"{what} ({training}), so thresholds chosen there would promise more than new images give; "
                        f"give a tree of images it did not train on, or pass {allow_name} to choose on it anyway")
    warn(f"{what} ({training}), chosen on anyway ({allow_name}): the sensitivity and specificity below overstate "
         "what new images give")
    return True


def warn_of_missing_classes(image_dir: Path, labels: list[str], tree_name: str, warn) -> None:
    """A class the tree lacks is never among the negatives, so the specificity says nothing of it."""
    try:
        present = set(scan_image_tree(image_dir, tree_name).labels)
    except UserError:
        return  # no class folders: the classification says so in its own line
    for label in labels:
        if present and label not in present:
            warn(f"{tree_name} {image_dir}: no {label!r} folder; the thresholds are chosen without any {label} image")


def warn_of_training_copies(image_dir: Path, training: Path, tree_name: str, log, warn, known=None) -> None:
    """Copies of training images in the tree a threshold is chosen on, warned of and listed.
    Cheap beside classifying: each image is read once more, small, unless `known(paths)` (as
    copies_of_training_images takes it) has its fingerprint."""
    if not training.is_dir():
        log(f"The model's training tree {training} is not here; no check for copies of its images")
        return
    _warn_of_copies(list_images(image_dir), list_images(training), tree_name,
                    f"the model's training images ({training})",
                    "kept, so the sensitivity and specificity chosen here overstate what new images give", log, warn,
                    known)


def _warn_of_copies(measured: list[Path], training: list[Path], measured_name: str, training_images: str,
                    consequence: str, log, warn, known=None) -> list:
    """The images of `measured` that copy one of `training`: one warning with the count, then
    each copy in the log."""
    copies = find_copies(training, measured, known(training + measured) if known else None)
    if copies:
        warn(count_line(copies, measured_name, training_images, consequence))
        for copy in copies:
            log(copy.describe())
    return copies
