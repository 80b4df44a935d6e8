"""Fixtures: small synthetic image trees, and a private cache dir so tests never touch ~/.cache."""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

COLOURS = {"red": (210, 40, 40), "green": (40, 190, 60), "blue": (40, 60, 210)}


@pytest.fixture(scope="session", autouse=True)
def private_cache_dir(tmp_path_factory):
    """One cache per test session: the backbone is converted once, and ~/.cache is never written."""
    path = tmp_path_factory.mktemp("retrain-cache")
    old = os.environ.get("RETRAIN_CACHE_DIR")
    os.environ["RETRAIN_CACHE_DIR"] = str(path)
    yield path
    if old is None:
        os.environ.pop("RETRAIN_CACHE_DIR", None)
    else:
        os.environ["RETRAIN_CACHE_DIR"] = old


def noisy_colour_image(colour, size=(48, 40), seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(colour) + rng.normal(0, 20, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels)


def write_colour_tree(root: Path, counts: dict[str, int], ext: str = ".jpg") -> Path:
    """Noisy solid-colour images, one folder per class; the same bytes on every run."""
    for index, (name, count) in enumerate(counts.items()):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        colour = COLOURS.get(name.lower(), (40 + 70 * index % 200, 120, 200 - 60 * index % 200))
        for i in range(count):
            noisy_colour_image(colour, seed=zlib.crc32(f"{name}_{i}".encode())).save(folder / f"{name}_{i}{ext}")
    return root


@pytest.fixture
def make_tree(tmp_path):
    """make_tree({"red": 5, "blue": 5}) writes a colour tree under tmp_path/images (or root)."""

    def make(counts: dict[str, int], root: Path | None = None, ext: str = ".jpg") -> Path:
        return write_colour_tree(root or tmp_path / "images", counts, ext)

    return make


SQUARE_COLOURS = {"red": (215, 35, 35), "green": (35, 185, 55), "blue": (35, 55, 215)}
SIZE = 192  # square_image's side
SIDE = 64  # the coloured square's side


def square_image(colour, seed: int, corner: tuple[int, int] | None = None) -> tuple[Image.Image, tuple[int, int]]:
    """A grey, lightly noisy background with one coloured square; returns the square's top-left corner."""
    rng = np.random.default_rng(seed)
    pixels = np.clip(150 + rng.normal(0, 12, (SIZE, SIZE, 3)), 0, 255)
    x, y = corner if corner is not None else (int(v) for v in rng.integers(0, SIZE - SIDE, 2))
    pixels[y:y + SIDE, x:x + SIDE] = colour
    return Image.fromarray(pixels.astype(np.uint8)), (x, y)


def run_cli(command, args):
    """A click command run in-process, as a user would run it; never a traceback."""
    from click.testing import CliRunner

    result = CliRunner().invoke(command, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    return result


@pytest.fixture(scope="session")
def square_model(tmp_path_factory):
    """A model trained where the class is the colour of a square at a random place: its
    heatmaps must find the square."""
    from retrain.cli import retrain

    root = tmp_path_factory.mktemp("squares")
    for index, (name, colour) in enumerate(SQUARE_COLOURS.items()):
        (root / "images" / name).mkdir(parents=True)
        for i in range(16):
            square_image(colour, seed=100 * index + i)[0].save(root / "images" / name / f"{name}_{i}.png")
    result = run_cli(retrain, [
        "--image_dir", root / "images", "--output_graph", root / "graph.pb", "--output_labels", root / "labels.txt",
        "--saved_model_dir", root / "saved_model", "--how_many_training_steps", 200, "--learning_rate", 0.05,
        "--random_seed", 1, "--bottleneck_dir", root / "bottlenecks",
    ])
    assert result.exit_code == 0, result.output
    return root


@pytest.fixture(scope="session")
def backbone():
    from retrain import paths
    from retrain.backbones import create_backbone

    return create_backbone("efficientnet_lite0", paths.default_model_dir())


def as_card(card: dict | None):
    """A test's model card, written as the JSON it would be on disk, typed as retrain reads it
    (the tensor names and input size a fake model does not need filled in)."""
    from retrain.card.model_card import ModelCard

    if card is None:
        return None
    return ModelCard.from_json({"input_name": "input", "output_name": "final_result", "input_size": 8, **card},
                               "a test's model card")
