"""Validation and test images that copy a training image, and test images that are
validation images: warned of and, unless kept, removed, so the figures measure sight and
not memory."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from retrain.data.dataset import Split
from retrain.data.duplicates import count_line, find_copies, join_flags, same_folder_groups
from retrain.reporter import Reporter

# The trees by the names of their DataConfig fields, as the warnings name them.
IMAGE_DIR, VALIDATION_DIR, TEST_DIR = "DataConfig.image_dir", "DataConfig.validation_dir", "DataConfig.test_dir"
KEEP = "DataConfig.keep_duplicates"


def without_copies(split: Split, folders: dict[str, Path | None], keep: bool, reporter: Reporter,
                   known: dict | None = None) -> Split:
    """Validation and test images that copy a training image (same bytes, or the same picture
    resized or re-encoded), warned of and, unless `keep`, removed: with them the figures measure
    memory, not sight. Then the same between test and validation. `folders`: the trees by their
    DataConfig names (DataConfig.image_dir, ...), to warn of two that are one folder. `known`:
    fingerprints already at hand, by path (data.duplicates.find_copies)."""
    groups = same_folder_groups(folders)
    for names in groups:
        reporter.warn(_same_folder_warning(names, folders[names[0]], keep))
    held = list(dict.fromkeys(path for path, _ in split.validation + split.test))
    copies = find_copies([path for path, _ in split.training], held, known)
    told = any(IMAGE_DIR in names for names in groups)  # its same files are the warning above
    listed = [c for c in copies if not (told and c.path.resolve() == c.original.resolve())]
    if not copies and held:
        reporter.log(f"Copies: none of the {len(held)} validation/test images copies a training image")
    if listed:
        copied = {c.path for c in listed}
        sets = [name for name, pairs in (("validation", split.validation), ("test", split.test))
                if any(path in copied for path, _ in pairs)]
        what = "/".join(sets)
        consequence = (f"kept ({KEEP}): the {what} figures overstate accuracy on new images"
                       if keep else
                       f"removed from {what} so the figures stay honest ({KEEP} keeps them)")
        reporter.warn(count_line(listed, f"the {what} set{'s' if len(sets) > 1 else ''}", "training images",
                                 consequence))
        for copy in listed:
            reporter.log(copy.describe())
    if copies and not keep:
        removed = {c.path for c in copies}
        split = dataclasses.replace(split, validation=[pair for pair in split.validation if pair[0] not in removed],
                                    test=[pair for pair in split.test if pair[0] not in removed])
    return _without_validation_images_in_test(split, keep, groups, reporter, known)


def _without_validation_images_in_test(split: Split, keep: bool, groups: list[list[str]], reporter: Reporter,
                                       known: dict | None) -> Split:
    """Test images that are validation images too (the same file, or a copy), warned of and, unless
    `keep`, removed from test: validation may choose the temperature, thresholds and kept step, so
    the test figures must come from other images. Validation keeps them, as it chooses."""
    copies = find_copies([path for path, _ in split.validation], [path for path, _ in split.test], known)
    removed = set() if keep else {c.path for c in copies}
    left = [pair for pair in split.test if pair[0] not in removed]
    if copies and not any(VALIDATION_DIR in names and TEST_DIR in names for names in groups):
        consequence = (f"kept ({KEEP}): the test figures are not independent of validation" if keep else
                       f"removed from test so its figures are independent of validation ({KEEP} keeps "
                       "them)" + ("" if left else "; the test set is now empty"))
        listed = [c for c in copies if not (groups and c.path.resolve() == c.original.resolve())]
        reporter.warn(count_line(copies, "the test set", "validation images", consequence, bool(listed)))
        for copy in listed:
            reporter.log(copy.describe("a validation image"))
    return dataclasses.replace(split, test=left)


def _same_folder_warning(names: list[str], folder: Path, keep: bool) -> str:
    named = f"{join_flags(names)} name one and the same folder ({Path(folder).expanduser().resolve()})"
    if IMAGE_DIR not in names:
        if keep:
            return f"{named}: the test set is the validation set, so the test figures are not independent of validation"
        return (f"{named}: its images stay in validation and are left out of the test set, whose figures must be "
                f"of images validation did not judge ({KEEP} keeps them)")
    held = "/".join(name for folder, name in ((VALIDATION_DIR, "validation"), (TEST_DIR, "test"))
                    if folder in names)
    if keep:
        return f"{named}: the {held} images are training images, kept ({KEEP}); the figures measure memory"
    return (f"{named}: its training images are removed from {held}, so the figures stay honest "
            f"({KEEP} keeps them)")
