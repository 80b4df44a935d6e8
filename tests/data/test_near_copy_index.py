"""The indexed near-copy search finds exactly what comparing every pair finds: the same
original for each suspect, at the same distance, ties and colour test included."""

from __future__ import annotations

import numpy as np

from retrain.data.duplicates import COLOUR_TOLERANCE, NEAR_DISTANCE, Fingerprints, closest_originals


def _all_pairs(ref: Fingerprints, sus: Fingerprints) -> tuple[np.ndarray, np.ndarray]:
    """The search as it was: every suspect against every usable original, in one loop."""
    by_sha1 = {}
    for index, digest in enumerate(ref.sha1):
        if digest:
            by_sha1.setdefault(digest, index)
    usable = np.flatnonzero(ref.hashed)
    original, distance = np.full(len(sus.sha1), -1), np.full(len(sus.sha1), -1)
    for index, digest in enumerate(sus.sha1):
        if digest in by_sha1:
            original[index] = by_sha1[digest]
        elif sus.hashed[index] and len(usable):
            bits = np.bitwise_count(ref.phash[usable] ^ sus.phash[index]).astype(np.int64)
            bits[np.abs(ref.colour[usable] - sus.colour[index]).max(axis=1) > COLOUR_TOLERANCE] = 64
            best = int(np.argmin(bits))
            if bits[best] <= NEAR_DISTANCE:
                original[index], distance[index] = usable[best], bits[best]
    return original, distance


def _flip(phash: int, count: int, rng) -> int:
    for bit in rng.choice(64, count, replace=False):
        phash ^= 1 << int(bit)
    return phash


def _planted(seed: int, originals: int = 3000, suspects: int = 3000) -> tuple[Fingerprints, Fingerprints]:
    """Random originals; suspects that are unrelated, exact copies, or copies at 0..7 bits with
    a colour within or just beyond the tolerance, some of several originals that are alike."""
    rng = np.random.default_rng(seed)
    hashes = [int(h) for h in rng.integers(0, 2**64, originals, dtype=np.uint64)]
    colours = rng.uniform(0, 255, (originals, 3)).astype(np.float32)
    for index in range(0, originals - 1, 17):  # originals alike, 0 to 2 bits apart: ties and near ties
        hashes[index + 1] = _flip(hashes[index], int(rng.integers(0, 3)), rng)
        colours[index + 1] = colours[index] + rng.uniform(-2, 2, 3)
    sha1 = [f"r{i}" if i % 50 else "" for i in range(originals)]
    hashed = rng.random(originals) > 0.05
    sus_hashes, sus_colours, sus_sha1, sus_hashed = [], [], [], []
    for index in range(suspects):
        kind, source = index % 4, int(rng.integers(0, originals))
        phash, colour, digest = int(rng.integers(0, 2**64, dtype=np.uint64)), rng.uniform(0, 255, 3), f"s{index}"
        if kind == 1:
            digest = sha1[source]
        elif kind >= 2:
            phash = _flip(hashes[source], int(rng.integers(0, 8)), rng)
            shift = COLOUR_TOLERANCE + (0.01 if kind == 3 and rng.random() < 0.3 else -0.5)
            colour = colours[source] + shift * rng.choice([-1.0, 1.0], 3) * (rng.random(3) < 0.5)
        sus_hashes.append(phash)
        sus_colours.append(colour)
        sus_sha1.append(digest)
        sus_hashed.append(rng.random() > 0.05)
    return (Fingerprints(sha1, np.array(hashes, np.uint64), colours, hashed),
            Fingerprints(sus_sha1, np.array(sus_hashes, np.uint64), np.array(sus_colours, np.float32),
                         np.array(sus_hashed, bool)))


def test_the_indexed_search_finds_what_comparing_every_pair_finds():
    for seed in range(3):
        ref, sus = _planted(seed)
        original, distance = closest_originals(ref, sus)
        expected_original, expected_distance = _all_pairs(ref, sus)
        assert (original == expected_original).all()
        assert (distance == expected_distance).all()
        near = distance >= 0
        assert (original >= 0).sum() > 1000 and set(distance[near & (original >= 0)]) == set(range(NEAR_DISTANCE + 1))


def test_suspects_within_the_distance_of_one_original_all_find_it():
    rng = np.random.default_rng(5)
    base = int(rng.integers(0, 2**64, dtype=np.uint64))
    ref = Fingerprints(["a"], np.array([base], np.uint64), np.zeros((1, 3), np.float32), np.array([True]))
    flips = [_flip(base, count, rng) for count in range(9) for _ in range(20)]
    sus = Fingerprints([f"s{i}" for i in range(len(flips))], np.array(flips, np.uint64),
                       np.zeros((len(flips), 3), np.float32), np.ones(len(flips), bool))
    original, distance = closest_originals(ref, sus)
    bits = np.repeat(np.arange(9), 20)
    assert (original == np.where(bits <= NEAR_DISTANCE, 0, -1)).all()
    assert (distance[bits <= NEAR_DISTANCE] == bits[bits <= NEAR_DISTANCE]).all()


def test_no_original_or_no_suspect_finds_nothing():
    empty = Fingerprints([], np.zeros(0, np.uint64), np.zeros((0, 3), np.float32), np.zeros(0, bool))
    one = Fingerprints(["a"], np.array([7], np.uint64), np.zeros((1, 3), np.float32), np.array([True]))
    assert closest_originals(empty, one)[0].tolist() == [-1]
    assert closest_originals(one, empty)[0].tolist() == []
