"""The stages of `retrain`, in the order they run. Each takes the few values it needs and
returns a small frozen dataclass; `retrain.api.training.train` calls them one after another."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from retrain import paths
from retrain.api.config import BackboneChoice, DataConfig, PatientConfig
from retrain.data.augmentation import CopyAugmentation, copies_to_make
from retrain.data.dataset import (
    ImageTree,
    Split,
    add_held_out_trees,
    scan_held_out_tree,
    scan_image_tree,
    split_images,
)
from retrain.data.images import map_batches
from retrain.errors import UserError
from retrain.metrics import positive_class_index, roc_auc
from retrain.reporter import Reporter
from retrain.train.top_layer import TopLayer


@dataclass(frozen=True)
class Trees:
    """The training tree and any held-out trees (--validation_dir, --test_dir) by set name."""

    image_tree: ImageTree
    held_out: dict[str, ImageTree]

    def paths(self) -> list[Path]:
        trees = [self.image_tree, *self.held_out.values()]
        return [path for tree in trees for image_class in tree.classes for path in image_class.images]


def scan_trees(data: DataConfig, reporter: Reporter) -> Trees:
    """The class folders of every tree, checked against one another before any slow work."""
    tree = scan_image_tree(data.image_dir)
    for folder in tree.skipped_empty:
        reporter.warn(f"{folder}: no .jpg/.jpeg/.png images; class skipped")
    for note in tree.notes:
        reporter.warn(note)
    if len(tree.classes) < 2:
        raise UserError(f"--image_dir {tree.root}: found {len(tree.classes)} class folder(s) with images; need at least two")
    for image_class in tree.classes:
        reporter.log(f"Class {image_class.label!r}: {len(image_class.images)} images in {image_class.folder}")
    return Trees(tree, {})


def scan_held_out(trees: Trees, data: DataConfig, reporter: Reporter) -> Trees:
    held_out = {}
    for set_name, directory in (("validation", data.validation_dir), ("test", data.test_dir)):
        if directory is not None:
            held = held_out[set_name] = scan_held_out_tree(directory, set_name, trees.image_tree, reporter.warn)
            count = sum(len(c.images) for c in held.classes)
            reporter.log(f"{'Validation' if set_name == 'validation' else 'Test'} set: {count} images from {held.root}")
    return Trees(trees.image_tree, held_out)


def build_backbone(choice: BackboneChoice, fine_tune_layers=0):
    """The backbone; one that cannot be tuned as asked fails here, before slow work."""
    from retrain.backbones import create_backbone, create_hub_backbone

    if choice.tfhub_module:
        backbone = create_hub_backbone(choice.tfhub_module, choice.image_size)
    else:
        backbone = create_backbone(choice.architecture, model_dir(choice), image_size=choice.image_size)
    if fine_tune_layers:
        backbone.module.unfreeze(fine_tune_layers)
    return backbone


def model_dir(choice: BackboneChoice) -> Path:
    return Path(choice.model_dir or paths.default_model_dir()).expanduser()


@dataclass(frozen=True)
class Features:
    """Every readable image's bottleneck, and what extracting them cost."""

    by_path: dict[Path, np.ndarray]
    computed: int
    reused: int
    failures: int
    cache: object  # the BottleneckCache, for distorted copies


def extract_features(trees: Trees, backbone, bottleneck_dir: Path | None, reporter: Reporter) -> Features:
    from retrain.features.cache import open_cache
    from retrain.features.extraction import compute_bottlenecks

    cache = open_cache(bottleneck_dir or paths.default_bottleneck_dir(), backbone)
    all_paths = trees.paths()
    extraction = compute_bottlenecks(all_paths, backbone, cache, progress=reporter.bar(len(all_paths), "Bottlenecks"))
    for failure in extraction.failures:
        reporter.warn(f"skipped {failure.path}: {failure.reason}")
    reporter.log(
        f"Bottlenecks: {extraction.reused} reused, {extraction.computed} computed, "
        f"{len(extraction.failures)} failed; cache {cache.root}"
        + (f"; computed with {extraction.engine}" if extraction.engine else "")
    )
    if extraction.engine_note:
        reporter.log(extraction.engine_note)
    by_path = {path: extraction.features[i] for i, path in enumerate(all_paths) if extraction.ok[i]}
    return Features(by_path, extraction.computed, extraction.reused, len(extraction.failures), cache)


@dataclass(frozen=True)
class Sets:
    """The classes that train, and the (image, class index) pairs of each set."""

    labels: list[str]
    split: Split


def metadata_rows(table, pairs: list[tuple[Path, int]]) -> list:
    """Each image's raw patient metadata row (None where the table has none), for subgroups."""
    from retrain.patient.table import match_images

    return match_images(table, [path for path, _ in pairs])[0]


def data_card(sets: Sets, data: DataConfig) -> dict:
    """Where the images came from and how many of each class each set has, for the model card."""
    def counts(pairs: list[tuple[Path, int]]) -> dict:
        return {label: sum(1 for _, c in pairs if c == index) for index, label in enumerate(sets.labels)}

    def absolute(folder: Path | None) -> str | None:  # the card travels with the model, away from the cwd
        return None if folder is None else str(Path(folder).expanduser().resolve())

    split = sets.split
    return {"image_dir": absolute(data.image_dir), "validation_dir": absolute(data.validation_dir),
            "test_dir": absolute(data.test_dir),
            "counts": {"training": counts(split.training), "validation": counts(split.validation),
                       "test": counts(split.test)}}


def split_sets(trees: Trees, features: Features, data: DataConfig, reporter: Reporter) -> Sets:
    """Classes with a readable image, split by retrain.py's hash, plus the held-out trees."""
    labels, images_by_class = [], []
    for image_class in trees.image_tree.classes:
        usable = [p for p in image_class.images if p in features.by_path]
        if usable:
            labels.append(image_class.label)
            images_by_class.append(usable)
        else:
            reporter.warn(f"{image_class.folder}: no readable images; class skipped")
    if len(labels) < 2:
        raise UserError(f"--image_dir {trees.image_tree.root}: fewer than two classes have readable images")
    split = split_images(images_by_class, labels, data.validation_percentage, data.testing_percentage)
    split = add_held_out_trees(split, labels, trees.held_out, usable=features.by_path.__contains__)
    for note in split.notes:
        reporter.warn(note)
    split = without_copies(split, data, reporter)
    reporter.log(f"Split: {len(split.training)} training, {len(split.validation)} validation, {len(split.test)} testing")
    return Sets(labels, split)


def without_copies(split: Split, data: DataConfig, reporter: Reporter) -> Split:
    """Validation and test images that copy a training image (same bytes, or the same picture
    resized or re-encoded), warned of and, unless data.keep_duplicates, removed: with them the
    figures measure memory, not sight. Then the same between test and validation."""
    from retrain.data.duplicates import count_line, find_copies, same_folder_groups

    folders = {"--image_dir": data.image_dir, "--validation_dir": data.validation_dir, "--test_dir": data.test_dir}
    groups = same_folder_groups(folders)
    for flags in groups:
        reporter.warn(_same_folder_warning(flags, folders[flags[0]], data.keep_duplicates))
    held = list(dict.fromkeys(path for path, _ in split.validation + split.test))
    copies = find_copies([path for path, _ in split.training], held)
    told = any("--image_dir" in flags for flags in groups)  # its same files are the warning above
    listed = [c for c in copies if not (told and c.path.resolve() == c.original.resolve())]
    if not copies and held:
        reporter.log(f"Copies: none of the {len(held)} validation/test images copies a training image")
    if listed:
        copied = {c.path for c in listed}
        sets = [name for name, pairs in (("validation", split.validation), ("test", split.test))
                if any(path in copied for path, _ in pairs)]
        what = "/".join(sets)
        consequence = (f"kept (--keep_duplicates): the {what} figures overstate accuracy on new images"
                       if data.keep_duplicates else
                       f"removed from {what} so the figures stay honest (--keep_duplicates keeps them)")
        reporter.warn(count_line(listed, f"the {what} set{'s' if len(sets) > 1 else ''}", "training images",
                                 consequence))
        for copy in listed:
            reporter.log(copy.describe())
    if copies and not data.keep_duplicates:
        removed = {c.path for c in copies}
        split = dataclasses.replace(split, validation=[pair for pair in split.validation if pair[0] not in removed],
                                    test=[pair for pair in split.test if pair[0] not in removed])
    return _without_validation_images_in_test(split, data.keep_duplicates, groups, reporter)


def _without_validation_images_in_test(split: Split, keep: bool, groups: list[list[str]], reporter: Reporter) -> Split:
    """Test images that are validation images too (the same file, or a copy), warned of and, unless
    `keep`, removed from test: validation may choose the temperature, thresholds and kept step, so
    the test figures must come from other images. Validation keeps them, as it chooses."""
    from retrain.data.duplicates import count_line, find_copies

    copies = find_copies([path for path, _ in split.validation], [path for path, _ in split.test])
    removed = set() if keep else {c.path for c in copies}
    left = [pair for pair in split.test if pair[0] not in removed]
    if copies and not any("--validation_dir" in flags and "--test_dir" in flags for flags in groups):
        consequence = ("kept (--keep_duplicates): the test figures are not independent of validation" if keep else
                       "removed from test so its figures are independent of validation (--keep_duplicates keeps "
                       "them)" + ("" if left else "; the test set is now empty"))
        listed = [c for c in copies if not (groups and c.path.resolve() == c.original.resolve())]
        reporter.warn(count_line(copies, "the test set", "validation images", consequence, bool(listed)))
        for copy in listed:
            reporter.log(copy.describe("a validation image"))
    return dataclasses.replace(split, test=left)


def _same_folder_warning(flags: list[str], folder: Path, keep: bool) -> str:
    from retrain.data.duplicates import join_flags

    named = f"{join_flags(flags)} name one and the same folder ({Path(folder).expanduser().resolve()})"
    if "--image_dir" not in flags:
        if keep:
            return f"{named}: the test set is the validation set, so the test figures are not independent of validation"
        return (f"{named}: its images stay in validation and are left out of the test set, whose figures must be "
                "of images validation did not judge (--keep_duplicates keeps them)")
    held = "/".join(name for flag, name in (("--validation_dir", "validation"), ("--test_dir", "test")) if flag in flags)
    if keep:
        return f"{named}: the {held} images are training images, kept (--keep_duplicates); the figures measure memory"
    return (f"{named}: its training images are removed from {held}, so the figures stay honest "
            f"(--keep_duplicates keeps them)")


@dataclass(frozen=True)
class Arrays:
    """One set's feature rows, class indices and encoded patient metadata (None without)."""

    x: np.ndarray
    y: np.ndarray
    patient: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.y)


def set_arrays(pairs: list[tuple[Path, int]], features: Features, feature_size: int,
               patient: np.ndarray | None) -> Arrays:
    if not pairs:
        return Arrays(np.zeros((0, feature_size), np.float32), np.zeros(0, np.int64), patient)
    return Arrays(np.stack([features.by_path[p] for p, _ in pairs]), np.array([c for _, c in pairs]), patient)


def with_distorted_copies(training: Arrays, training_paths: list[Path], augmentation: CopyAugmentation,
                          distorted_copies: int | None, backbone, features: Features, reporter: Reporter) -> Arrays:
    """Training rows plus K cached distorted copies per training image (none unless asked for)."""
    copies = copies_to_make(augmentation, distorted_copies)
    if augmentation.active and not copies:
        reporter.warn("--distorted_copies 0: distortion flags ignored; training on undistorted bottlenecks")
    if not copies or not len(training):
        return training
    if distorted_copies is None:
        reporter.log(f"Distortion flags without --distorted_copies: caching {copies} distorted copies per training image")
    from retrain.features.distorted_copies import add_distorted_copies

    added = add_distorted_copies(training_paths, training.x, training.y, augmentation, copies, backbone, features.cache,
                                 reporter.bar(copies * len(training), "Distorted copies"))
    for failure in added.failures:
        reporter.warn(f"skipped a distorted copy of {failure.path}: {failure.reason}")
    reporter.log(
        f"Distorted copies ({augmentation.describe()}): {copies} per training image, "
        f"{added.reused} reused, {added.computed} computed; training on {len(added.labels)} rows"
    )
    return Arrays(added.features, added.labels, training.patient)


@dataclass(frozen=True)
class TunedRows:
    """The tuned backbone's features of the images still readable, and which those are."""

    x: np.ndarray
    ok: np.ndarray  # one bool per image asked for

    def apply(self, arrays: Arrays) -> Arrays:
        """`arrays` with the tuned features, without the rows of the images that became unreadable."""
        return Arrays(self.x, arrays.y[self.ok], None if arrays.patient is None else arrays.patient[self.ok])

    def kept(self, pairs: list[tuple[Path, int]]) -> list[tuple[Path, int]]:
        return [pair for pair, keep in zip(pairs, self.ok) if keep]


def tuned_features(backbone, sets: list[list[tuple[Path, int]]], warn) -> tuple[TunedRows, ...]:
    """The (tuned) backbone's features of each set's images, read as serving reads them, with one
    traced function for all sets. Each image was read once already, for its bottleneck; one
    unreadable now is left out, with a warning."""
    import tensorflow as tf

    from retrain.train.fine_tuning import EVALUATION_BATCH_SIZE

    served = tf.function(backbone.module.features, reduce_retracing=True)

    def rows(pairs: list[tuple[Path, int]]) -> TunedRows:
        features, ok, failures = map_batches(served, [p for p, _ in pairs], backbone.input_size, EVALUATION_BATCH_SIZE)
        for failure in failures:
            warn(f"skipped {failure.path} after fine-tuning: {failure.reason}")
        return TunedRows(features[ok] if features is not None else np.zeros((0, backbone.feature_size), np.float32), ok)

    return tuple(rows(pairs) for pairs in sets)


def format_auc(name: str, probabilities: np.ndarray, true: np.ndarray, labels: list[str], when: str = "") -> str:
    """ROC AUC beside accuracy, which misleads on imbalanced sets: one figure for two
    classes, one-vs-rest per class and their mean otherwise. `when`: "before calibration" or
    "after calibration", since one temperature reorders one class's scores across images when
    there are more than two classes, and so moves their one-vs-rest AUCs."""
    when = f", {when}" if when else ""
    if len(labels) == 2:
        positive = positive_class_index(labels)
        auc = roc_auc(probabilities[:, positive], true == positive)
        return f"{name} AUC = {auc:.3f} ({labels[positive]} vs {labels[1 - positive]}, N={len(true)}{when})"
    aucs = [roc_auc(probabilities[:, i], true == i) for i in range(len(labels))]
    parts = ", ".join(f"{label} {auc:.3f}" for label, auc in zip(labels, aucs))
    defined = [auc for auc in aucs if np.isfinite(auc)]  # a class absent from the set has no AUC
    mean = float(np.mean(defined)) if defined else float("nan")
    return f"{name} AUC (one-vs-rest) = {parts}; mean {mean:.3f} (N={len(true)}{when})"


def log_validation_auc(name: str, layer: TopLayer, validation: Arrays, labels: list[str], reporter: Reporter,
                       when: str = "before calibration") -> None:
    """The validation AUC of a top layer not yet calibrated (decide() calibrates it), unless told otherwise."""
    if len(validation):
        reporter.log(format_auc(name, layer.probabilities(validation.x, validation.patient), validation.y, labels,
                                when))


def read_patient_table(patient: PatientConfig, copies_cached: bool, fine_tuning: bool, warn):
    """The patient-metadata tables, read and their flags checked before any slow work; ages outside
    0..120 are made missing, with one line to `warn` per file and column."""
    from retrain.patient.table import (
        fit_encoding,
        merge_tables,
        read_metadata_csv,
        without_impossible_ages,
    )
    from retrain.patient.fusion import FUSIONS

    if patient.fusion not in FUSIONS:
        raise UserError(f"--metadata_fusion must be one of {', '.join(FUSIONS)}, got {patient.fusion!r}")
    if copies_cached and not fine_tuning:
        raise UserError("--metadata cannot be used with cached distorted copies (distortion flags without "
                        "fine-tuning); drop the distortion flags, or fine-tune with --recipe finetune")
    table = merge_tables([read_metadata_csv(path) for path in patient.files])
    fit_encoding(table, list(table.rows), *_column_lists(patient))  # a column typo fails here
    table, lines = without_impossible_ages(table, patient.columns)
    for line in lines:
        warn(line)
    return table


def _column_lists(patient: PatientConfig) -> tuple:
    return (None if patient.columns is None else list(patient.columns)), list(patient.categorical), list(patient.numeric)


@dataclass(frozen=True)
class EncodedPatients:
    encoding: object  # data.patient_metadata.MetadataEncoding
    rows: tuple[np.ndarray, np.ndarray, np.ndarray]  # encoded rows of the training, validation and test images


def encode_patients(table, patient: PatientConfig, split: Split, reporter: Reporter) -> EncodedPatients:
    """Fit the encoding on the training images only (means, categories), then encode every set."""
    from retrain.patient.table import (
        describe,
        encode,
        fit_encoding,
        match_images,
    )

    training_ids = [path for path, _ in split.training]  # matched to rows as match_images does
    encoding = fit_encoding(table, training_ids, *_column_lists(patient))
    for line in describe(encoding, table, training_ids):
        reporter.log(f"Metadata column {line}")
    sets = (split.training, split.validation, split.test)
    every_path = [path for pairs in sets for path, _ in pairs]
    rows, without_row, unused_rows = match_images(table, every_path)
    reporter.log(f"Metadata: {len(every_path) - without_row} of {len(every_path)} images have a row in "
                 f"{table.file_names()}"
                 + (f"; {without_row} without one count as all missing" if without_row else "")
                 + (f"; {unused_rows} rows match no image and are ignored" if unused_rows else ""))
    encoded = encode(encoding, rows, reporter.warn, table.where())
    ends = np.cumsum([len(pairs) for pairs in sets])
    return EncodedPatients(encoding, tuple(np.split(encoded, ends[:-1])))


def patient_card(encoded: EncodedPatients, fusion: str) -> dict:
    """What the model card records of the patient-metadata input."""
    from retrain.export.graph import PATIENT_INPUT

    return {"input_name": PATIENT_INPUT, "fusion": fusion, "columns": encoded.encoding.column_names,
            "encoding": encoded.encoding.to_json()}


def with_rows(arrays: Arrays, rows: np.ndarray | None) -> Arrays:
    return dataclasses.replace(arrays, patient=rows)
