"""The two out-of-distribution thresholds on real lesions, as a user meets them: `retrain` on a
small tree of ISIC 2017 training images (the README's main job, default split, so the threshold
comes from out-of-fold training scores), then `evaluate` on other ISIC images of the same
source and on generated and packaged non-lesion images. Skipped without ../shared;
benchmarks/ood_small_trees.py measures the same on more trees, 2,000 images included."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SHARED_ISIC = Path(__file__).resolve().parents[3] / "shared" / "data" / "isic2017"
BIN = Path(sys.executable).parent
TREE_SIZE, HELD_OUT = 300, 300

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not (SHARED_ISIC / "ISIC-2017_Training_Part3_GroundTruth.csv").is_file(),
                                 reason=f"real ISIC 2017 data not present at {SHARED_ISIC}")]


def _linked_tree(root: Path, images: list[tuple[str, str]]) -> Path:
    """Class folders of symlinks to the shared images: nothing copied."""
    for image_id, label in images:
        (root / label).mkdir(parents=True, exist_ok=True)
        (root / label / f"{image_id}.jpg").symlink_to(SHARED_ISIC / "ISIC-2017_Training_Data" / f"{image_id}.jpg")
    return root


def _ground_truth() -> list[tuple[str, str]]:
    rows = (SHARED_ISIC / "ISIC-2017_Training_Part3_GroundTruth.csv").read_text().splitlines()[1:]
    labels = []
    for row in rows:
        image_id, melanoma, keratosis = row.split(",")
        labels.append((image_id, "melanoma" if float(melanoma) else "seborrheic keratosis" if float(keratosis) else "nevus"))
    return labels


def _run(*args) -> subprocess.CompletedProcess:
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    return result


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    from benchmarks.non_lesion_images import write_generated

    root = tmp_path_factory.mktemp("ood_real")
    labels = _ground_truth()
    chosen = np.random.default_rng(0).permutation(len(labels))
    tree = _linked_tree(root / "tree", [labels[i] for i in chosen[:TREE_SIZE]])
    held = _linked_tree(root / "held_out", [labels[i] for i in chosen[TREE_SIZE:TREE_SIZE + HELD_OUT]])
    others = root / "non_lesion"
    for paths in write_generated(others / "generated", 4).values():
        for path in paths:
            path.rename(others / f"{path.parent.name}_{path.name}")
    graph = root / "model.pb"
    _run(BIN / "retrain", "--image_dir", tree, "--output_graph", graph, "--output_labels", root / "labels.txt",
         "--bottleneck_dir", root / "bottlenecks", "--how_many_training_steps", 500, "--random_seed", 0)
    levels = {}
    for name, folder in (("held_out", held), ("non_lesion", others)):
        _run(BIN / "evaluate", "--graph", graph, "--image_dir", folder, "--predictions", root / f"{name}.csv")
        levels[name] = [row["ood_level"] for row in csv.DictReader((root / f"{name}.csv").open())]
    return levels


def test_few_held_out_lesions_of_the_training_source_are_noted_and_almost_none_warned(evaluated):
    levels = evaluated["held_out"]
    assert len(levels) == HELD_OUT
    assert levels.count("none") / HELD_OUT > 0.85
    assert levels.count("not_of_kind") / HELD_OUT < 0.02


def test_every_blank_noise_and_text_frame_is_warned_as_not_of_the_kind_the_model_was_made_for(evaluated):
    levels = evaluated["non_lesion"]
    assert len(levels) > 20
    assert set(levels) == {"not_of_kind"}
