"""The pack cache at scale: a warm run reads no image whose stat still holds, the copy
fingerprints come from the cache, packs are merged,
and a writer killed mid-record or two writers at once leave only sound entries."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from retrain.data import duplicates
from retrain.features import cache as cache_module
from retrain.features.cache import open_cache
from retrain.features.extraction import compute_bottlenecks
from tests.features.test_bottlenecks import MeanColourBackbone

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def tree(make_tree):
    return make_tree({"red": 3, "blue": 3})


def _paths(root):
    return sorted(root.rglob("*.jpg"))


def test_a_warm_run_reads_no_image_whose_stat_still_holds(tree, tmp_path, monkeypatch):
    monkeypatch.setattr(cache_module, "SETTLED_SECONDS", 0)
    backbone = MeanColourBackbone()
    first = compute_bottlenecks(_paths(tree), backbone, open_cache(tmp_path / "bn", backbone))
    assert first.files_read == 6
    again = compute_bottlenecks(_paths(tree), backbone, open_cache(tmp_path / "bn", backbone))
    assert (again.files_read, again.reused, again.computed) == (0, 6, 0)
    np.testing.assert_array_equal(again.features, first.features)


def test_a_file_rewritten_with_the_same_size_and_mtime_is_read_and_recomputed(tree, tmp_path, monkeypatch):
    monkeypatch.setattr(cache_module, "SETTLED_SECONDS", 0)
    backbone = MeanColourBackbone()
    compute_bottlenecks(_paths(tree), backbone, open_cache(tmp_path / "bn", backbone))
    target, other = tree / "red" / "red_0.jpg", tree / "blue" / "blue_0.jpg"
    before = target.stat()
    replacement = other.read_bytes()[:before.st_size].ljust(before.st_size, b"\0")
    target.write_bytes(replacement)
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))  # as cp -p or rsync -t would keep it
    assert target.stat().st_mtime_ns == before.st_mtime_ns and target.stat().st_size == before.st_size
    again = compute_bottlenecks(_paths(tree), backbone, open_cache(tmp_path / "bn", backbone))
    assert again.reused == 5  # read again (here it no longer decodes): its old entry is not taken for it


def test_a_file_hashed_within_the_settling_time_is_not_trusted_by_its_stat(tree, tmp_path):
    backbone = MeanColourBackbone()
    compute_bottlenecks(_paths(tree), backbone, open_cache(tmp_path / "bn", backbone))  # files seconds old
    again = compute_bottlenecks(_paths(tree), backbone, open_cache(tmp_path / "bn", backbone))
    assert (again.files_read, again.reused) == (6, 6)


def test_the_copy_check_takes_the_cached_fingerprints_and_reads_no_image(tree, tmp_path, monkeypatch):
    backbone = MeanColourBackbone()
    paths = _paths(tree)
    compute_bottlenecks(paths, backbone, open_cache(tmp_path / "bn", backbone))
    warm = compute_bottlenecks(paths, backbone, open_cache(tmp_path / "bn", backbone))
    read = duplicates.fingerprints(paths)
    assert [warm.fingerprints[p][0] for p in paths] == read.sha1
    assert [warm.fingerprints[p][1] for p in paths] == list(read.phash)
    np.testing.assert_allclose([warm.fingerprints[p][2] for p in paths], read.colour)
    expected = duplicates.find_copies(paths[:3], paths[3:] + paths[:1])

    def no_reading(path):
        raise AssertionError(f"{path} read again")

    monkeypatch.setattr(duplicates, "_fingerprint", no_reading)
    assert duplicates.find_copies(paths[:3], paths[3:] + paths[:1], warm.fingerprints) == expected


def test_many_packs_are_merged_into_one_that_keeps_every_entry(make_tree, tmp_path, monkeypatch):
    backbone = MeanColourBackbone()
    paths = _paths(make_tree({"red": 4, "blue": 4}))
    for part in (paths[:2], paths[2:4], paths[4:6], paths[6:]):
        cache = open_cache(tmp_path / "bn", backbone)
        compute_bottlenecks(part, backbone, cache)
        cache.close()
    assert len(list(cache.root.glob("*.pack"))) == 4
    monkeypatch.setattr(cache_module, "MAX_PACKS", 2)
    merged = compute_bottlenecks(paths, backbone, open_cache(tmp_path / "bn", backbone))
    assert (merged.reused, merged.computed) == (8, 0)
    assert len(list(cache.root.glob("*.pack"))) == 1
    assert not [p for p in cache.root.iterdir() if p.suffix == ".tmp"]


# A writer that appends entries as fast as it can, until killed.
_WRITER = """
import sys
import numpy as np
from pathlib import Path
from retrain.features.cache import BottleneckCache
cache = BottleneckCache(Path(sys.argv[1]), 1280)
start = int(sys.argv[2])
for i in range(start, start + 10**6):
    cache.write(f"{i:040d}", np.full(1280, i, np.float32))
"""


def _writer(root: Path, start: int) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, "-c", _WRITER, str(root), str(start)], cwd=REPO, env=env)


def _sound(root: Path) -> dict[str, np.ndarray]:
    cache = cache_module.BottleneckCache(root, 1280)
    found = cache.index()
    return {key: found.vector(key) for key in found.entries if found.vector(key) is not None}


def _wait_for_bytes(root: Path, size: int, packs: int = 1) -> None:
    """Until `packs` packs hold `size` bytes each."""
    deadline = time.monotonic() + 60
    while (sum(p.stat().st_size >= size for p in root.glob("*.pack")) < packs
           and time.monotonic() < deadline):
        time.sleep(0.01)


def test_a_writer_killed_mid_record_leaves_only_whole_entries(tmp_path):
    root = tmp_path / "bn"
    child = _writer(root, 0)
    _wait_for_bytes(root, 3_000_000)
    child.send_signal(signal.SIGKILL)
    child.wait()
    entries = _sound(root)
    assert len(entries) > 100
    assert sorted(int(key) for key in entries) == list(range(len(entries)))  # a prefix: nothing lost but the tail
    assert all((vector == int(key)).all() for key, vector in entries.items())


def test_two_writers_filling_one_cache_at_once_leave_every_entry_sound(tmp_path):
    root = tmp_path / "bn"
    children = [_writer(root, 0), _writer(root, 10**7)]
    _wait_for_bytes(root, 2_000_000, packs=2)
    for child in children:
        child.send_signal(signal.SIGKILL)
        child.wait()
    entries = _sound(root)
    firsts = [int(key) for key in entries if int(key) < 10**7]
    seconds = [int(key) - 10**7 for key in entries if int(key) >= 10**7]
    assert firsts and seconds
    assert sorted(firsts) == list(range(len(firsts))) and sorted(seconds) == list(range(len(seconds)))
    assert all((vector == int(key)).all() for key, vector in entries.items())
    assert len(list(root.glob("*.pack"))) == 2  # one pack per writer: no two write one file


def test_evaluate_and_set_operating_point_take_retrain_s_fingerprints_for_the_training_tree(make_tree, tmp_path,
                                                                                         monkeypatch):
    import functools

    from retrain.data.training_copies import copies_of_training_images
    from retrain.features.cache import cached_fingerprints

    monkeypatch.setattr(cache_module, "SETTLED_SECONDS", 0)
    training = make_tree({"red": 3, "blue": 3}, tmp_path / "training")
    measured = make_tree({"green": 2}, tmp_path / "measured")
    (measured / "green" / "copy.jpg").write_bytes((training / "blue" / "blue_1.jpg").read_bytes())
    backbone = MeanColourBackbone()
    compute_bottlenecks(_paths(training), backbone, open_cache(tmp_path / "bn", backbone))
    known = functools.partial(cached_fingerprints, bottleneck_dir=tmp_path / "bn")
    assert set(known(_paths(training) + _paths(measured))) == set(_paths(training))
    read = []
    original = duplicates._fingerprint
    monkeypatch.setattr(duplicates, "_fingerprint", lambda path: read.append(path) or original(path))
    found = copies_of_training_images(measured, training, ("image_dir", "training_dir"), print, print, known)
    assert [(c.path.name, c.original.name) for c in found.copies] == [("copy.jpg", "blue_1.jpg")]
    assert sorted(read) == _paths(measured)  # the training images' fingerprints came from the cache


def test_a_run_that_computes_nothing_goes_on_when_the_cache_cannot_be_written(tree, tmp_path, monkeypatch):
    backbone = MeanColourBackbone()
    compute_bottlenecks(_paths(tree), backbone, open_cache(tmp_path / "bn", backbone))
    monkeypatch.setattr(cache_module, "SETTLED_SECONDS", 0)  # stats now to be recorded, and the writes fail

    def read_only(path, mode="r", *args, **kwargs):
        if "a" in mode or "w" in mode:
            raise PermissionError(13, "Permission denied")
        return open(path, mode, *args, **kwargs)

    monkeypatch.setattr(cache_module, "open", read_only, raising=False)
    again = compute_bottlenecks(_paths(tree), backbone, open_cache(tmp_path / "bn", backbone))
    assert (again.reused, again.computed) == (6, 0)
