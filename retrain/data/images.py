"""The one preprocessing path: decode, orient, convert to RGB, resize.

Caching, training, evaluation and label_image all call `load_image`, so a model
never sees pixels prepared differently at serving time than at training time.
Normalisation is not done here: it lives inside each backbone, and so inside
every exported graph.

The resize is the one app frameworks apply to a `.tflite` (MediaPipe Tasks on CPU, on
Android, iOS and in Python: OpenCV's bilinear warp in 1/32-pixel fixed point), so that an
app handing MediaPipe the image file gets the probabilities `label_image` prints. An image
at least twice the model's input is first shrunk by an integer factor (box average, or a
JPEG's DCT scaling), which a bilinear resize alone would alias.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from retrain.data.augmentation import AugmentationDraw

# Bump when anything below changes the pixels produced; it is part of every cache key.
PREPROCESSING_VERSION = 2

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png"})

# Refuse images whose pixel count alone would exhaust memory (decompression bombs).
MAX_PIXELS = 120_000_000
# Refuse images too small to show anything (a 1x1 pixel is one colour, not a photo).
MIN_SIDE = 8

ImageFile.LOAD_TRUNCATED_IMAGES = False


class ImageError(ValueError):
    """An image file that cannot be used; the message names the file and the problem."""

    def __init__(self, path: Path | str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = Path(str(path))
        self.reason = reason


@dataclass(frozen=True)
class ImageBytes:
    """An image held in memory only (an upload to the web app), named for messages: every
    reader here takes it where it takes a path, and decodes it the same way. A server sets a
    lower `max_pixels` than a file's, so that a few requests at once cannot exhaust its memory."""

    name: str
    data: bytes
    max_pixels: int = MAX_PIXELS

    def __str__(self) -> str:
        return self.name


ImageSource = Path | str | ImageBytes


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def load_image(
    path: ImageSource, size: int | tuple[int, int], data: bytes | None = None, draw: AugmentationDraw | None = None
) -> np.ndarray:
    """Return the image as a height x width x 3 uint8 RGB array, or raise ImageError.

    `size` is the side of a square, or (width, height); images are squashed to it, as
    retrain.py did, not cropped.

    `data` lets a caller that already read the file (to hash it) avoid a second read.

    `draw` (one random version, see retrain.data.augmentation) crops the decoded image
    before the one resize, then flips, turns and recolours the resized pixels.
    """
    width, height = (size, size) if isinstance(size, int) else size
    zoom = draw.decode_zoom if draw else 1.0  # a crop is enlarged: decode it sharp enough
    wanted = (round(width * zoom), round(height * zoom))
    image = _decode_upright_rgb(path, data, wanted)
    factor = min(image.size[0] // wanted[0], image.size[1] // wanted[1])
    try:
        pixels = np.asarray(image.reduce(factor) if factor >= 2 else image, dtype=np.uint8)
    except (OSError, ValueError) as e:
        raise ImageError(path, f"corrupt or truncated image ({e})") from e
    box = draw.crop_box(pixels.shape[1], pixels.shape[0]) if draw else None
    pixels = resize_bilinear(pixels, width, height, box)
    return draw.apply_to_pixels(pixels) if draw else pixels


def resize_bilinear(pixels: np.ndarray, width: int, height: int,
                    box: tuple[float, float, float, float] | None = None) -> np.ndarray:
    """`pixels` (h x w x 3 uint8), or the `box` (left, top, right, bottom) of them, resized as
    MediaPipe resizes an image for a model: output pixel x samples source x * w / width (no
    half-pixel shift, no antialiasing), at positions in 1/32 pixel, the edge repeated.
    Checked pixel for pixel against MediaPipe in tests/data/test_images.py."""
    left, top, right, bottom = box or (0.0, 0.0, pixels.shape[1], pixels.shape[0])
    (up, down), row_weight = _sample_positions(top, bottom, height, pixels.shape[0])
    (back, ahead), column_weight = _sample_positions(left, right, width, pixels.shape[1])
    below, right_of = row_weight[:, None], column_weight[None, :]  # weights of the far samples, in 32nds
    above, left_of = 32 - below, 32 - right_of
    source = pixels.astype(np.int32)
    near_rows, far_rows = source[up], source[down]
    total = (near_rows[:, back] * (above * left_of)[..., None] + near_rows[:, ahead] * (above * right_of)[..., None]
             + far_rows[:, back] * (below * left_of)[..., None] + far_rows[:, ahead] * (below * right_of)[..., None])
    return ((total + 512) >> 10).astype(np.uint8)  # weights sum to 1024: rounded, never above 255


def _sample_positions(start: float, stop: float, count: int, limit: int):
    """For `count` outputs over source [start, stop): the two source indices each blends and
    the far one's weight in 32nds."""
    fixed = np.rint((start + np.arange(count) * ((stop - start) / count)) * 32).astype(np.int64)
    first, weight = fixed >> 5, (fixed & 31).astype(np.int32)
    return (np.clip(first, 0, limit - 1), np.clip(first + 1, 0, limit - 1)), weight


def load_upright(path: ImageSource, max_side: int | None = None, data: bytes | None = None) -> Image.Image:
    """The image as the model sees it before the resize (decoded, turned upright by its EXIF
    orientation, RGB), at its own size or shrunk to fit `max_side`: what heatmaps are drawn on.
    `data`: the file's bytes, when the caller has read them already."""
    image = _decode_upright_rgb(path, data, (max_side, max_side) if max_side else None)
    if max_side and max(image.size) > max_side:
        image.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
    return image


def _decode_upright_rgb(path: ImageSource, data: bytes | None, draft_size: tuple[int, int] | None) -> Image.Image:
    """The one decoding step every reader of images shares; `draft_size` lets a JPEG decode
    straight to the smallest size (DCT scaling) that is still at least that large."""
    limit = MAX_PIXELS
    if isinstance(path, ImageBytes):
        path, data, limit = path.name, path.data, path.max_pixels
    if data is None:
        try:
            data = Path(path).read_bytes()
        except OSError as e:
            raise ImageError(path, f"cannot read file ({e.strerror or e})") from e
    if not data:
        raise ImageError(path, "empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            # Pillow warns from 89 megapixels; our own limit below is the one the README gives.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if image.size[0] * image.size[1] > limit:
                raise ImageError(path, f"image is too large: {image.size[0]}x{image.size[1]} pixels "
                                       f"({image.size[0] * image.size[1] / 1e6:.1f} megapixels; "
                                       f"the limit is {limit / 1e6:g} megapixels)")
            if min(image.size) < MIN_SIDE:
                raise ImageError(path, f"image is too small: {image.size[0]}x{image.size[1]} pixels "
                                       f"(the least is {MIN_SIDE} pixels a side)")
            if image.format == "JPEG" and draft_size:
                image.draft(image.mode if image.mode in ("RGB", "L") else None, draft_size)
            image.load()
            ImageOps.exif_transpose(image, in_place=True)  # in place: no copy of an upright image
            return _to_rgb(image)
    except ImageError:
        raise
    except UnidentifiedImageError as e:
        raise ImageError(path, "not an image, or a format that cannot be read") from e
    except Image.DecompressionBombError as e:
        raise ImageError(path, f"image is too large: over {2 * Image.MAX_IMAGE_PIXELS / 1e6:.0f} megapixels "
                               f"(the limit is {limit / 1e6:g} megapixels)") from e
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(path, f"corrupt or truncated image ({e})") from e


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        # 16-bit or float greyscale: scale the full range to 8 bits instead of clipping.
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if values.max(initial=0) > 255 else 255.0
        values = np.clip(values * (255.0 / top), 0, 255).astype(np.uint8)
        return Image.fromarray(values, mode="L").convert("RGB")
    if image.mode in ("P", "PA") or "transparency" in image.info:
        image = image.convert("RGBA")
    return image.convert("RGB")


def load_batches(paths: list[Path], size: int | tuple[int, int], batch_size: int = 32):
    """Yield (indices, float32 pixels or None, failures) per batch of paths: what every
    consumer of many images (evaluate, TFLite parity) needs from load_image."""
    for start in range(0, len(paths), batch_size):
        indices, pixels, failures = [], [], []
        for i in range(start, min(start + batch_size, len(paths))):
            try:
                pixels.append(load_image(paths[i], size))
                indices.append(i)
            except ImageError as e:
                failures.append(e)
        yield indices, np.stack(pixels).astype(np.float32) if pixels else None, failures


def map_batches(fn, paths: list[Path], size: int | tuple[int, int], batch_size: int = 32, progress=None,
                beside: np.ndarray | None = None):
    """`fn` (pixels [n, h, w, 3] -> [n, k]) over every readable path, read as load_batches
    reads them: the outputs in path order (zero rows for unreadable paths; None when none
    was readable), a mask of the readable paths, and the failures. `progress` is told how
    many paths each batch took. With `beside` (rows aligned with `paths`, e.g. encoded
    patient metadata), `fn` is called as fn(pixels, beside rows of the same images)."""
    outputs, ok, failures = None, np.zeros(len(paths), bool), []
    for indices, pixels, unreadable in load_batches(paths, size, batch_size):
        failures += unreadable
        if progress:
            progress(len(indices) + len(unreadable))
        if pixels is not None:
            output = np.asarray(fn(pixels) if beside is None else fn(pixels, beside[indices]))
            if outputs is None:
                outputs = np.zeros((len(paths), output.shape[1]), np.float32)
            outputs[indices] = output
            ok[indices] = True
    return outputs, ok, failures
