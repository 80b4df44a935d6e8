"""`ensemble`: two models trained by retrain, exported as one model whose logits are the mean of
their calibrated logits, in every format, agreeing with label_image's preprocessing; every
mistake refused in one line before any image is read."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from retrain.api.ensembling import ensemble_head
from retrain.card.formats import write_saved_model_card
from retrain.cli.ensemble_command import ensemble
from retrain.cli.export_tflite_command import export_tflite
from retrain.predict.prediction import load_image_for, load_model
from retrain.train.top_layer import TopLayer, softmax
from tests.conftest import as_card, run_cli

LABELS = ["blue", "green", "red"]
CARDS = Path(__file__).resolve().parents[1] / "card" / "cards"  # cards retrain wrote


# --- the top layer -------------------------------------------------------------------------------

def test_the_head_gives_the_mean_of_the_members_logits():
    rng = np.random.default_rng(0)
    layers = [TopLayer(rng.normal(size=(4, 3)), rng.normal(size=3)), TopLayer(rng.normal(size=(6, 3)), rng.normal(size=3))]
    features = [rng.normal(size=(5, 4)), rng.normal(size=(5, 6))]
    head = ensemble_head(layers, [tuple(LABELS)] * 2, LABELS)
    expected = (layers[0].logits(features[0]) + layers[1].logits(features[1])) / 2
    np.testing.assert_allclose(head.logits(np.hstack(features)), expected, rtol=1e-5, atol=1e-5)


def test_a_member_with_its_labels_in_another_order_is_put_in_the_ensembles_order():
    rng = np.random.default_rng(1)
    first = TopLayer(rng.normal(size=(4, 3)), rng.normal(size=3))
    order = [2, 0, 1]  # the second member's classes: red, blue, green
    second = TopLayer(first.weights[:, order], first.bias[order])
    head = ensemble_head([first, second], [tuple(LABELS), tuple(LABELS[i] for i in order)], LABELS)
    features = rng.normal(size=(5, 4))
    np.testing.assert_allclose(head.logits(np.hstack([features, features])), first.logits(features), atol=1e-5)


def test_the_heatmaps_are_the_mean_of_the_members_maps(tmp_path):
    from retrain.backbones import create_backbone
    from retrain.backbones.ensemble import ensemble_backbone
    from retrain.export.graph import MAPS_NAME, ServingModel

    rng = np.random.default_rng(2)
    members = [create_backbone("efficientnet_lite0", tmp_path, random_weights=True, image_size=64) for _ in range(2)]
    layers = [TopLayer(rng.normal(0, 0.05, (1280, 3)).astype(np.float32), np.zeros(3, np.float32)) for _ in members]
    serving = ServingModel(ensemble_backbone(members), ensemble_head(layers, [tuple(LABELS)] * 2, LABELS), "final_result")
    images = rng.uniform(0, 255, (1, 64, 64, 3)).astype(np.float32)
    maps = serving.serve_with_maps(tf.constant(images))[MAPS_NAME].numpy()
    alone = [ServingModel(member, layer, "final_result").serve_with_maps(tf.constant(images))[MAPS_NAME].numpy()
             for member, layer in zip(members, layers)]
    np.testing.assert_allclose(maps, np.mean(alone, axis=0), atol=1e-4)


# --- refusals, before any image is read ----------------------------------------------------------

def _fake_member(folder, **card):
    """A folder that looks like retrain's SavedModel from outside: the checks read only its card."""
    folder.mkdir(parents=True)
    (folder / "saved_model.pb").write_bytes(b"")
    write_saved_model_card(folder, as_card({"labels": LABELS, "architecture": "efficientnet_lite0", **card}))
    return folder


def _refused(args) -> str:
    result = run_cli(ensemble, args)
    assert result.exit_code != 0, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Bottlenecks" not in result.output, result.output
    return errors[0]


@pytest.fixture
def members(tmp_path, make_tree):
    make_tree({"blue": 2, "green": 2, "red": 2})
    return _fake_member(tmp_path / "a"), _fake_member(tmp_path / "b")


def _args(tmp_path, *graphs):
    return [*(a for g in graphs for a in ("--graph", g)), "--image_dir", tmp_path / "images",
            "--output_graph", tmp_path / "out.pb", "--output_labels", tmp_path / "out.txt"]


def test_one_member_is_refused(members, tmp_path):
    assert "at least two models, got 1" in _refused(_args(tmp_path, members[0]))


@pytest.mark.parametrize("suffix", [".pb", ".tflite"])
def test_a_frozen_graph_or_tflite_member_is_refused_asking_for_its_saved_model_folder(members, tmp_path, suffix):
    model = tmp_path / f"model{suffix}"
    model.write_bytes(b"x")
    line = _refused(_args(tmp_path, members[0], model))
    assert line.startswith(f"error: --graph {model}: a {suffix} file") and "SavedModel folder" in line
    assert "--saved_model_dir" in line


def test_a_folder_that_is_not_a_saved_model_is_refused(members, tmp_path):
    (tmp_path / "empty").mkdir()
    assert "not a SavedModel (no saved_model.pb)" in _refused(_args(tmp_path, members[0], tmp_path / "empty"))


def test_a_saved_model_without_a_card_is_refused(members, tmp_path):
    (tmp_path / "bare").mkdir()
    (tmp_path / "bare" / "saved_model.pb").write_bytes(b"")
    assert "not written by retrain" in _refused(_args(tmp_path, members[0], tmp_path / "bare"))


def test_members_with_other_labels_are_refused(members, tmp_path):
    other = _fake_member(tmp_path / "c", labels=["blue", "green", "yellow"])
    line = _refused(_args(tmp_path, members[0], other))
    assert f"--graph {other}: its labels (blue, green, yellow) differ" in line


def test_a_member_whose_backbone_cannot_be_rebuilt_is_refused(members, tmp_path):
    other = _fake_member(tmp_path / "c", architecture="mobilenet_v2_1.0_224")
    assert f"--graph {other}: its backbone mobilenet_v2_1.0_224 cannot be rebuilt" in _refused(
        _args(tmp_path, members[0], other))


def test_a_member_with_patient_metadata_is_refused(members, tmp_path):
    stored = json.loads((CARDS / "patient_metadata.pb.json").read_text())["patient_metadata"]
    other = _fake_member(tmp_path / "c", patient_metadata=stored)
    assert "takes patient metadata" in _refused(_args(tmp_path, members[0], other))


def test_a_saved_model_dir_inside_a_member_is_refused(members, tmp_path):
    line = _refused([*_args(tmp_path, *members), "--saved_model_dir", members[0] / "ensemble"])
    assert "--saved_model_dir" in line and "--graph" in line


def test_a_member_that_is_not_readable_is_one_line_and_one_trained_elsewhere_is_warned_of(members, tmp_path):
    result = run_cli(ensemble, _args(tmp_path, *members))
    assert result.exit_code == 1 and "Bottlenecks" not in result.output
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert line.startswith(f"error: --graph {members[0]}: cannot be read as a SavedModel")
    assert f"warning: --graph {members[0]} was trained on a tree its card does not name, not --image_dir" in result.stderr


def test_a_tree_of_other_classes_is_refused(members, tmp_path, make_tree):
    make_tree({"blue": 2, "green": 2}, root=tmp_path / "two")
    args = _args(tmp_path, *members)
    args[args.index("--image_dir") + 1] = tmp_path / "two"
    assert "its classes (blue, green) are not the models' labels" in _refused(args)


# --- two real members ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained_pair(square_model, tmp_path_factory):
    """Two members of the square tree: EfficientNet-Lite0 at 64 px and, with colour constancy, at 96 px."""
    from retrain.cli import retrain

    root = tmp_path_factory.mktemp("members")
    members = []
    for name, extra in (("small", ["--image_size", 64]), ("large", ["--image_size", 96, "--colour_constancy"])):
        result = run_cli(retrain, ["--image_dir", square_model / "images", "--output_graph", root / f"{name}.pb",
                                   "--output_labels", root / f"{name}.txt", "--saved_model_dir", root / name,
                                   "--how_many_training_steps", 100, "--learning_rate", 0.05, "--random_seed", 1,
                                   "--bottleneck_dir", root / "bottlenecks", *extra])
        assert result.exit_code == 0, result.output
        members.append(root / name)
    out = root / "ensemble"
    result = run_cli(ensemble, ["--graph", members[0], "--graph", members[1], "--image_dir", square_model / "images",
                                "--output_graph", out / "ensemble.pb", "--output_labels", out / "labels.txt",
                                "--saved_model_dir", out / "saved_model", "--tflite_output", out / "ensemble.tflite",
                                "--operating_point", "red:sensitivity=0.9", "--random_seed", 1,
                                "--validation_percentage", 30, "--testing_percentage", 20,
                                "--bottleneck_dir", root / "bottlenecks"])
    assert result.exit_code == 0, result.output
    return members, out, result


@pytest.mark.slow
def test_the_ensemble_agrees_in_every_format_and_averages_its_members(trained_pair, square_model):
    members, out, result = trained_pair
    images = sorted((square_model / "images").rglob("*.png"))[::8]
    graph, saved, lite = (load_model(out / name) for name in ("ensemble.pb", "saved_model", "ensemble.tflite"))
    pixels = np.stack([load_image_for(graph, image) for image in images])
    assert graph.input_width == 96
    for other in (saved, lite):
        np.testing.assert_allclose(np.stack([load_image_for(other, image) for image in images]), pixels)
        np.testing.assert_allclose(other.predict(pixels), graph.predict(pixels), atol=1e-4)
    # softmax(mean of the members' calibrated logits / T): log p is a member's calibrated logits up to a constant.
    # Noise too: on the squares both members are all but certain, so any mean would pass.
    pixels = np.concatenate([pixels, np.random.default_rng(0).uniform(0, 255, (4, 96, 96, 3)).astype(np.float32)])
    card = graph.model_card
    member_logits = [np.log(load_model(member).predict(tf.image.resize(pixels, [size, size], "bilinear").numpy()))
                     for member, size in zip(members, (64, 96))]
    expected = softmax(np.mean(member_logits, axis=0) / card.calibration.temperature)
    np.testing.assert_allclose(graph.predict(pixels), expected, atol=1e-4)
    alone = [softmax(logits / card.calibration.temperature) for logits in member_logits]
    assert min(np.abs(expected - p).max() for p in alone) > 1e-2  # the check tells a member from the mean
    assert "TFLite parity on" in result.output and card.ood is not None and card.points
    assert "was trained on" not in result.output  # the members' own tree


@pytest.mark.slow
def test_the_card_lists_both_members(trained_pair):
    members, out, _ = trained_pair
    card = load_model(out / "saved_model").model_card
    assert card.recipe == "ensemble" and card.architecture == "ensemble" and card.class_activation_maps is None
    assert [(m.path, m.input_size, m.colour_constancy is not None) for m in card.members] == [
        (str(members[0]), 64, False), (str(members[1]), 96, True)]
    assert all(m.backbone_identity and m.recipe == "poets" and 0.5 <= m.validation_auc <= 1 for m in card.members)
    stored = json.loads((out / "ensemble.tflite.json").read_text())
    assert [m["path"] for m in stored["members"]] == [str(m) for m in members]
    markdown = (out / "ensemble.model_card.md").read_text()
    assert f"  - {members[0]}: efficientnet_lite0 at 64 px" in markdown and "an ensemble of 2 models" in markdown


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["dynamic", "float16", "int8"])
def test_every_quantization_of_an_ensemble_loads_and_classifies(trained_pair, square_model, mode, tmp_path):
    _, out, _ = trained_pair
    result = run_cli(export_tflite, ["--saved_model_dir", out / "saved_model", "--output", tmp_path / f"{mode}.tflite",
                                     "--quantization", mode, "--image_dir", square_model / "images",
                                     "--representative_images", 8])
    assert result.exit_code == 0, result.output
    graph, lite = load_model(out / "ensemble.pb"), load_model(tmp_path / f"{mode}.tflite")
    images = sorted((square_model / "images").rglob("*.png"))[::6]
    pixels = np.stack([load_image_for(graph, image) for image in images])
    assert (lite.predict(pixels).argmax(axis=1) == graph.predict(pixels).argmax(axis=1)).mean() >= 0.75
