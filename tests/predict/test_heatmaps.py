"""Heatmaps: the class activation map of a model trained where the class is a coloured
square at a random place must peak on the square; label_image --heatmap and --json."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from retrain.cli import label_image
from tests.conftest import SIDE, SIZE, SQUARE_COLOURS, square_image
from tests.conftest import run_cli as _run


@pytest.mark.parametrize("model_name", ["graph.pb", "saved_model"])
@pytest.mark.parametrize("corner", [(8, 10), pytest.param((120, 24), marks=pytest.mark.slow),
                                    pytest.param((60, 118), marks=pytest.mark.slow)])
def test_heatmap_peaks_on_the_coloured_square(square_model, model_name, corner):
    image, (x, y) = square_image(SQUARE_COLOURS["green"], seed=999, corner=corner)
    path = square_model / f"new_{x}_{y}.png"
    image.save(path)
    result = _run(label_image, ["--graph", square_model / model_name, "--image", path, "--json",
                                "--heatmap", square_model / f"heat_{model_name}_{x}.png"])
    assert result.exit_code == 0, result.output
    output = json.loads(result.stdout)
    assert output["predictions"][0]["label"] == "green"
    assert [p["label"] for p in output["predictions"]] == sorted(
        [p["label"] for p in output["predictions"]], key=lambda label: -next(
            p["score"] for p in output["predictions"] if p["label"] == label))
    grid = np.array(output["heatmap"]["grid"])
    assert output["heatmap"]["label"] == "green"
    assert grid.shape == (7, 7) and grid.min() >= 0 and grid.max() <= 1
    row, column = np.unravel_index(np.argmax(grid), grid.shape)
    cell = SIZE / grid.shape[0]  # the image is squashed to the network's input, so cells map back evenly
    centre_x, centre_y = (column + 0.5) * cell, (row + 0.5) * cell
    assert x - cell / 2 <= centre_x <= x + SIDE + cell / 2 and y - cell / 2 <= centre_y <= y + SIDE + cell / 2, (
        f"peak at cell {(row, column)} = pixel {(centre_x, centre_y)}, square at {(x, y)}+{SIDE}")
    drawn = Image.open(square_model / f"heat_{model_name}_{x}.png")
    assert drawn.width > SIZE and drawn.height > SIZE  # the photo at its own size or larger, plus the colour bar


def test_class_maps_average_to_the_logits(square_model):
    """The map is exact, not an approximation: each class's map averages to its logit less the
    bias. So log-probability minus map mean is the bias less a per-image constant: centred,
    it is the same for every image."""
    from retrain.predict.prediction import load_image_for, load_model

    model = load_model(square_model / "graph.pb")
    for seed, name in enumerate(SQUARE_COLOURS):
        square_image(SQUARE_COLOURS[name], seed=50 + seed)[0].save(square_model / f"exact_{name}.png")
    pixels = np.stack([load_image_for(model, square_model / f"exact_{name}.png") for name in SQUARE_COLOURS])
    probabilities, maps = model.class_activation_maps(pixels)
    np.testing.assert_allclose(probabilities, model.predict(pixels), atol=1e-6)
    bias = np.log(probabilities) - maps.mean(axis=(1, 2))
    centred = bias - bias.mean(axis=1, keepdims=True)
    assert np.ptp(np.log(probabilities), axis=1).max() > 1  # the images are told apart: the check has teeth
    np.testing.assert_allclose(centred, np.broadcast_to(centred[0], centred.shape), atol=1e-4)


def test_heatmap_class_picks_another_label(square_model):
    image, _ = square_image(SQUARE_COLOURS["blue"], seed=7)
    image.save(square_model / "blue.png")
    result = _run(label_image, ["--graph", square_model / "graph.pb", "--image", square_model / "blue.png", "--json",
                                "--heatmap", square_model / "red_of_blue.png", "--heatmap_class", "red"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["heatmap"]["label"] == "red"


def test_plain_output_is_unchanged_and_says_where_the_heatmap_went(square_model):
    image, _ = square_image(SQUARE_COLOURS["red"], seed=8)
    image.save(square_model / "red.png")
    result = _run(label_image, ["--graph", square_model / "graph.pb", "--image", square_model / "red.png",
                                "--heatmap", square_model / "red_heat.png"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("red (score=") and len(lines) == 4
    assert lines[-1] == f"Wrote the heatmap of red to {square_model / 'red_heat.png'}"


def test_unwritable_heatmap_still_prints_the_prediction(square_model):
    image, _ = square_image(SQUARE_COLOURS["red"], seed=9)
    image.save(square_model / "red9.png")
    result = _run(label_image, ["--graph", square_model / "graph.pb", "--image", square_model / "red9.png",
                                "--heatmap", square_model / "missing" / "heat.png"])
    assert result.exit_code == 1
    assert result.stdout.splitlines()[0].startswith("red (score=")
    (error,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "missing" in error and "does not exist" in error and "prediction above is complete" in error


def test_unknown_heatmap_class_is_one_error_after_the_prediction(square_model):
    image, _ = square_image(SQUARE_COLOURS["red"], seed=10)
    image.save(square_model / "red10.png")
    result = _run(label_image, ["--graph", square_model / "graph.pb", "--image", square_model / "red10.png",
                                "--heatmap", square_model / "h.png", "--heatmap_class", "purple"])
    assert result.exit_code == 1
    assert result.stdout.startswith("red (score=")
    (error,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "'purple'" in error and "red" in error


def test_json_without_heatmap_has_predictions_and_decisions_only(square_model):
    image, _ = square_image(SQUARE_COLOURS["blue"], seed=11)
    image.save(square_model / "blue11.png")
    result = _run(label_image, ["--graph", square_model / "graph.pb", "--image", square_model / "blue11.png", "--json"])
    assert result.exit_code == 0, result.output
    output = json.loads(result.stdout)
    assert set(output) == {"image", "model", "input_size", "predictions", "decisions", "no_operating_point", "ood",
                           "no_ood"}
    assert output["input_size"] == {"height": 224, "width": 224}
    assert abs(sum(p["score"] for p in output["predictions"]) - 1) < 1e-3


def test_heatmap_class_without_heatmap_is_an_error(square_model):
    result = _run(label_image, ["--graph", square_model / "graph.pb", "--image", square_model / "blue11.png",
                                "--heatmap_class", "red"])
    assert result.exit_code == 1
    assert "--heatmap_class needs --heatmap" in result.stderr


def test_stock_model_draws_a_heatmap_with_tta(square_model):
    image, _ = square_image(SQUARE_COLOURS["red"], seed=12)
    image.save(square_model / "stock.png")
    result = _run(label_image, ["--image", square_model / "stock.png", "--tta", "--json",
                                "--heatmap", square_model / "stock_heat.png"])
    assert result.exit_code == 0, result.output
    output = json.loads(result.stdout)
    assert len(output["predictions"]) == 5 and np.array(output["heatmap"]["grid"]).shape == (7, 7)
    assert (square_model / "stock_heat.png").exists()


def test_a_heatmap_file_not_named_png_is_refused_before_loading(square_model, tmp_path):
    result = _run(label_image, ["--graph", square_model / "graph.pb", "--image", square_model / "blue11.png",
                                "--heatmap", tmp_path / "where.txt"])
    assert result.exit_code == 1
    assert result.stderr.strip() == (f"error: --heatmap {tmp_path / 'where.txt'}: the heatmap is a PNG image; "
                                     "give a name ending in .png")
    assert not (tmp_path / "where.txt").exists() and result.stdout == ""
