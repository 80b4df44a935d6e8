"""retrain.api.load and classify: a model read once and called for each image or batch, and the
call label_image makes, used directly from Python."""

from __future__ import annotations

import json

import pytest

from retrain.api import Classifier, HeatmapRequest, classify, load
from retrain.cli import export_tflite, label_image
from retrain.cli.fields import in_flags
from retrain.errors import UserError
from retrain.predict import prediction
from tests.conftest import SQUARE_COLOURS, run_cli, square_image


@pytest.fixture
def blue_square(square_model, tmp_path):
    path = tmp_path / "blue.png"
    square_image(SQUARE_COLOURS["blue"], seed=31)[0].save(path)
    return path


@pytest.fixture(scope="module")
def squares(square_model, tmp_path_factory):
    """One image of each colour, with the colour it is."""
    root = tmp_path_factory.mktemp("batch")
    paths = {}
    for index, name in enumerate(SQUARE_COLOURS):
        paths[name] = root / f"{name}.png"
        square_image(SQUARE_COLOURS[name], seed=9000 + index)[0].save(paths[name])
    return paths


@pytest.fixture(scope="module")
def square_tflite(square_model, tmp_path_factory):
    output = tmp_path_factory.mktemp("tflite") / "squares.tflite"
    result = run_cli(export_tflite, ["--saved_model_dir", square_model / "saved_model", "--output", output])
    assert result.exit_code == 0, result.output
    return output


@pytest.fixture
def counted_loads(monkeypatch):
    """How many times a model file was read."""
    loads = []
    real = prediction.load_model

    def counting(*args, **kwargs):
        loads.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(prediction, "load_model", counting)
    return loads


@pytest.mark.parametrize("model", ["graph.pb", "saved_model", "tflite"])
def test_load_reads_each_format_once_and_classifies_a_batch(model, square_model, square_tflite, squares,
                                                           counted_loads):
    path = square_tflite if model == "tflite" else square_model / model
    classifier = load(path)
    assert isinstance(classifier, Classifier) and counted_loads == [path]
    assert list(classifier.labels) == sorted(SQUARE_COLOURS)
    assert classifier.model_card is not None and classifier.model_card.labels == classifier.labels
    results = classifier(list(squares.values()))
    assert [r.predictions[0].label for r in results] == list(squares)
    assert [r.image for r in results] == list(squares.values())
    one = classifier(squares["red"])
    assert one.predictions[0].label == "red"
    assert one.predictions[0].score == pytest.approx(results[list(squares).index("red")].predictions[0].score, abs=1e-5)
    assert counted_loads == [path]


def test_a_loaded_classifier_called_twice_does_not_reload(square_model, squares, counted_loads):
    classifier = load(square_model / "graph.pb")
    first, second = classifier(squares["green"]), classify(squares["green"], classifier)
    assert counted_loads == [square_model / "graph.pb"]
    assert first.predictions == second.predictions


def test_classify_with_a_path_loads_the_model_each_call(square_model, squares, counted_loads):
    classify(squares["green"], square_model / "graph.pb")
    classify(squares["green"], square_model / "graph.pb")
    assert len(counted_loads) == 2


def test_a_batch_takes_one_patient_metadata_text_per_image(square_model, squares):
    classifier = load(square_model / "graph.pb")
    with pytest.raises(UserError, match="Classifier.patient_metadata: 1 rows for 3 images"):
        classifier(list(squares.values()), ["age_approximate=50"])


def test_classify_returns_what_label_image_prints(square_model, blue_square):
    result = classify(blue_square, square_model / "graph.pb", top_k=3)
    printed = run_cli(label_image, ["--graph", square_model / "graph.pb", "--image", blue_square, "--top_k", 3])
    assert printed.exit_code == 0, printed.output
    assert result.predictions[0].label == "blue"
    assert [f"{p.label} (score={p.score:.5f})" for p in result.predictions] == printed.stdout.splitlines()


def test_a_heatmap_that_cannot_be_written_is_reported_beside_the_predictions(square_model, blue_square, tmp_path):
    result = classify(blue_square, square_model / "graph.pb", heatmap=HeatmapRequest(tmp_path / "missing" / "heat.png"))
    assert result.predictions[0].label == "blue"
    assert result.heatmap is None and "does not exist" in result.heatmap_error
    assert result.heatmap_error.startswith("HeatmapRequest.file ")
    assert result.as_json()["heatmap_error"] == result.heatmap_error


def test_classify_draws_the_heatmap_of_the_class_asked_for(square_model, blue_square, tmp_path):
    result = classify(blue_square, load(square_model / "graph.pb"), heatmap=HeatmapRequest(tmp_path / "h.png", "red"))
    assert result.heatmap.label == "red" and (tmp_path / "h.png").is_file()


def test_a_mistake_raises_user_error_naming_the_parameter_label_image_names_by_its_flag(square_model, blue_square):
    with pytest.raises(UserError) as raised:
        classify(blue_square, square_model / "graph.pb", top_k=0)
    assert str(raised.value) == "classify.top_k must be at least 1, got 0"
    printed = run_cli(label_image, ["--graph", square_model / "graph.pb", "--image", blue_square, "--top_k", 0])
    assert printed.exit_code == 1
    assert printed.stderr.splitlines() == [f"error: {in_flags(str(raised.value))}"]
    assert printed.stderr.splitlines() == ["error: --top_k must be at least 1, got 0"]


def test_label_image_refuses_a_heatmap_class_without_a_heatmap(square_model, blue_square):
    printed = run_cli(label_image, ["--graph", square_model / "graph.pb", "--image", blue_square, "--heatmap_class", "red"])
    assert printed.exit_code == 1
    assert printed.stderr.splitlines() == ["error: --heatmap_class needs --heatmap FILE.png to draw it to"]


def test_classify_carries_the_decisions_and_checks_that_json_prints(square_model, blue_square):
    result = classify(blue_square, square_model / "graph.pb")
    printed = run_cli(label_image, ["--graph", square_model / "graph.pb", "--image", blue_square, "--json"])
    assert printed.exit_code == 0, printed.output
    output = json.loads(printed.stdout)
    assert result.decisions == () and output["decisions"] == []  # square_model was trained without --operating_point
    assert output["no_operating_point"] == in_flags(result.no_operating_point) and "no operating point" in result.notes[0]
    expected = None if result.ood is None else result.ood.as_json()
    if expected is not None:  # two TensorFlow runs may differ in the last float digits
        assert output["ood"].pop("score") == pytest.approx(expected.pop("score"), rel=1e-5)
    assert output["ood"] == expected
    assert (result.ood is None) == (result.model.model_card.ood is None)
