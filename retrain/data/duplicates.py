"""Copies of one image in two sets: a test image that is also a training image makes the
test figures say how well the model remembers, not how well it sees (ISIC ships exact
copies between its 2017 training and test sets, and resized copies across years).

Exact copies have the same bytes (SHA-1). Near copies are the same picture resized or
re-encoded: a 64-bit DCT perceptual hash (pHash) of a 32x32 grey thumbnail. Two images are
near copies when their hashes differ in at most NEAR_DISTANCE bits AND their mean colours
differ by at most COLOUR_TOLERANCE levels per channel (the hash is grey: without the colour
test a red and a blue version of one pattern would match). Distances are even (every hash
has 32 bits set). Measured on 200 real ISIC 2017 images (tests/data/test_duplicates.py,
benchmarks/duplicates_isic.py): copies at 0.5x or 0.75x differ by at most 2 bits, at JPEG
quality 60 or 30 by at most 4, colours by under 2 levels; 0.5x then quality 60 reaches 6 for
a few (those are missed). Among the 2150 ISIC training and validation images, the closest
different lesions differ by 4 bits with colours 11.5 apart, or by 6 bits with colours within
8; two shots of one lesion, near-identical, differ by 2 bits and 6.4 levels. Pictures with almost no detail (a flat colour) give
no reliable hash: only their exact copies are found.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from retrain.data.images import ImageError, load_upright

NEAR_DISTANCE = 4  # bits of 64
COLOUR_TOLERANCE = 8.0  # 0-255 levels, per channel of the mean colour
MIN_DETAIL = 2.0  # standard deviation of the grey thumbnail below which no hash is taken
_THUMBNAIL = 32
_LOW = 8  # the 8x8 lowest frequencies make the 64 bits


def _dct_matrix(n: int) -> np.ndarray:
    k, i = np.arange(n)[:, None], np.arange(n)[None, :]
    matrix = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    matrix[0] /= np.sqrt(2.0)
    return matrix


_DCT = _dct_matrix(_THUMBNAIL)[:_LOW]


@dataclass(frozen=True)
class Fingerprints:
    """Per image: SHA-1 of the bytes ("" unreadable), pHash, mean colour, and whether the hash counts."""

    sha1: list[str]
    phash: np.ndarray  # uint64
    colour: np.ndarray  # float32 [n, 3]
    hashed: np.ndarray  # bool: readable and detailed enough for near matching


def perceptual_hash(image: Image.Image) -> tuple[int, np.ndarray, bool]:
    """(64-bit pHash, mean RGB colour, detailed enough) of a decoded image."""
    small = image.convert("RGB").resize((_THUMBNAIL, _THUMBNAIL), Image.Resampling.BOX)
    rgb = np.asarray(small, dtype=np.float32)
    grey = rgb @ np.array([0.299, 0.587, 0.114], np.float32)
    low = (_DCT @ grey @ _DCT.T).ravel()
    bits = low > np.median(low[1:])  # the DC term (overall brightness) is left out of the median
    return int(np.packbits(bits).view(">u8")[0]), rgb.reshape(-1, 3).mean(axis=0), float(grey.std()) >= MIN_DETAIL


def _fingerprint(path: Path) -> tuple[str, int, np.ndarray, bool]:
    try:
        data = Path(path).read_bytes()
    except OSError:
        return "", 0, np.zeros(3, np.float32), False
    return fingerprint_of(path, hashlib.sha1(data).hexdigest(), data)


def fingerprint_of(path: Path, digest: str, data: bytes) -> tuple[str, int, np.ndarray, bool]:
    """(SHA-1, pHash, mean colour, detailed enough) of one image whose bytes (`data`, SHA-1
    `digest`) are read already: the bottleneck cache keeps these beside the features."""
    try:
        return (digest, *perceptual_hash(load_upright(path, 2 * _THUMBNAIL, data)))
    except ImageError:
        return digest, 0, np.zeros(3, np.float32), False


def fingerprints(paths: Sequence[Path], known: Mapping[Path, tuple] | None = None) -> Fingerprints:
    """Every image's fingerprint: from `known` (the bottleneck cache's, by path) where there,
    else the image read once more, small (JPEG draft mode), on a few threads."""
    rows = [(known or {}).get(path) for path in paths]
    missing = [index for index, row in enumerate(rows) if row is None]
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        for index, row in zip(missing, pool.map(_fingerprint, [paths[i] for i in missing])):
            rows[index] = row
    return Fingerprints(
        [r[0] for r in rows], np.array([r[1] for r in rows], np.uint64),
        np.array([r[2] for r in rows], np.float32).reshape(-1, 3), np.array([r[3] for r in rows], bool),
    )


@dataclass(frozen=True)
class Copy:
    """`path` (a held-out image) is a copy of `original` (a training image)."""

    path: Path
    original: Path
    kind: str  # "exact" (same bytes) or "near" (same picture, resized or re-encoded)
    distance: int  # hash bits that differ (0 for exact)

    @property
    def how(self) -> str:
        return "same bytes" if self.kind == "exact" else f"near copy, {self.distance} of 64 hash bits differ"

    def describe(self, original: str = "a training image") -> str:
        return f"copy of {original}: {self.path} = {self.original} ({self.how})"


def find_copies(originals: Sequence[Path], suspects: Sequence[Path],
                known: Mapping[Path, tuple] | None = None) -> list[Copy]:
    """Each suspect that is an exact or near copy of one of the originals (the closest one);
    `known`: fingerprints already at hand, by path."""
    if not originals or not suspects:
        return []
    ref, sus = fingerprints(originals, known), fingerprints(suspects, known)
    by_sha1 = {}
    for index, digest in enumerate(ref.sha1):
        if digest:
            by_sha1.setdefault(digest, index)
    usable = np.flatnonzero(ref.hashed)
    copies = []
    for index, path in enumerate(suspects):
        if sus.sha1[index] in by_sha1:
            copies.append(Copy(Path(path), Path(originals[by_sha1[sus.sha1[index]]]), "exact", 0))
        elif sus.hashed[index] and len(usable):
            match = _nearest(sus.phash[index], sus.colour[index], ref.phash[usable], ref.colour[usable])
            if match is not None:
                copies.append(Copy(Path(path), Path(originals[usable[match[0]]]), "near", match[1]))
    return copies


def _nearest(phash, colour, phashes: np.ndarray, colours: np.ndarray) -> tuple[int, int] | None:
    """(index, distance) of the closest hash within NEAR_DISTANCE and COLOUR_TOLERANCE, or None."""
    distances = np.bitwise_count(phashes ^ phash).astype(np.int64)
    distances[np.abs(colours - colour).max(axis=1) > COLOUR_TOLERANCE] = 64
    best = int(np.argmin(distances))
    return (best, int(distances[best])) if distances[best] <= NEAR_DISTANCE else None


def hamming(a: int, b: int) -> int:
    return int(np.bitwise_count(np.uint64(a) ^ np.uint64(b)))


def same_folder_groups(folders: dict[str, Path | None]) -> list[list[str]]:
    """Names (e.g. DataConfig.image_dir, DataConfig.test_dir) of paths that are one and the same folder, in groups of two or more."""
    groups: dict[Path, list[str]] = {}
    for flag, folder in folders.items():
        if folder is not None:
            groups.setdefault(Path(folder).expanduser().resolve(), []).append(flag)
    return [flags for flags in groups.values() if len(flags) > 1]


def count_line(copies: list[Copy], whose: str, originals: str, consequence: str, listed: bool = True) -> str:
    """The one warning line: how many copies, exact and near, what was done about them, and
    whether the pairs follow."""
    exact = sum(c.kind == "exact" for c in copies)
    return (f"{len(copies)} image{'s' if len(copies) != 1 else ''} of {whose} "
            f"{'are copies' if len(copies) != 1 else 'is a copy'} of {originals} "
            f"({exact} exact, {len(copies) - exact} near); {consequence}" + ("; pairs: see below" if listed else ""))


def join_flags(flags: list[str]) -> str:
    return flags[0] if len(flags) == 1 else ", ".join(flags[:-1]) + f" and {flags[-1]}"
