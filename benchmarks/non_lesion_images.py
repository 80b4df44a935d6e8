"""Images that are not skin lesions, for checking what a lesion model flags as unlike its
training images: generated ones (blank frames, noise, text, screenshot-like UI, checkerboards)
and the real pictures that installed Python packages ship (photos, logos, icons, an MRI slice).

`write_generated(folder, count)` writes `count` images of every generated kind, the same
bytes on every run (each image has its own seed, so asking for more keeps the first ones);
`package_images()` lists the real pictures found; `write_photo_crops` cuts more samples
from the photos. `python -m benchmarks.non_lesion_images FOLDER [--count N]` writes all of
them into FOLDER, one subfolder per kind.
"""

from __future__ import annotations

import argparse
import gzip
import sysconfig
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

SIZE = 256  # the side of the ISIC 2017 copies in ../shared
MIN_SIDE = 32  # smaller package pictures are toolbar icons: too few pixels to mean anything
WORDS = ["patient", "lesion", "report", "image", "model", "score", "threshold", "open", "save", "cancel", "settings",
         "help", "file", "edit", "view", "window", "error", "warning", "total", "date", "name", "address", "invoice",
         "order", "shipping", "python", "version", "update"]


def _blank(rng: np.random.Generator, index: int, size: int) -> Image.Image:
    """Black, white, then uniform random colours."""
    colour = ((0, 0, 0), (255, 255, 255))[index] if index < 2 else tuple(int(c) for c in rng.integers(0, 256, 3))
    return Image.new("RGB", (size, size), colour)


def _uniform_noise(rng: np.random.Generator, index: int, size: int) -> Image.Image:
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


def _gaussian_noise(rng: np.random.Generator, index: int, size: int) -> Image.Image:
    """Noise around a random mean colour, as from a sensor with the lens cap on."""
    pixels = rng.normal(rng.uniform(40, 215, 3), rng.uniform(15, 60), (size, size, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _smooth_noise(rng: np.random.Generator, index: int, size: int) -> Image.Image:
    """Soft colour blotches: coarse noise enlarged, nearer to a photo's statistics than pixel noise."""
    coarse = rng.integers(0, 256, (int(rng.integers(3, 12)),) * 2 + (3,), dtype=np.uint8)
    return Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC)


def _text(rng: np.random.Generator, size: int, ink: tuple, paper: tuple) -> Image.Image:
    image = Image.new("RGB", (size, size), paper)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=int(rng.integers(10, 24)))
    y = int(rng.integers(2, 12))
    while y < size - 8:
        draw.text((int(rng.integers(2, 16)), y), " ".join(rng.choice(WORDS, 8)), fill=ink, font=font)
        y += int(font.size * rng.uniform(1.2, 1.8))
    return image


def _dark_on_light(rng: np.random.Generator, index: int, size: int) -> Image.Image:
    return _text(rng, size, tuple(int(c) for c in rng.integers(0, 60, 3)), tuple(int(c) for c in rng.integers(225, 256, 3)))


def _light_on_dark(rng: np.random.Generator, index: int, size: int) -> Image.Image:
    return _text(rng, size, tuple(int(c) for c in rng.integers(190, 256, 3)), tuple(int(c) for c in rng.integers(0, 50, 3)))


def _ui_blocks(rng: np.random.Generator, index: int, size: int) -> Image.Image:
    """A screenshot-like window: title bar, text lines, fields and buttons on a flat background."""
    image = Image.new("RGB", (size, size), tuple(int(c) for c in rng.integers(220, 250, 3)))
    draw = ImageDraw.Draw(image)
    accent = tuple(int(c) for c in rng.integers(0, 200, 3))
    draw.rectangle((0, 0, size, size // 10), fill=accent)
    font = ImageFont.load_default(size=11)
    for y in range(size // 10 + 8, size - 24, 26):
        kind = rng.integers(3)
        if kind == 0:
            draw.text((10, y), " ".join(rng.choice(WORDS, 4)), fill=(30, 30, 30), font=font)
        elif kind == 1:
            draw.rectangle((10, y, size - 10, y + 18), fill=(255, 255, 255), outline=(150, 150, 150))
        else:
            draw.rounded_rectangle((size - 90, y, size - 10, y + 20), radius=5, fill=accent)
            draw.text((size - 80, y + 4), str(rng.choice(WORDS)), fill=(255, 255, 255), font=font)
    return image


def _checkerboard(rng: np.random.Generator, index: int, size: int) -> Image.Image:
    """Black and white or a random colour pair, every other one; squares of 4 to 64 pixels, shifted."""
    square = int(rng.integers(4, 65))
    colours = np.array([(0, 0, 0), (255, 255, 255)] if index % 2 == 0 else rng.integers(0, 256, (2, 3)), np.uint8)
    y, x = (np.indices((size, size)) + rng.integers(0, square, (2, 1, 1))) // square
    return Image.fromarray(colours[(x + y) % 2])


GENERATORS: dict[str, Callable[[np.random.Generator, int, int], Image.Image]] = {
    "blank": _blank,
    "noise, uniform": _uniform_noise,
    "noise, gaussian": _gaussian_noise,
    "noise, smooth blotches": _smooth_noise,
    "text, dark on light": _dark_on_light,
    "text, light on dark": _light_on_dark,
    "UI screenshot-like": _ui_blocks,
    "checkerboard": _checkerboard,
}


def folder_name(kind: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in kind).strip("_").replace("__", "_")


def generated_image(kind: str, index: int, size: int = SIZE, seed: int = 0) -> Image.Image:
    """Image `index` of a kind; its own seed, so it does not depend on how many are made."""
    rng = np.random.default_rng((seed, zlib.crc32(kind.encode()), index))
    return GENERATORS[kind](rng, index, size)


def write_generated(folder: Path, count: int, size: int = SIZE, seed: int = 0) -> dict[str, list[Path]]:
    """`count` PNGs of every generated kind under folder/<kind>/."""
    written = {}
    for kind in GENERATORS:
        target = Path(folder) / folder_name(kind)
        target.mkdir(parents=True, exist_ok=True)
        written[kind] = [target / f"{folder_name(kind)}_{i:03d}.png" for i in range(count)]
        for i, path in enumerate(written[kind]):
            generated_image(kind, i, size, seed).save(path)
    return written


def package_images(min_side: int = MIN_SIDE) -> dict[str, list[Path]]:
    """The JPEG and PNG files of the installed packages, at least min_side on both sides:
    JPEGs are photos (matplotlib's Grace Hopper, scikit-learn's china and flower), PNGs
    graphics (logos, icons, scipy's dots)."""
    found: dict[str, list[Path]] = {"photo (packages)": [], "graphic (packages)": []}
    for root in sorted({Path(sysconfig.get_paths()[key]) for key in ("purelib", "platlib")}):
        for path in sorted(root.rglob("*")):
            if path.suffix.lower() in {".jpg", ".jpeg", ".png"} and path.is_file() and _big_enough(path, min_side):
                found["photo (packages)" if path.suffix.lower() != ".png" else "graphic (packages)"].append(path)
    return {kind: paths for kind, paths in found.items() if paths}


def _big_enough(path: Path, min_side: int) -> bool:
    try:
        with Image.open(path) as image:
            return min(image.size) >= min_side
    except (OSError, ValueError):
        return False


def write_photo_crops(photos: list[Path], folder: Path, count: int, seed: int = 0) -> list[Path]:
    """`count` square crops (10-50 % of the area, anywhere), spread over the photos: more
    samples of real photo statistics (skin, hair, fabric, sky) than the few photos give."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    written = []
    for i in range(count if photos else 0):
        with Image.open(photos[i % len(photos)]) as image:
            image = image.convert("RGB")
            side = int(min(image.size) * np.sqrt(rng.uniform(0.1, 0.5)))
            left, top = (int(rng.integers(0, extent - side + 1)) for extent in image.size)
            written.append(folder / f"crop_{i:03d}.jpg")
            image.crop((left, top, left + side, top + side)).resize((SIZE, SIZE)).save(written[-1], quality=90)
    return written


def write_mri_slice(folder: Path) -> list[Path]:
    """matplotlib's sample MRI slice (256 x 256, 16-bit) as an 8-bit PNG: a medical image, not a lesion."""
    source = Path(sysconfig.get_paths()["purelib"]) / "matplotlib" / "mpl-data" / "sample_data" / "s1045.ima.gz"
    if not source.is_file():
        return []
    pixels = np.frombuffer(gzip.decompress(source.read_bytes()), np.uint16).reshape(256, 256).astype(np.float64)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "mri_s1045.png"
    Image.fromarray((255 * pixels / max(pixels.max(), 1)).astype(np.uint8)).save(path)
    return [path]


def write_all(folder: Path, count: int, seed: int = 0) -> dict[str, list[Path]]:
    """Every kind: generated, package pictures (listed where they are, not copied), photo crops, MRI."""
    kinds = write_generated(folder, count, seed=seed)
    kinds.update(package_images())
    kinds["photo crops (packages)"] = write_photo_crops(kinds.get("photo (packages)", []), folder / "photo_crops", count, seed)
    kinds["MRI slice (matplotlib)"] = write_mri_slice(folder / "mri")
    return {kind: paths for kind, paths in kinds.items() if paths}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--count", type=int, default=20, help="images per generated kind and photo crops")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for kind, paths in write_all(args.folder, args.count, args.seed).items():
        print(f"{kind}: {len(paths)}" + ("" if paths[0].is_relative_to(args.folder) else f" ({paths[0].parent} ...)"))


if __name__ == "__main__":
    main()
