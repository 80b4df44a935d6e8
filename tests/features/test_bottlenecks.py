from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import pytest

from retrain.errors import UserError
from retrain.features.cache import open_cache
from retrain.features.extraction import compute_bottlenecks


@dataclass
class MeanColourBackbone:
    """A stand-in backbone whose features are the mean colour: fast, and easy to check."""

    identity: str = "mean-colour-v1"
    input_size: int = 8
    feature_size: int = 3

    def __post_init__(self):
        import tensorflow as tf

        self.module = SimpleNamespace(features=lambda images: tf.reduce_mean(images, axis=[1, 2]))


@pytest.fixture
def tree(make_tree):
    return make_tree({"red": 3, "blue": 3})


def _paths(root):
    return sorted(root.rglob("*.jpg"))


def test_features_are_computed_once_and_then_read_from_the_cache(tree, tmp_path):
    backbone = MeanColourBackbone()
    cache = open_cache(tmp_path / "bn", backbone)
    first = compute_bottlenecks(_paths(tree), backbone, cache, batch_size=4)
    assert (first.computed, first.reused) == (6, 0) and first.ok.all()
    second = compute_bottlenecks(_paths(tree), backbone, cache, batch_size=4)
    assert (second.computed, second.reused) == (0, 6)
    np.testing.assert_array_equal(first.features, second.features)
    red = _paths(tree)[3]
    assert first.features[3][0] > 150 and "red" in red.name


def test_a_renamed_file_reuses_its_entry_and_a_replaced_file_is_recomputed(tree, tmp_path):
    backbone = MeanColourBackbone()
    cache = open_cache(tmp_path / "bn", backbone)
    compute_bottlenecks(_paths(tree), backbone, cache)
    red = tree / "red" / "red_0.jpg"
    red.rename(tree / "red" / "renamed.jpg")
    (tree / "blue" / "blue_0.jpg").write_bytes((tree / "red" / "red_1.jpg").read_bytes() + b"\0")
    again = compute_bottlenecks(_paths(tree), backbone, cache)
    assert (again.computed, again.reused) == (1, 5)


def test_another_backbone_never_sees_these_features(tree, tmp_path):
    first, other = MeanColourBackbone(), MeanColourBackbone(identity="other-weights")
    compute_bottlenecks(_paths(tree), first, open_cache(tmp_path / "bn", first))
    result = compute_bottlenecks(_paths(tree), other, open_cache(tmp_path / "bn", other))
    assert result.computed == 6


def _entry_spans(pack) -> list[tuple[int, int]]:
    """(start, end) of each features record in a pack, in file order."""
    from retrain.features import cache as cache_module

    raw, spans = pack.read_bytes(), []
    for kind, _, offset, _ in cache_module._records(raw, MeanColourBackbone.feature_size):
        _, _, key_length, payload_length = cache_module._HEADER.unpack_from(raw, offset)
        if kind == cache_module.FEATURES:
            spans.append((offset, offset + cache_module._HEADER.size + key_length + payload_length + 4))
    return spans


@pytest.mark.parametrize("damage", ["truncate", "flip_byte", "garbage"])
def test_a_damaged_entry_is_detected_and_recomputed(tree, tmp_path, damage):
    backbone = MeanColourBackbone()
    cache = open_cache(tmp_path / "bn", backbone)
    clean = compute_bottlenecks(_paths(tree), backbone, cache)
    [pack] = cache.root.glob("*.pack")
    raw = bytearray(pack.read_bytes())
    spans = _entry_spans(pack)
    assert len(spans) == 6
    if damage == "truncate":  # as a kill -9 mid-write leaves the last record
        raw = raw[:spans[-1][1] - 3]
    elif damage == "flip_byte":
        raw[spans[2][0] + 40] ^= 0xFF
    else:
        start, end = spans[2]
        raw[start:end] = b"nonsense".ljust(end - start, b"!")
    pack.write_bytes(bytes(raw))
    again = compute_bottlenecks(_paths(tree), backbone, cache)
    assert (again.computed, again.reused) == (1, 5)
    np.testing.assert_allclose(again.features, clean.features)


def test_bad_images_are_reported_by_name_and_the_rest_go_on(tree, tmp_path):
    (tree / "red" / "zero.jpg").write_bytes(b"")
    (tree / "red" / "text.jpg").write_text("hello")
    backbone = MeanColourBackbone()
    result = compute_bottlenecks(_paths(tree), backbone, open_cache(tmp_path / "bn", backbone))
    assert sorted(f.path.name for f in result.failures) == ["text.jpg", "zero.jpg"]
    assert result.ok.sum() == 6 and result.computed == 6


def test_no_temporary_files_are_left_behind_and_one_run_writes_one_pack(tree, tmp_path):
    backbone = MeanColourBackbone()
    cache = open_cache(tmp_path / "bn", backbone)
    compute_bottlenecks(_paths(tree), backbone, cache)
    assert not [p for p in cache.root.rglob("*") if p.name.endswith(".tmp")]
    assert [p.suffix for p in cache.root.rglob("*") if p.is_file()] == [".pack"]


def test_a_read_only_cache_dir_is_a_clear_error(tree, tmp_path):
    import os

    if os.geteuid() == 0:
        pytest.skip("root ignores directory permissions, so a read-only folder cannot be simulated")
    backbone = MeanColourBackbone()
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(UserError, match="cannot write bottleneck cache entry"):
            compute_bottlenecks(_paths(tree), backbone, open_cache(locked, backbone))
    finally:
        locked.chmod(0o700)


def test_an_unwritable_cache_path_is_a_clear_error(tree, tmp_path):
    backbone = MeanColourBackbone()
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("a file where the cache folder should be")
    with pytest.raises(UserError, match="cannot write bottleneck cache entry"):
        compute_bottlenecks(_paths(tree), backbone, open_cache(blocker, backbone))
