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
    original, distance = closest_originals(fingerprints(originals, known), fingerprints(suspects, known))
    return [Copy(Path(suspects[index]), Path(originals[original[index]]), "exact" if distance[index] < 0 else "near",
                 max(int(distance[index]), 0))
            for index in np.flatnonzero(original >= 0)]


def closest_originals(ref: Fingerprints, sus: Fingerprints) -> tuple[np.ndarray, np.ndarray]:
    """Per suspect, the index of the original it copies (-1: none) and the hash bits that differ
    (-1 for an exact copy, which wins over any near one). Of several near originals the closest
    is taken, the first of those equally close."""
    by_sha1: dict[str, int] = {}
    for index, digest in enumerate(ref.sha1):
        if digest:
            by_sha1.setdefault(digest, index)
    exact = np.array([by_sha1.get(digest, -1) if digest else -1 for digest in sus.sha1], np.int64)
    original, distance = _near_originals(ref, sus, np.flatnonzero(sus.hashed & (exact < 0)))
    is_exact = exact >= 0
    original[is_exact], distance[is_exact] = exact[is_exact], -1
    return original, distance


# Multi-index hashing: the 64 bits cut into 3 blocks; two hashes within NEAR_DISTANCE (4) bits
# have a block within 4 // 3 = 1 bit of each other, so each block is looked up in a sorted
# array with every key within _RADIUS bits of the suspect's. Exact: every pair within
# NEAR_DISTANCE shares a probe, and each candidate then takes the full distance and colour test.
_BLOCKS = ((0, 22), (22, 43), (43, 64))  # bit ranges, least significant first
_RADIUS = NEAR_DISTANCE // len(_BLOCKS)
_CHUNK = 2048  # suspects per step: bounds the candidate arrays


def _block(phash: np.ndarray, bits: tuple[int, int]) -> np.ndarray:
    low, high = bits
    return (phash >> np.uint64(low)) & np.uint64((1 << (high - low)) - 1)


def _probes(width: int) -> np.ndarray:
    """Every key offset (XOR mask) of at most _RADIUS bits in a block `width` bits wide."""
    masks = [0]
    for _ in range(_RADIUS):
        masks = sorted({mask | (1 << bit) for mask in masks for bit in range(width)} | set(masks))
    return np.array(masks, np.uint64)


def _near_originals(ref: Fingerprints, sus: Fingerprints, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The closest near original of each `wanted` suspect, by multi-index hashing (see _BLOCKS)."""
    original, distance = np.full(len(sus.sha1), -1, np.int64), np.full(len(sus.sha1), -1, np.int64)
    usable = np.flatnonzero(ref.hashed)
    if not len(usable) or not len(wanted):
        return original, distance
    tables = []
    for bits in _BLOCKS:
        keys = _block(ref.phash[usable], bits)
        order = np.argsort(keys, kind="stable")
        tables.append((bits, keys[order], usable[order], _probes(bits[1] - bits[0])))
    for start in range(0, len(wanted), _CHUNK):
        chunk = wanted[start:start + _CHUNK]
        suspect, candidate = _candidates(sus.phash[chunk], tables)
        suspect = chunk[suspect]
        bits = np.bitwise_count(ref.phash[candidate] ^ sus.phash[suspect]).astype(np.int64)
        alike = np.abs(ref.colour[candidate] - sus.colour[suspect]).max(axis=1) <= COLOUR_TOLERANCE
        keep = (bits <= NEAR_DISTANCE) & alike
        suspect, candidate, bits = suspect[keep], candidate[keep], bits[keep]
        order = np.lexsort((candidate, bits, suspect))
        first = np.unique(suspect[order], return_index=True)[1]
        best = order[first]
        original[suspect[best]], distance[suspect[best]] = candidate[best], bits[best]
    return original, distance


def _candidates(phashes: np.ndarray, tables) -> tuple[np.ndarray, np.ndarray]:
    """(position in `phashes`, original index) of every pair with a block within _RADIUS bits."""
    suspects, candidates = [], []
    for bits, keys, indices, probes in tables:
        wanted = (_block(phashes, bits)[:, None] ^ probes[None, :]).ravel()
        low, high = np.searchsorted(keys, wanted, "left"), np.searchsorted(keys, wanted, "right")
        counts = high - low
        total = int(counts.sum())
        ends = np.cumsum(counts)
        positions = np.repeat(low - (ends - counts), counts) + np.arange(total)
        suspects.append(np.repeat(np.arange(len(wanted)) // len(probes), counts))
        candidates.append(indices[positions])
    return np.concatenate(suspects), np.concatenate(candidates)


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
