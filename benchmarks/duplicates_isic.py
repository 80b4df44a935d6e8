"""`python -m benchmarks.duplicates_isic`: the copies `retrain` finds between the ISIC 2017
training (2000) and validation (150) images in ../shared/data/isic2017, and what finding them
costs: the wall and CPU time of retrain.data.duplicates.find_copies on the 2150 images (best of
three rounds; the machine is shared), and, for the threshold's margin, the closest pairs of
pictures among all of them, within the training set too (retrain compares sets only).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from retrain.data.dataset import list_images
from retrain.data.duplicates import (
    COLOUR_TOLERANCE,
    NEAR_DISTANCE,
    find_copies,
    fingerprints,
)

ISIC_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "isic2017"


def _timed(training: list[Path], validation: list[Path], rounds: int):
    best = None
    for _ in range(rounds):
        wall, cpu = time.perf_counter(), time.process_time()
        copies = find_copies(training, validation)
        figures = (time.perf_counter() - wall, time.process_time() - cpu)
        best = figures if best is None or figures[0] < best[0] else best
    return copies, best


def _closest_pairs(paths: list[Path], count: int) -> tuple[int, list[str]]:
    """How many pairs the check would call copies, and the closest pairs by hash among pictures
    whose mean colours are within the tolerance."""
    found = fingerprints(paths)
    distances = np.bitwise_count(found.phash[:, None] ^ found.phash[None, :]).astype(int)
    colours = np.abs(found.colour[:, None] - found.colour[None]).max(axis=-1)
    distances[colours > COLOUR_TOLERANCE] = 64
    distances[np.tril_indices(len(paths))] = 64
    order = np.argsort(distances, axis=None)[:count]
    return int((distances <= NEAR_DISTANCE).sum()), [f"{distances.flat[i]:2d} bits: {paths[i // len(paths)].name} {paths[i % len(paths)].name}" for i in order]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--isic_dir", type=Path, default=ISIC_DIR)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    training = list_images(args.isic_dir / "ISIC-2017_Training_Data")
    validation = list_images(args.isic_dir / "ISIC-2017_Validation_Data")
    if not training or not validation:
        raise SystemExit(f"no ISIC 2017 training/validation images under {args.isic_dir}")
    copies, (wall, cpu) = _timed(training, validation, args.rounds)
    exact = sum(c.kind == "exact" for c in copies)
    print(f"ISIC 2017: {len(training)} training, {len(validation)} validation images; threshold {NEAR_DISTANCE} bits, "
          f"colours within {COLOUR_TOLERANCE:g}")
    print(f"validation images that copy a training image: {len(copies)} ({exact} exact, {len(copies) - exact} near)")
    for copy in copies:
        print(f"  {copy.describe()}")
    print(f"check time on {len(training) + len(validation)} images: {wall:.2f} s wall, {cpu:.2f} s CPU "
          f"(best of {args.rounds})")
    matching, closest = _closest_pairs(training + validation, 12)
    print(f"pairs anywhere among the {len(training) + len(validation)} that match (within training too): {matching}; "
          "the closest pairs (colours within the tolerance):")
    for line in closest:
        print(f"  {line}")


if __name__ == "__main__":
    main()
