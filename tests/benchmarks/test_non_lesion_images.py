"""The non-lesion test images (benchmarks.non_lesion_images) and the OOD benchmark's own scores."""

import hashlib
import sys

import numpy as np
from PIL import Image

from benchmarks import ood_isic
from benchmarks.non_lesion_images import (
    GENERATORS,
    generated_image,
    package_images,
    write_all,
    write_generated,
)


def _digests(paths):
    return [hashlib.sha1(p.read_bytes()).hexdigest() for p in paths]


def test_generated_images_are_the_same_bytes_on_every_run_and_the_first_ones_do_not_depend_on_count(tmp_path):
    first = write_generated(tmp_path / "a", count=2, size=64)
    second = write_generated(tmp_path / "b", count=3, size=64)
    assert list(first) == list(GENERATORS)
    for kind in GENERATORS:
        assert _digests(first[kind]) == _digests(second[kind][:2]), kind
        assert len(set(_digests(second[kind]))) == 3, kind  # every image differs from the others


def test_generated_kinds_look_as_named():
    black, white = (np.asarray(generated_image("blank", i, 32)) for i in range(2))
    assert black.max() == 0 and white.min() == 255
    noise = np.asarray(generated_image("noise, uniform", 0, 64))
    assert noise.std() > 60 and noise.shape == (64, 64, 3)
    text = np.asarray(generated_image("text, dark on light", 0, 128)).mean(axis=2)
    assert np.median(text) > 200 and text.min() < 80  # light paper, dark ink
    board = np.asarray(generated_image("checkerboard", 0, 64)).reshape(-1, 3)
    assert len(np.unique(board, axis=0)) == 2


def test_package_images_skip_icons_and_write_all_lists_every_kind(tmp_path, monkeypatch):
    site = tmp_path / "site-packages"
    (site / "pkg").mkdir(parents=True)
    Image.new("RGB", (80, 60), "red").save(site / "pkg" / "photo.jpg")
    Image.new("RGB", (24, 24), "blue").save(site / "pkg" / "icon.png")
    Image.new("RGB", (48, 48), "blue").save(site / "pkg" / "logo.png")
    monkeypatch.setattr("sysconfig.get_paths", lambda: {"purelib": str(site), "platlib": str(site)})
    assert package_images() == {"photo (packages)": [site / "pkg" / "photo.jpg"],
                                "graphic (packages)": [site / "pkg" / "logo.png"]}
    kinds = write_all(tmp_path / "out", count=2)
    assert len(kinds["photo crops (packages)"]) == 2 and "MRI slice (matplotlib)" not in kinds
    assert all(len(kinds[kind]) == 2 for kind in GENERATORS)


def test_energy_and_knn_scores_rank_the_unfamiliar_higher():
    logits = np.array([[10.0, 0.0, 0.0], [0.1, 0.0, 0.1]])
    assert ood_isic.energy(logits)[0] < ood_isic.energy(logits)[1]
    np.testing.assert_allclose(ood_isic.energy(np.zeros((1, 3))), [-np.log(3)])
    train = np.eye(4)[[0, 0, 1, 1]]
    score = ood_isic.knn_distance(train, k=2)
    np.testing.assert_allclose(score(np.array([[2.0, 0, 0, 0], [0, 0, 1.0, 0]])), [0.0, 1.0], atol=1e-12)


def test_flagged_table_sets_the_threshold_on_validation():
    validation = np.arange(100.0)[:, None]
    rows = {"ISIC validation": validation, "far": np.full((4, 1), 1000.0), "near": np.array([[1.0], [99.0]])}
    table = ood_isic.flagged_table({"identity": lambda x: x[:, 0]}, validation, rows)
    assert [row[2] for row in table[:3]] == ["5 %", "100 %", "50 %"]
    assert table[-1][0].startswith("AUROC") and table[-1][1] == "6"


def test_ood_benchmark_skips_without_shared_data(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["ood_isic", "--shared", str(tmp_path)])
    ood_isic.main()
    assert capsys.readouterr().out.startswith("skipped: no ISIC 2017")


def test_small_trees_benchmark_skips_without_shared_data(tmp_path, monkeypatch, capsys):
    from benchmarks import ood_small_trees

    monkeypatch.setattr(sys, "argv", ["ood_small_trees", "--shared", str(tmp_path)])
    ood_small_trees.main()
    assert capsys.readouterr().out.startswith("skipped: no ISIC 2017")


def test_small_trees_are_drawn_narrow_from_the_folder_order_and_at_random():
    from benchmarks import ood_small_trees

    labels = np.array([0, 1, 2] * 400)
    trees = ood_small_trees.trees(labels, seeds=2)
    first = trees["first 150 mel + 150 nev"]
    assert len(first) == 300 and first.max() < 450 + 3 and set(labels[first]) == {0, 1}
    assert trees["last 100 of each of 3"].min() >= 900 - 3
    assert len(trees["random 300, seed 1"]) == len(set(trees["random 300, seed 1"])) == 300
    assert len(trees["all 2000 (+150 validation)"]) == len(labels)


def test_mediapipe_benchmark_skips_without_shared_data(tmp_path, monkeypatch, capsys):
    from benchmarks import mediapipe_isic

    monkeypatch.setattr(sys, "argv", ["mediapipe_isic", "--shared", str(tmp_path)])
    mediapipe_isic.main()
    assert capsys.readouterr().out.startswith("skipped: no ISIC 2017")


def test_mediapipe_benchmark_trees_are_class_folders_of_symlinks(tmp_path):
    from benchmarks.mediapipe_isic import class_tree

    images = [tmp_path / f"ISIC_{i}.jpg" for i in range(3)]
    for image in images:
        image.write_bytes(b"jpeg")
    tree = class_tree(images, np.array([2, 0, 2]), tmp_path / "tree")
    assert sorted(p.name for p in (tree / "seborrheic_keratosis").iterdir()) == ["ISIC_0.jpg", "ISIC_2.jpg"]
    assert (tree / "melanoma" / "ISIC_1.jpg").is_symlink() and not any((tree / "nevus").iterdir())


def test_colour_benchmark_skips_without_shared_data(tmp_path, monkeypatch, capsys):
    from benchmarks import colour_isic

    monkeypatch.setattr(sys, "argv", ["colour_isic", "--shared", str(tmp_path), "--output", str(tmp_path / "out")])
    colour_isic.main()
    assert capsys.readouterr().out.startswith("skipped: no ISIC 2017")
    assert not (tmp_path / "out").exists()
