"""Cached augmentation: K distorted copies of every training image, computed once.

tensorflow-for-poets' distortion flags made every training step run the backbone on
freshly distorted images, so they turned the cache off. Here each training image gets
`--distorted_copies K` variants whose bottlenecks are cached like any other entry
(key: content key + distortion settings + copy index), and the head trains on the
original plus its copies. A copy's random draw is seeded by (content key, settings,
copy index), so a killed and rerun extraction computes identical features and a rerun
reuses every entry.

The distortion itself is applied inside `retrain.images.load_image`, the one
preprocessing path: the crop is taken from the decoded image before the single
resize, then flips, quarter turns and brightness act on the resized uint8 pixels.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from retrain.errors import UserError

# Bump when `draw_for` or `apply_to_pixels` change what a copy looks like; part of every copy's key.
AUGMENTATION_VERSION = 1

DEFAULT_DISTORTED_COPIES = 5


@dataclass(frozen=True)
class Distortion:
    """The settings, as retrain.py's flags: crop, scale and brightness are percentages."""

    flip_left_right: bool = False
    flip_up_down: bool = False
    rotate90: bool = False  # a random number of quarter turns (dermoscopy has no "up")
    random_crop: int = 0  # % margin around the image that a random crop removes
    random_scale: int = 0  # up to this % random zoom-in
    random_brightness: int = 0  # pixels multiplied by a random factor within +/- this %

    @property
    def active(self) -> bool:
        return any((self.flip_left_right, self.flip_up_down, self.rotate90,
                    self.random_crop, self.random_scale, self.random_brightness))

    def settings_key(self) -> str:
        """A short stable name of the settings, e.g. 'aug1-lr-ud-r90-c10-s0-b0', used in cache keys."""
        flips = [name for name, on in (("lr", self.flip_left_right), ("ud", self.flip_up_down), ("r90", self.rotate90)) if on]
        numbers = [f"c{self.random_crop}", f"s{self.random_scale}", f"b{self.random_brightness}"]
        return "-".join([f"aug{AUGMENTATION_VERSION}", *flips, *numbers])

    def describe(self) -> str:
        parts = [flag for flag, on in (("flip_left_right", self.flip_left_right), ("flip_up_down", self.flip_up_down),
                                      ("rotate90", self.rotate90)) if on]
        parts += [f"{name} {value}%" for name, value in (("random_crop", self.random_crop), ("random_scale", self.random_scale),
                                                        ("random_brightness", self.random_brightness)) if value]
        return ", ".join(parts) or "none"


def check_distortion(distortion: Distortion, distorted_copies: int | None) -> None:
    """Reject impossible settings before any slow work."""
    for flag in ("random_crop", "random_scale", "random_brightness"):
        value = getattr(distortion, flag)
        if value < 0:
            raise UserError(f"--{flag} must be a percentage >= 0, got {value}")
    if distortion.random_brightness >= 100:
        raise UserError(f"--random_brightness must be below 100 (%), got {distortion.random_brightness}")
    if distorted_copies is not None and distorted_copies < 0:
        raise UserError(f"--distorted_copies must be >= 0, got {distorted_copies}")
    if distorted_copies and not distortion.active:
        raise UserError(
            "--distorted_copies needs a distortion flag (--flip_left_right, --flip_up_down, --rotate90, "
            "--random_crop, --random_scale or --random_brightness); without one every copy is the original"
        )


def copies_to_make(distortion: Distortion, distorted_copies: int | None) -> int:
    """K: as given, else the default when any distortion is asked for, else none."""
    if distorted_copies is not None:
        return distorted_copies
    return DEFAULT_DISTORTED_COPIES if distortion.active else 0


@dataclass(frozen=True)
class DistortionDraw:
    """One copy's concrete random values, applied by load_image."""

    zoom: float  # >= 1: the crop keeps 1/zoom of each side
    crop_x: float  # where the crop sits in the room left, 0..1
    crop_y: float
    flip_left_right: bool
    flip_up_down: bool
    quarter_turns: int  # counter-clockwise, 0..3
    brightness: float  # pixel multiplier

    def crop_box(self, width: int, height: int) -> tuple[float, float, float, float] | None:
        """The region of the decoded image to keep, or None for the whole image."""
        if self.zoom <= 1:
            return None
        box_width, box_height = width / self.zoom, height / self.zoom
        left, top = self.crop_x * (width - box_width), self.crop_y * (height - box_height)
        return (left, top, left + box_width, top + box_height)

    def apply_to_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """Flips, quarter turns (half turns only for a non-square image, to keep its shape) and brightness."""
        if self.flip_left_right:
            pixels = pixels[:, ::-1]
        if self.flip_up_down:
            pixels = pixels[::-1]
        turns = self.quarter_turns if pixels.shape[0] == pixels.shape[1] else self.quarter_turns // 2 * 2
        pixels = np.rot90(pixels, turns)
        if self.brightness != 1:
            pixels = np.clip(np.rint(pixels.astype(np.float32) * self.brightness), 0, 255)
        return np.ascontiguousarray(pixels, dtype=np.uint8)


@dataclass(frozen=True)
class DistortedCopy:
    """Copy number `index` of an image under `distortion`."""

    distortion: Distortion
    index: int

    def cache_key(self, content: str) -> str:
        return f"{content}-{self.distortion.settings_key()}-copy{self.index}"

    def draw_for(self, content: str) -> DistortionDraw:
        """The same values every time for the same (content key, settings, copy index)."""
        seed = hashlib.sha256(self.cache_key(content).encode()).digest()
        rng = np.random.default_rng(int.from_bytes(seed[:16], "little"))
        d = self.distortion
        margin = 1 + d.random_crop / 100
        zoom = margin * rng.uniform(1, 1 + d.random_scale / 100)
        crop_x, crop_y = rng.uniform(0, 1, size=2)
        flip_lr, flip_ud = rng.random(2) < 0.5
        turns = int(rng.integers(0, 4))
        brightness = rng.uniform(1 - d.random_brightness / 100, 1 + d.random_brightness / 100)
        return DistortionDraw(
            zoom=float(zoom),
            crop_x=float(crop_x),
            crop_y=float(crop_y),
            flip_left_right=bool(d.flip_left_right and flip_lr),
            flip_up_down=bool(d.flip_up_down and flip_ud),
            quarter_turns=turns if d.rotate90 else 0,
            brightness=float(brightness) if d.random_brightness else 1.0,
        )


@dataclass
class DistortedTraining:
    """Training rows with the copies added, and what extracting the copies did."""

    features: np.ndarray
    labels: np.ndarray
    computed: int
    reused: int
    failures: list


def add_distorted_copies(
    training_paths: list[Path],
    train_x: np.ndarray,
    train_y: np.ndarray,
    distortion: Distortion,
    copies: int,
    backbone,
    cache,
    progress: Callable[[int], None] | None = None,
) -> DistortedTraining:
    """The training rows followed by `copies` distorted rows per training image.

    Every image then has K + 1 rows (the original counts as one more copy), so drawing
    training batches uniformly from the rows picks an image as before and one of its
    versions at random. Only training images are passed in: validation and test images
    are never distorted, and no copy of them is ever trained on."""
    from retrain.bottlenecks import compute_bottlenecks

    paths = [path for path in training_paths for _ in range(copies)]
    variants = [DistortedCopy(distortion, index) for _ in training_paths for index in range(copies)]
    labels = np.repeat(train_y, copies)
    extraction = compute_bottlenecks(paths, backbone, cache, progress=progress, distortions=variants)
    return DistortedTraining(
        features=np.concatenate([train_x, extraction.features[extraction.ok]]),
        labels=np.concatenate([train_y, labels[extraction.ok]]),
        computed=extraction.computed,
        reused=extraction.reused,
        failures=extraction.failures,
    )
