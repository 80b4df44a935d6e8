"""The bottleneck cache under kill -9, concurrent runs, absurd images and failing disks."""

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from retrain.cli import retrain
from retrain.errors import UserError
from retrain.features import cache as cache_module
from retrain.features.cache import open_cache
from retrain.features.extraction import compute_bottlenecks
from tests.features.test_bottlenecks import MeanColourBackbone

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

# A child that extracts slowly (a pause per batch of 4), so the test can kill it part-way.
# TensorFlow runs the stand-in backbone here, sparing two LiteRT conversions; the test
# below checks that the real backbone's LiteRT features are batch-independent.
_SLOW_EXTRACTION = """
import sys, time
from pathlib import Path
from retrain.features.cache import open_cache
from retrain.features.extraction import compute_bottlenecks
from tests.features.test_bottlenecks import MeanColourBackbone
backbone = MeanColourBackbone()
paths = sorted(Path(sys.argv[1]).rglob("*.jpg"))
cache = open_cache(Path(sys.argv[2]), backbone)
compute_bottlenecks(paths, backbone, cache, batch_size=4, progress=lambda n: time.sleep(0.1), engine="tensorflow")
"""


def _paths(root: Path) -> list[Path]:
    return sorted(root.rglob("*.jpg"))


def _entries(cache) -> set[str]:
    """The keys of the cache's sound features entries."""
    return cache.keys()


@pytest.mark.slow
def test_kill_9_during_extraction_then_rerun_reuses_every_entry_and_matches_an_uninterrupted_run(make_tree, tmp_path):
    tree = make_tree({"red": 20, "blue": 20})
    backbone = MeanColourBackbone()
    cache = open_cache(tmp_path / "bn", backbone)
    child = subprocess.Popen([sys.executable, "-c", _SLOW_EXTRACTION, tree, tmp_path / "bn"], cwd=REPO)
    deadline = time.monotonic() + 120
    while len(_entries(cache)) < 5 and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL, "the child finished before it could be killed"
    written = _entries(cache)
    assert 5 <= len(written) < 40
    assert all(cache.read(key) is not None for key in written), "a killed run left a damaged entry"

    resumed = compute_bottlenecks(_paths(tree), backbone, cache, engine="tensorflow")
    assert (resumed.reused, resumed.computed) == (len(written), 40 - len(written))
    fresh = open_cache(tmp_path / "fresh", backbone)
    uninterrupted = compute_bottlenecks(_paths(tree), backbone, fresh, engine="tensorflow")
    np.testing.assert_array_equal(resumed.features, uninterrupted.features)


def test_real_backbone_features_do_not_depend_on_which_images_share_a_batch(make_tree, tmp_path, backbone):
    """Why a resumed run caches exactly what an uninterrupted one would, bit for bit."""
    from retrain.features.engines import create_engine

    paths = _paths(make_tree({"red": 3, "green": 3}))
    engine = create_engine(backbone)
    everything = compute_bottlenecks(paths, backbone, open_cache(tmp_path / "a", backbone), engine=engine)
    shuffled = [paths[4], paths[1], paths[5]]
    some = compute_bottlenecks(shuffled, backbone, open_cache(tmp_path / "b", backbone), engine=engine, batch_size=2)
    np.testing.assert_array_equal(some.features, everything.features[[4, 1, 5]])


@pytest.mark.slow
def test_two_retrain_processes_sharing_one_bottleneck_dir_both_finish_with_sound_entries(make_tree, tmp_path):
    tree = make_tree({"red": 12, "blue": 12})
    shared = tmp_path / "shared-bn"
    runs = [
        subprocess.Popen(
            [BIN / "retrain", f"--image_dir={tree}", f"--bottleneck_dir={shared}", "--how_many_training_steps=20",
             f"--output_graph={tmp_path / f'graph{i}.pb'}", f"--output_labels={tmp_path / f'labels{i}.txt'}"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for i in range(2)
    ]
    outputs = [run.communicate(timeout=300) for run in runs]
    for run, (stdout, stderr) in zip(runs, outputs):
        assert run.returncode == 0, stderr
        assert "Traceback" not in stderr
    from retrain import paths
    from retrain.backbones import create_backbone

    backbone = create_backbone("efficientnet_lite0", paths.default_model_dir())
    cache = open_cache(shared, backbone)
    entries = _entries(cache)
    assert len(entries) == 24
    assert all(cache.read(key) is not None for key in entries)
    assert not [p for p in shared.rglob("*") if p.name.endswith(".tmp")]
    again = compute_bottlenecks(_paths(tree), backbone, cache)
    assert (again.reused, again.computed) == (24, 0)


def test_a_decompression_bomb_in_the_tree_is_refused_by_name_and_retrain_goes_on(make_tree, tmp_path):
    tree = make_tree({"red": 4, "blue": 4})
    Image.new("1", (12000, 12000)).save(tree / "red" / "bomb.png")
    assert (tree / "red" / "bomb.png").stat().st_size < 1_000_000  # tiny on disk, 144 megapixels decoded
    out = tmp_path / "out"
    result = CliRunner().invoke(
        retrain,
        [f"--image_dir={tree}", f"--bottleneck_dir={tmp_path / 'bn'}", "--how_many_training_steps=5",
         f"--output_graph={out / 'graph.pb'}", f"--output_labels={out / 'labels.txt'}"],
    )
    assert result.exit_code == 0, result.output
    refusal = [line for line in result.stderr.splitlines() if "bomb.png" in line]
    assert refusal and "too large" in refusal[0]
    assert "8 computed, 1 failed" in result.stdout


class _FailingFile:
    """A file whose write stores half the bytes and then fails like a full or read-only disk."""

    def __init__(self, path, error: int):
        self._file = open(path, "wb")
        self._error = error

    def write(self, data: bytes) -> int:
        self._file.write(data[: len(data) // 2])
        self._file.flush()
        raise OSError(self._error, os.strerror(self._error))

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._file.close()


@pytest.mark.parametrize("error", [errno.ENOSPC, errno.EROFS])
def test_a_failing_disk_is_a_clear_error_and_leaves_no_partial_entry(make_tree, tmp_path, monkeypatch, error):
    tree = make_tree({"red": 3, "blue": 3})
    backbone = MeanColourBackbone()
    cache = open_cache(tmp_path / "bn", backbone)
    partial_files = []

    def failing_open(path, mode="r", *args, **kwargs):
        partial_files.append(Path(path))
        return _FailingFile(path, error)

    monkeypatch.setattr(cache_module, "open", failing_open, raising=False)
    with pytest.raises(UserError) as info:
        compute_bottlenecks(_paths(tree), backbone, cache)
    message = str(info.value)
    assert message.startswith("cannot write bottleneck cache entry ") and "\n" not in message
    assert os.strerror(error) in message and "FeatureConfig.bottleneck_dir" in message
    assert partial_files, "the failing write was never reached"
    assert not any(p.exists() for p in partial_files)
    assert not [p for p in cache.root.rglob("*") if p.is_file()]


def test_retrain_reports_a_full_disk_in_one_line(make_tree, tmp_path, monkeypatch):
    tree = make_tree({"red": 3, "blue": 3})
    monkeypatch.setattr(cache_module, "open", lambda path, *a, **k: _FailingFile(path, errno.ENOSPC), raising=False)
    result = CliRunner().invoke(
        retrain, [f"--image_dir={tree}", f"--bottleneck_dir={tmp_path / 'bn'}", "--how_many_training_steps=5",
                  f"--output_graph={tmp_path / 'graph.pb'}", f"--output_labels={tmp_path / 'labels.txt'}"],
    )
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "No space left on device" in errors[0]
    assert not (tmp_path / "graph.pb").exists()
    assert not [p for p in (tmp_path / "bn").rglob("*") if p.is_file()]
