"""retrain.api.classify: the call label_image makes, used directly from Python."""

from __future__ import annotations

import json

import pytest

from retrain.api.classification import classify
from retrain.cli import label_image
from retrain.errors import UserError
from tests.conftest import SQUARE_COLOURS, run_cli, square_image


@pytest.fixture
def blue_square(square_model, tmp_path):
    path = tmp_path / "blue.png"
    square_image(SQUARE_COLOURS["blue"], seed=31)[0].save(path)
    return path


def test_classify_returns_what_label_image_prints(square_model, blue_square):
    result = classify(blue_square, graph=square_model / "graph.pb", top_k=3)
    printed = run_cli(label_image, ["--graph", square_model / "graph.pb", "--image", blue_square, "--top_k", 3])
    assert printed.exit_code == 0, printed.output
    assert result.predictions[0].label == "blue"
    assert [f"{p.label} (score={p.score:.5f})" for p in result.predictions] == printed.stdout.splitlines()


def test_a_heatmap_that_cannot_be_written_is_reported_beside_the_predictions(square_model, blue_square, tmp_path):
    result = classify(blue_square, graph=square_model / "graph.pb", heatmap=tmp_path / "missing" / "heat.png")
    assert result.predictions[0].label == "blue"
    assert result.heatmap is None and "does not exist" in result.heatmap_error
    assert result.as_json()["heatmap_error"] == result.heatmap_error


def test_a_mistake_raises_user_error_with_the_line_label_image_prints(square_model, blue_square):
    with pytest.raises(UserError) as raised:
        classify(blue_square, graph=square_model / "graph.pb", heatmap_class="red")
    printed = run_cli(label_image, ["--graph", square_model / "graph.pb", "--image", blue_square, "--heatmap_class", "red"])
    assert printed.exit_code == 1
    assert printed.stderr.splitlines() == [f"error: {raised.value}"]
    assert str(raised.value) == "--heatmap_class needs --heatmap FILE.png to draw it to"


def test_classify_carries_the_decisions_and_checks_that_json_prints(square_model, blue_square):
    result = classify(blue_square, graph=square_model / "graph.pb")
    printed = run_cli(label_image, ["--graph", square_model / "graph.pb", "--image", blue_square, "--json"])
    assert printed.exit_code == 0, printed.output
    output = json.loads(printed.stdout)
    assert result.decisions == () and output["decisions"] == []  # square_model was trained without --operating_point
    assert output["no_operating_point"] == result.no_operating_point and "no operating point" in result.notes[0]
    expected = None if result.ood is None else result.ood.as_json()
    if expected is not None:  # two TensorFlow runs may differ in the last float digits
        assert output["ood"].pop("score") == pytest.approx(expected.pop("score"), rel=1e-5)
    assert output["ood"] == expected
    assert (result.ood is None) == (result.model.model_card.ood is None)
