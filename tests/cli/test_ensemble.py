"""`ensemble`: two models trained by retrain (224 px, and 96 px with colour constancy) combined
into one; its .pb, SavedModel and .tflite agree with each other through label_image's loading,
give softmax(mean of the members' calibrated logits / T), and its card lists the members.
Every mistake is one line, before any feature is computed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from retrain.cli import ensemble, label_image, retrain
from retrain.card.formats import read_saved_model_card
from retrain.predict.prediction import load_image_for, load_model
from tests.conftest import run_cli


@pytest.fixture(scope="module")
def members(square_model, tmp_path_factory):
    """square_model, and a second model of the same images at 96 px with colour constancy."""
    root = tmp_path_factory.mktemp("member_b")
    result = run_cli(retrain, [
        "--image_dir", square_model / "images", "--output_graph", root / "graph.pb", "--output_labels",
        root / "labels.txt", "--saved_model_dir", root / "saved_model", "--how_many_training_steps", 200,
        "--learning_rate", 0.05, "--random_seed", 2, "--bottleneck_dir", root / "bottlenecks", "--image_size", 96,
        "--colour_constancy"])
    assert result.exit_code == 0, result.output
    return square_model / "saved_model", root / "saved_model"


@pytest.fixture(scope="module")
def combined(members, square_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("ensemble")
    result = run_cli(ensemble, [
        "--graph", members[0], "--graph", members[1], "--image_dir", square_model / "images",
        "--bottleneck_dir", out / "bottlenecks", "--output_graph", out / "graph.pb", "--output_labels",
        out / "labels.txt", "--saved_model_dir", out / "saved_model", "--tflite_output", out / "model.tflite",
        "--random_seed", 3])
    assert result.exit_code == 0, result.output
    return out, result.output


def _images(square_model) -> list[Path]:
    return sorted((square_model / "images").rglob("*.png"))[::6]


@pytest.mark.slow
@pytest.mark.parametrize("export", ["saved_model", "model.tflite"])
def test_every_format_of_the_ensemble_gives_the_frozen_graphs_probabilities(combined, square_model, export):
    out, output = combined
    images = _images(square_model)
    graph, other = load_model(out / "graph.pb"), load_model(out / export)
    want = graph.predict(np.stack([load_image_for(graph, p) for p in images]))
    got = other.predict(np.stack([load_image_for(other, p) for p in images]))
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert "TFLite parity on" in output and "100.0%" in output


@pytest.mark.slow
def test_the_ensemble_is_the_mean_of_its_members_calibrated_logits_under_its_own_temperature(combined, members,
                                                                                             square_model):
    import tensorflow as tf

    out, _ = combined
    card = read_saved_model_card(out / "saved_model")
    model, first, second = (load_model(path) for path in (out / "graph.pb", *members))
    pixels = np.stack([load_image_for(model, p) for p in _images(square_model)])
    assert model.input_height == 224 and second.input_height == 96
    logits = (np.log(first.predict(pixels)) + np.log(second.predict(tf.image.resize(pixels, [96, 96]).numpy()))) / 2
    scaled = logits / card.calibration.temperature
    want = np.exp(scaled - scaled.max(axis=1, keepdims=True))
    np.testing.assert_allclose(model.predict(pixels), want / want.sum(axis=1, keepdims=True), atol=1e-4)


@pytest.mark.slow
def test_the_card_lists_the_members_and_label_image_reads_the_ensemble(combined, members, square_model):
    out, _ = combined
    card = json.loads((out / "model.tflite.json").read_text())
    assert card["recipe"] == "ensemble" and [m["path"] for m in card["ensemble"]] == [str(m) for m in members]
    assert [m["input_size"] for m in card["ensemble"]] == [224, 96]
    assert card["ensemble"][1]["colour_constancy"] and "colour_constancy" not in card["ensemble"][0]
    assert card["ood"]["threshold"] > 0
    words = (out / "graph.model_card.md").read_text()
    assert "an ensemble of 2 models" in words and str(members[1]) in words
    image = sorted((square_model / "images" / "red").glob("*.png"))[0]
    result = run_cli(label_image, ["--graph", out / "model.tflite", "--image", image])
    assert result.exit_code == 0 and result.output.startswith("red (score="), result.output


@pytest.mark.slow
def test_members_of_other_classes_are_refused_in_one_line_before_any_feature_is_computed(members, tmp_path):
    import shutil

    tree = tmp_path / "tree"
    for name in ("cat", "dog"):
        shutil.copytree(Path(members[0]).parent / "images" / "red", tree / name)
    result = run_cli(ensemble, ["--graph", members[0], "--graph", members[1], "--image_dir", tree,
                                "--bottleneck_dir", tmp_path / "bn", "--output_graph", tmp_path / "e.pb"])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 1 and lines[-1].startswith("error: --graph: a member's labels"), result.output
    assert not (tmp_path / "bn").exists() and not (tmp_path / "e.pb").exists()


def _refused(tmp_path, graphs, expected):
    tree = tmp_path / "tree" / "a"
    tree.mkdir(parents=True, exist_ok=True)
    result = run_cli(ensemble, [*[arg for g in graphs for arg in ("--graph", g)], "--image_dir", tree.parent,
                                "--bottleneck_dir", tmp_path / "bn", "--output_graph", tmp_path / "e.pb"])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], \
        result.output
    assert not (tmp_path / "bn").exists() and not (tmp_path / "e.pb").exists()


def test_one_member_is_refused(tmp_path):
    (tmp_path / "m").mkdir()
    _refused(tmp_path, [tmp_path / "m"], "--graph: give at least two models to combine, got 1")


def test_a_frozen_graph_or_a_plain_folder_as_member_is_refused_naming_it(tmp_path):
    (tmp_path / "model.pb").write_bytes(b"not a graph")
    (tmp_path / "folder").mkdir()
    _refused(tmp_path, [tmp_path / "model.pb", tmp_path / "folder"], f"--graph {tmp_path / 'model.pb'}: is a file, "
                                                                     "not a SavedModel")
    _refused(tmp_path, [tmp_path / "folder", tmp_path / "folder"], f"--graph {tmp_path / 'folder'}: is a folder, "
                                                                    "not a SavedModel")


def test_a_missing_member_is_refused_naming_it(tmp_path):
    _refused(tmp_path, [tmp_path / "nope", tmp_path / "nope2"], f"--graph {tmp_path / 'nope'}: no such file or folder")
