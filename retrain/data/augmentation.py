"""Augmentation: the random versions of training images that training sees.

Two ways, both drawing a `AugmentationDraw` that `retrain.data.images.load_image` applies
inside the one preprocessing path:

- `EpochAugmentation` (fine-tuning): a fresh random version of every training image
  every epoch, drawn from (seed, epoch, image) so a resumed run sees what an
  uninterrupted one would;
- `CopyAugmentation` + `DistortedCopy` (a top layer on cached bottlenecks): K distorted
  copies of every training image, computed once and cached, as below.

tensorflow-for-poets' distortion flags made every training step run the backbone on
freshly distorted images, so they turned the cache off. Here each training image gets
`FeatureConfig.distorted_copies K` variants whose bottlenecks are cached like any other entry
(key: content key + distortion settings + copy index), and the top layer trains on the
original plus its copies. A copy's random draw is seeded by (content key, settings,
copy index), so a killed and rerun extraction computes identical features and a rerun
reuses every entry.

The crop is taken from the decoded image before the single resize, then flips,
quarter turns and colour changes act on the resized uint8 pixels.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageStat

from retrain.errors import UserError

# Bump when `draw_for` or `apply_to_pixels` change what a copy looks like; part of every copy's key.
AUGMENTATION_VERSION = 2  # 2: colour changes rounded by Pillow (half up)

DEFAULT_DISTORTED_COPIES = 5

# ITU-R 601 luma weights, for contrast and saturation.
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)
_RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], np.float32)
_YIQ_TO_RGB = np.linalg.inv(_RGB_TO_YIQ)


@dataclass(frozen=True)
class AugmentationDraw:
    """One random version of an image, drawn by DistortedCopy or EpochAugmentation below and
    applied by retrain.data.images.load_image: a crop of the decoded image (before the one
    resize), then flips, quarter turns and colour changes of the resized pixels."""

    zoom: float  # >= 1: the crop keeps 1/zoom of the width
    crop_x: float  # where the crop sits in the room left, 0..1
    crop_y: float
    flip_left_right: bool
    flip_up_down: bool
    quarter_turns: int  # counter-clockwise, 0..3
    brightness: float  # pixel multiplier
    zoom_y: float | None = None  # the crop keeps 1/zoom_y of the height; None = zoom (same aspect)
    contrast: float = 1.0  # distance from the mean grey level multiplied by this
    saturation: float = 1.0  # distance from each pixel's grey multiplied by this
    hue: float = 0.0  # hue turned by this fraction of the colour wheel

    def crop_box(self, width: int, height: int) -> tuple[float, float, float, float] | None:
        """The region of the decoded image to keep, or None for the whole image."""
        zoom_y = self.zoom if self.zoom_y is None else self.zoom_y
        if self.zoom <= 1 and zoom_y <= 1:
            return None
        box_width, box_height = width / max(self.zoom, 1.0), height / max(zoom_y, 1.0)
        left, top = self.crop_x * (width - box_width), self.crop_y * (height - box_height)
        return (left, top, left + box_width, top + box_height)

    @property
    def decode_zoom(self) -> float:
        """How much larger than the target the decoded image must be for the crop to stay sharp."""
        return max(self.zoom, self.zoom if self.zoom_y is None else self.zoom_y, 1.0)

    def apply_to_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """Flips, quarter turns (half turns only for a non-square image, to keep its shape),
        then brightness, contrast, saturation and hue, rounded to uint8 once."""
        if self.flip_left_right:
            pixels = pixels[:, ::-1]
        if self.flip_up_down:
            pixels = pixels[::-1]
        turns = self.quarter_turns if pixels.shape[0] == pixels.shape[1] else self.quarter_turns // 2 * 2
        pixels = np.rot90(pixels, turns)
        pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
        if (self.brightness, self.contrast, self.saturation, self.hue) == (1.0, 1.0, 1.0, 0.0):
            return pixels
        image = Image.fromarray(pixels)
        return np.asarray(image.convert("RGB", self.colour_matrix(ImageStat.Stat(image).mean)))

    def colour_matrix(self, channel_means) -> tuple[float, ...]:
        """Brightness, contrast, saturation and hue are all affine in RGB, so they are one
        3x4 matrix, which Pillow applies in C, rounding once (a tenth of NumPy's time)."""
        grey = self.brightness * float(np.asarray(channel_means) @ _LUMA)  # mean grey after brightness
        saturate = self.saturation * np.eye(3) + (1 - self.saturation) * np.outer(np.ones(3), _LUMA)
        linear = _hue_rotation(self.hue) @ saturate if self.hue else saturate
        offset = (1 - self.contrast) * grey * linear.sum(axis=1)
        matrix = np.hstack([self.contrast * self.brightness * linear, offset[:, None]])
        return tuple(float(v) for v in matrix.ravel())


def _hue_rotation(turn: float) -> np.ndarray:
    """RGB -> RGB matrix turning the hue by `turn` of a full circle (a rotation of the YIQ chroma plane)."""
    angle = 2 * np.pi * turn
    cos, sin = np.cos(angle), np.sin(angle)
    rotate = np.array([[1, 0, 0], [0, cos, -sin], [0, sin, cos]], np.float32)
    return _YIQ_TO_RGB @ rotate @ _RGB_TO_YIQ


@dataclass(frozen=True)
class CopyAugmentation:
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


def check_copy_augmentation(distortion: CopyAugmentation, distorted_copies: int | None) -> None:
    """Reject impossible settings before any slow work."""
    for name in ("random_crop", "random_scale", "random_brightness"):
        value = getattr(distortion, name)
        if not (math.isfinite(value) and value >= 0):
            raise UserError(f"CopyAugmentation.{name} must be a percentage >= 0, got {value}")
    if distortion.random_brightness >= 100:
        raise UserError(f"CopyAugmentation.random_brightness must be below 100 (%), got {distortion.random_brightness}")
    if distorted_copies is not None and distorted_copies < 0:
        raise UserError(f"FeatureConfig.distorted_copies must be >= 0, got {distorted_copies}")
    if distorted_copies and not distortion.active:
        raise UserError(
            "FeatureConfig.distorted_copies needs a distortion flag (CopyAugmentation.flip_left_right, "
            "CopyAugmentation.flip_up_down, CopyAugmentation.rotate90, CopyAugmentation.random_crop, "
            "CopyAugmentation.random_scale or CopyAugmentation.random_brightness); without one every copy is the original"
        )


def copies_to_make(distortion: CopyAugmentation, distorted_copies: int | None) -> int:
    """K: as given, else the default when any distortion is asked for, else none."""
    if distorted_copies is not None:
        return distorted_copies
    return DEFAULT_DISTORTED_COPIES if distortion.active else 0


@dataclass(frozen=True)
class DistortedCopy:
    """Copy number `index` of an image under `distortion`."""

    distortion: CopyAugmentation
    index: int

    def cache_key(self, content: str) -> str:
        return f"{content}-{self.distortion.settings_key()}-copy{self.index}"

    def draw_for(self, content: str) -> AugmentationDraw:
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
        return AugmentationDraw(
            zoom=float(zoom),
            crop_x=float(crop_x),
            crop_y=float(crop_y),
            flip_left_right=bool(d.flip_left_right and flip_lr),
            flip_up_down=bool(d.flip_up_down and flip_ud),
            quarter_turns=turns if d.rotate90 else 0,
            brightness=float(brightness) if d.random_brightness else 1.0,
        )


@dataclass(frozen=True)
class EpochAugmentation:
    """Fine-tuning's per-epoch augmentation. Percentages as retrain.py's flags; a
    random_crop or random_scale given replaces the area crop with retrain.py's crop."""

    crop_area: float = 1.0  # a random crop keeps this to 100 % of the image's area (1 = no crop)
    crop_aspect: float = 1.0  # ... with its aspect ratio changed by up to this factor either way
    flip_left_right: bool = False
    flip_up_down: bool = False
    rotate90: bool = False
    random_crop: int = 0
    random_scale: int = 0
    random_brightness: int = 0  # pixels multiplied by a random factor within +/- this %
    random_contrast: int = 0  # contrast multiplied by a random factor within +/- this %
    random_saturation: int = 0  # saturation multiplied by a random factor within +/- this %
    random_hue: float = 0.0  # hue turned by up to +/- this % of the colour wheel

    @property
    def active(self) -> bool:
        return self != EpochAugmentation()

    def describe(self) -> str:
        parts = []
        if self.random_crop or self.random_scale:
            parts.append(f"crop margin {self.random_crop}%, zoom up to {self.random_scale}%")
        elif self.crop_area < 1 or self.crop_aspect > 1:
            parts.append(f"crop {100 * self.crop_area:.0f}-100% of the area, aspect up to x{self.crop_aspect:.3g}")
        parts += [name for name, on in (("flips left-right", self.flip_left_right), ("flips up-down", self.flip_up_down),
                                        ("quarter turns", self.rotate90)) if on]
        parts += [f"{name} +/-{value:g}%" for name, value in (
            ("brightness", self.random_brightness), ("contrast", self.random_contrast),
            ("saturation", self.random_saturation), ("hue", self.random_hue)) if value]
        return ", ".join(parts) or "none"

    def draw(self, seed: int, epoch: int, index: int) -> AugmentationDraw | None:
        """Image `index`'s version in `epoch`: the same for the same three numbers, whatever ran before."""
        if not self.active:
            return None
        rng = np.random.default_rng([seed, epoch, index])
        zoom_x = zoom_y = 1.0
        if self.random_crop or self.random_scale:
            zoom_x = zoom_y = (1 + self.random_crop / 100) * rng.uniform(1, 1 + self.random_scale / 100)
        elif self.crop_area < 1 or self.crop_aspect > 1:
            area = rng.uniform(self.crop_area, 1.0)
            aspect = math.exp(rng.uniform(-math.log(self.crop_aspect), math.log(self.crop_aspect)))
            zoom_x = 1 / min(1.0, math.sqrt(area * aspect))
            zoom_y = 1 / min(1.0, math.sqrt(area / aspect))
        crop_x, crop_y = rng.uniform(0, 1, size=2)
        flips = rng.random(2) < 0.5
        turns = int(rng.integers(0, 4))
        brightness, contrast, saturation = (
            rng.uniform(1 - p / 100, 1 + p / 100) if p else 1.0
            for p in (self.random_brightness, self.random_contrast, self.random_saturation)
        )
        hue = rng.uniform(-self.random_hue / 100, self.random_hue / 100) if self.random_hue else 0.0
        return AugmentationDraw(
            zoom=float(zoom_x), zoom_y=float(zoom_y), crop_x=float(crop_x), crop_y=float(crop_y),
            flip_left_right=bool(self.flip_left_right and flips[0]), flip_up_down=bool(self.flip_up_down and flips[1]),
            quarter_turns=turns if self.rotate90 else 0,
            brightness=float(brightness), contrast=float(contrast), saturation=float(saturation), hue=float(hue),
        )


def check_epoch_augmentation(augmentation: EpochAugmentation) -> None:
    """Reject impossible settings before any slow work."""
    if not 0 < augmentation.crop_area <= 1:
        raise UserError(f"EpochAugmentation.crop_area must be in (0, 1], got {augmentation.crop_area}")
    if not (math.isfinite(augmentation.crop_aspect) and augmentation.crop_aspect >= 1):
        raise UserError(f"EpochAugmentation.crop_aspect must be a finite number, 1 (keep the aspect) or more, got {augmentation.crop_aspect}")
    for name in ("random_crop", "random_scale", "random_brightness", "random_contrast", "random_saturation", "random_hue"):
        value = getattr(augmentation, name)
        if not (math.isfinite(value) and value >= 0):
            raise UserError(f"EpochAugmentation.{name} must be a percentage >= 0, got {value}")
    for name in ("random_brightness", "random_contrast", "random_saturation"):
        if getattr(augmentation, name) >= 100:
            raise UserError(f"EpochAugmentation.{name} must be below 100 (%), got {getattr(augmentation, name)}")
    if augmentation.random_hue > 50:
        raise UserError(f"EpochAugmentation.random_hue must be at most 50 (% of the colour wheel), got {augmentation.random_hue}")
