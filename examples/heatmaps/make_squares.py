"""Write a class-per-folder tree where the class is the colour of a square at a random
place on a grey background, plus new images to classify: the data of the heatmap
example in README.md. Usage: python make_squares.py OUT_DIR"""

import sys
from pathlib import Path

import numpy as np
from PIL import Image

COLOURS = {"red": (215, 35, 35), "green": (35, 185, 55), "blue": (35, 55, 215)}
SIZE, SIDE = 192, 64


def square_image(colour, rng: np.random.Generator) -> Image.Image:
    pixels = np.clip(150 + rng.normal(0, 12, (SIZE, SIZE, 3)), 0, 255)
    x, y = rng.integers(0, SIZE - SIDE, 2)
    pixels[y:y + SIDE, x:x + SIDE] = colour
    return Image.fromarray(pixels.astype(np.uint8))


def main(out: Path) -> None:
    rng = np.random.default_rng(0)
    for name, colour in COLOURS.items():
        for split, count in (("train", 16), ("test", 6)):
            folder = out / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                square_image(colour, rng).save(folder / f"{name}_{i}.png")
    print(f"Wrote {out / 'train'} (16 per class) and {out / 'test'} (6 per class)")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
