"""ISIC 2017 Part 3: turn the challenge's layout (images + ground-truth CSV) into the
class-per-folder trees retrain reads, one per task, each with the same images listed in a
manifest (images.csv: image, label) for retrain's DataConfig.image_list.

Everything is checked before anything is written, and the trees are built beside
the output and swapped in at the end, so a bad CSV never leaves a half-made tree.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from retrain.errors import UserError

GROUND_TRUTH_COLUMNS = ("image_id", "melanoma", "seborrheic_keratosis")
METADATA_COLUMNS = ("image_id", "age_approximate", "sex")
MAX_AGE = 120  # years; an age outside 0..MAX_AGE is a typo
IMAGE_NAME = re.compile(r"(ISIC_\d{7})\.(jpe?g|png)", re.IGNORECASE)
MARKER = ".prepared_by_retrain"
MANIFEST = "images.csv"  # in each task's folder: its images (paths from that folder) and labels


@dataclass(frozen=True)
class Lesion:
    image_id: str
    melanoma: bool
    seborrheic_keratosis: bool

    @property
    def diagnosis(self) -> str:
        if self.melanoma:
            return "melanoma"
        return "seborrheic_keratosis" if self.seborrheic_keratosis else "nevus"


TASKS: dict[str, Callable[[Lesion], str]] = {
    "task1_melanoma": lambda lesion: "melanoma" if lesion.melanoma else "other",
    "task2_seborrheic_keratosis": lambda lesion: "seborrheic_keratosis" if lesion.seborrheic_keratosis else "other",
    "three_class": lambda lesion: lesion.diagnosis,
}


@dataclass
class Problems:
    """Every problem found, so one run reports them all."""

    lines: list[str] = field(default_factory=list)

    def add(self, message: str) -> None:
        self.lines.append(message)

    def raise_if_any(self, what: str) -> None:
        if self.lines:
            shown = self.lines[:20]
            more = f"\n  ... and {len(self.lines) - 20} more" if len(self.lines) > 20 else ""
            raise UserError(f"{what}: {len(self.lines)} problem(s); nothing was written\n  " + "\n  ".join(shown) + more)


def _read_csv(path: Path, required: tuple[str, ...], flag: str) -> list[dict[str, str]]:
    path = Path(path).expanduser()
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            columns = [c.strip() for c in (reader.fieldnames or [])]
            missing = [c for c in required if c not in columns]
            if missing:
                raise UserError(f"{flag} {path}: missing column(s) {', '.join(missing)} (found: {', '.join(columns) or 'none'})")
            return [{k.strip(): (v or "").strip() for k, v in row.items() if k is not None} for row in reader]
    except OSError as e:
        raise UserError(f"{flag} {path}: cannot read ({e.strerror or e})") from e
    except (csv.Error, UnicodeDecodeError) as e:
        raise UserError(f"{flag} {path}: not a readable CSV ({e})") from e


def _flag(value: str) -> bool | None:
    """The challenge writes 0.0/1.0; accept 0/1 in either spelling, nothing else."""
    try:
        number = float(value)
    except ValueError:
        return None
    return {0.0: False, 1.0: True}.get(number)


def read_ground_truth(path: Path, problems: Problems, seen: set[str] | None = None) -> list[Lesion]:
    """The good rows; `seen` collects every row's image_id, bad rows' too, so a bad row is
    reported once, not again as an image or metadata row without ground truth."""
    rows = _read_csv(path, GROUND_TRUTH_COLUMNS, "prepare_isic.ground_truth")
    lesions, seen = [], set() if seen is None else seen
    for line, row in enumerate(rows, start=2):
        image_id = row["image_id"]
        melanoma, keratosis = _flag(row["melanoma"]), _flag(row["seborrheic_keratosis"])
        if image_id in seen:
            problems.add(f"{path}:{line}: duplicate image_id {image_id}")
            continue
        seen.add(image_id)
        if melanoma is None or keratosis is None:
            problems.add(f"{path}:{line}: {image_id}: values must be 0 or 1, got melanoma={row['melanoma']!r} seborrheic_keratosis={row['seborrheic_keratosis']!r}")
            continue
        if melanoma and keratosis:
            problems.add(f"{path}:{line}: {image_id}: both melanoma and seborrheic_keratosis are 1")
            continue
        lesions.append(Lesion(image_id, melanoma, keratosis))
    return lesions


def check_metadata(path: Path, known_ids: set[str], problems: Problems) -> Counter:
    """Validate the metadata CSV against the ground truth; returns counts by sex for the report."""
    rows = _read_csv(path, METADATA_COLUMNS, "prepare_isic.metadata")
    sexes: Counter = Counter()
    seen = set()
    for line, row in enumerate(rows, start=2):
        image_id = row["image_id"]
        if image_id in seen:
            problems.add(f"{path}:{line}: duplicate image_id {image_id}")
        seen.add(image_id)
        if image_id not in known_ids:
            problems.add(f"{path}:{line}: {image_id} is not in the ground truth")
        age = _age_problem(row["age_approximate"])
        if age:
            problems.add(f"{path}:{line}: {image_id}: age_approximate {age}, got {row['age_approximate']!r}")
        sex = row["sex"].lower() or "unknown"
        if sex not in ("male", "female", "unknown"):
            problems.add(f"{path}:{line}: {image_id}: sex must be male, female or unknown, got {row['sex']!r}")
        sexes[sex] += 1
    return sexes


def _age_problem(age: str) -> str | None:
    """What is wrong with an age_approximate cell, or None."""
    if age.lower() in ("unknown", ""):
        return None
    try:
        years = float(age)
    except ValueError:
        return "must be a number or 'unknown'"
    if not 0 <= years <= MAX_AGE:
        return f"must be between 0 and {MAX_AGE} years"
    return None


def find_images(images_dir: Path) -> dict[str, Path]:
    """ISIC_<7 digits>.jpg/.jpeg/.png files; the challenge's *_superpixels.png files and others are ignored."""
    images_dir = Path(images_dir).expanduser()
    if not images_dir.is_dir():
        raise UserError(f"prepare_isic.images {images_dir}: no such directory")
    found = {}
    for path in sorted(images_dir.iterdir()):
        match = IMAGE_NAME.fullmatch(path.name)
        if match and path.is_file():
            found.setdefault(match.group(1), path)
    return found


def _place(source: Path, target: Path) -> str:
    """Hard link, else symlink, else copy; the original is never moved or changed."""
    try:
        os.link(source, target)
        return "hard link"
    except OSError:
        pass
    try:
        target.symlink_to(source.resolve())
        return "symlink"
    except OSError:
        shutil.copy2(source, target)
        return "copy"


def _write_manifest(path: Path, rows: list[tuple[str, str]]) -> None:
    """The task's images (paths from its folder) and labels: what retrain's DataConfig.image_list reads."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(("image", "label"))
        writer.writerows(rows)


@dataclass
class Prepared:
    counts: dict[str, Counter]  # task -> class -> images
    methods: Counter  # how images were placed
    sexes: Counter | None


def prepare_isic(images: Path, ground_truth: Path, output: Path, metadata: Path | None = None) -> Prepared:
    problems = Problems()
    ids: set[str] = set()
    lesions = read_ground_truth(ground_truth, problems, ids)
    found = find_images(images)
    for lesion in lesions:
        if lesion.image_id not in found:
            problems.add(f"{lesion.image_id}: in {ground_truth} but no image in {images}")
    for image_id, path in found.items():
        if image_id not in ids:
            problems.add(f"{path}: image has no row in {ground_truth}")
    sexes = check_metadata(metadata, ids, problems) if metadata else None
    problems.raise_if_any("prepare_isic")
    if not lesions:
        raise UserError(f"prepare_isic.ground_truth {ground_truth}: no rows")

    output = Path(output).expanduser()
    for task in TASKS:
        existing = output / task
        if existing.is_symlink():
            raise UserError(f"prepare_isic.output {existing}: is a symlink, and prepare_isic replaces this folder whole, so the "
                            "link would be lost; choose another prepare_isic.output, or remove the link")
        if existing.exists() and not (existing / MARKER).exists():
            raise UserError(f"prepare_isic.output {existing}: exists and was not made by prepare_isic; choose another prepare_isic.output")
    staging = output / f".prepare_isic.{os.getpid()}.tmp"
    counts: dict[str, Counter] = {}
    methods: Counter = Counter()
    try:
        for task, class_of in TASKS.items():
            counts[task] = Counter()
            listed = []
            for lesion in lesions:
                label = class_of(lesion)
                folder = staging / task / label
                folder.mkdir(parents=True, exist_ok=True)
                source = found[lesion.image_id]
                methods[_place(source, folder / source.name)] += 1
                counts[task][label] += 1
                listed.append((f"{label}/{source.name}", label))
            _write_manifest(staging / task / MANIFEST, listed)
            (staging / task / MARKER).write_text("Made by prepare_isic; safe to delete and re-create.\n")
        for task in TASKS:
            if (output / task).exists():
                shutil.rmtree(output / task)
            os.replace(staging / task, output / task)
    except OSError as e:
        raise UserError(f"prepare_isic.output {output}: cannot write ({e.strerror or e}); nothing was replaced") from e
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return Prepared(counts, methods, sexes)
