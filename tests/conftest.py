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


@pytest.fixture(scope="session")
def backbone():
    from retrain import paths
    from retrain.backbones import create_backbone

    return create_backbone("efficientnet_lite0", paths.default_model_dir())
