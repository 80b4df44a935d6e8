"""label_image's decisions: one line per operating point stored with the model, the
out-of-distribution warning, and the note for a model that has neither; --json carries them."""

from __future__ import annotations

import importlib
import json

import numpy as np
import pytest
from PIL import Image

from retrain.cli import label_image
from retrain.predict.loaded_model import LoadedModel
from retrain.decisions.operating_points import OperatingPoint
from tests.conftest import SQUARE_COLOURS, as_card, run_cli, square_image

MELANOMA = OperatingPoint("melanoma", "sensitivity", 0.95, 0.214, 0.967, 0.525, 30, 120, "validation")
OOD = {"method": "mahalanobis", "threshold": 2.0, "flagged_share": 0.05, "chosen_on": "validation", "count": 150,
       "output_name": "ood_score"}


def _fake_model(melanoma: float, ood_score: float | None = None, card: dict | None = None) -> LoadedModel:
    """A two-class model that gives every image P(melanoma) = `melanoma`: no TensorFlow, instant."""
    probabilities = np.array([[1 - melanoma, melanoma]], np.float32)

    def predict(pixels, rows=None):
        return np.repeat(probabilities, len(pixels), axis=0)

    def ood(pixels, rows=None):
        return predict(pixels), np.full(len(pixels), ood_score, np.float32)

    if card is None:
        card = {"format": "retrain", "labels": ["nevus", "melanoma"], "operating_points": [MELANOMA.card()], "ood": OOD}
    return LoadedModel(predict, 8, 8, card["labels"], "fake.pb", model_card=as_card(card),
                       ood=None if ood_score is None else ood)


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "lesion.png"
    Image.new("RGB", (8, 8), (120, 80, 60)).save(path)
    return path


def _label_image(monkeypatch, model: LoadedModel, image, *extra):
    monkeypatch.setattr(importlib.import_module("retrain.predict.classifier"), "import_tensorflow", lambda: None)
    monkeypatch.setattr(importlib.import_module("retrain.predict.prediction"), "load_model", lambda *args: model)
    result = run_cli(label_image, ["--graph", "fake.pb", "--image", image, *extra])
    assert result.exit_code == 0, result.output
    return result


def test_a_score_over_the_threshold_is_a_positive_call_with_what_the_threshold_gave(monkeypatch, image):
    result = _label_image(monkeypatch, _fake_model(0.412, ood_score=1.0), image)
    lines = result.stdout.splitlines()
    assert lines[:2] == ["nevus (score=0.58800)", "melanoma (score=0.41200)"]
    assert lines[2] == ("Decision: melanoma 0.412 >= threshold 0.214 -> called melanoma (threshold chosen for "
                        "sensitivity 0.95 on the validation images, where it gave sensitivity 96.7%, specificity 52.5%)")
    assert result.stderr == ""  # in distribution, and the model has both checks: nothing to warn of


def test_a_score_under_the_threshold_is_negative_and_does_not_rule_out(monkeypatch, image):
    lines = _label_image(monkeypatch, _fake_model(0.1, ood_score=1.0), image).stdout.splitlines()
    assert lines[2].startswith("Decision: melanoma 0.100 < threshold 0.214 -> not called melanoma, which does not "
                               "rule it out (")


def test_a_call_on_a_class_that_is_not_a_disease_is_worded_by_what_it_is(monkeypatch, image):
    """retrain cannot know which classes are diseases: every call reads the same, for any class."""
    nevus = OperatingPoint("nevus", "threshold", 0.6, 0.6, 0.8, 0.7, 20, 20, "out-of-fold training")
    card = {"format": "retrain", "labels": ["nevus", "melanoma"], "operating_points": [nevus.card()], "ood": OOD}
    lines = _label_image(monkeypatch, _fake_model(0.1, ood_score=1.0, card=card), image).stdout.splitlines()
    assert lines[2] == ("Decision: nevus 0.900 >= threshold 0.600 -> called nevus (threshold 0.6 set by hand; on "
                        "out-of-fold predictions on the training images it gave sensitivity 80.0%, specificity 70.0%)")
    assert "refer" not in lines[2] and "POSITIVE" not in lines[2]


def test_a_score_next_to_the_threshold_is_shown_with_the_digits_that_tell_them_apart(monkeypatch, image):
    lines = _label_image(monkeypatch, _fake_model(0.2139, ood_score=1.0), image).stdout.splitlines()
    assert "melanoma 0.2139 < threshold 0.214 ->" in lines[2]


@pytest.mark.parametrize("melanoma, positive", [(0.412, True), (0.1, False)])
def test_json_carries_the_decision_and_the_ood_check(monkeypatch, image, melanoma, positive):
    output = json.loads(_label_image(monkeypatch, _fake_model(melanoma, ood_score=1.5), image, "--json").stdout)
    assert output["decisions"] == [{
        "label": "melanoma", "score": pytest.approx(melanoma), "threshold": 0.214, "target": "sensitivity",
        "value": 0.95, "chosen_on": "validation", "validation_sensitivity": 0.967, "validation_specificity": 0.525,
        "positive": positive, "reliable": True, "caveat": None}]
    # a card of one threshold (written before there were two) gets the hard one by the same rule
    assert output["ood"] == {"score": 1.5, "threshold": 2.0, "hard_threshold": 3.5, "level": "none", "flagged": False}
    assert output["no_operating_point"] is None


def test_an_image_not_of_the_kind_the_model_was_made_for_is_warned_of_first_and_its_decision_set_aside(monkeypatch,
                                                                                                      image):
    result = _label_image(monkeypatch, _fake_model(0.412, ood_score=7.5), image)
    (warning,) = result.stderr.splitlines()
    assert warning.startswith("warning: this image is not of the kind the model was made for (out-of-distribution "
                              "score 7.5, above 3.5,")
    assert "the prediction and decisions below are set aside" in warning
    assert result.output.index("warning: this image") < result.output.index("Decision: melanoma")
    (decision,) = [line for line in result.stdout.splitlines() if line.startswith("Decision: melanoma")]
    assert decision.endswith("[set aside: the image is not of the kind the model was made for]")
    output = json.loads(_label_image(monkeypatch, _fake_model(0.412, ood_score=7.5), image, "--json").stdout)
    assert output["ood"] == {"score": 7.5, "threshold": 2.0, "hard_threshold": 3.5, "level": "not_of_kind",
                             "flagged": True}
    assert output["decisions"][0]["reliable"] is False
    assert output["decisions"][0]["caveat"] == "set aside: the image is not of the kind the model was made for"


def test_a_lesion_unlike_the_training_images_gets_a_note_not_a_warning_and_its_decision_stands(monkeypatch, image):
    result = _label_image(monkeypatch, _fake_model(0.412, ood_score=2.5), image)
    (note,) = result.stderr.splitlines()
    assert note.startswith("note: this image is unlike the model's training images (out-of-distribution score "
                           "2.5 > 2)")
    assert "meaningless" not in note and "set aside" not in note
    assert result.output.index("note: this image") < result.output.index("Decision: melanoma")
    (decision,) = [line for line in result.stdout.splitlines() if line.startswith("Decision: melanoma")]
    assert decision.endswith("[less certain: the image is unlike the training images]")
    output = json.loads(_label_image(monkeypatch, _fake_model(0.412, ood_score=2.5), image, "--json").stdout)
    assert output["ood"]["level"] == "unlike_training"
    assert output["decisions"][0]["reliable"] is True


def test_a_card_with_a_hard_threshold_uses_it(monkeypatch, image):
    card = {"format": "retrain", "labels": ["nevus", "melanoma"], "operating_points": [MELANOMA.card()],
            "ood": {**OOD, "hard_threshold": 9.0}}
    output = json.loads(_label_image(monkeypatch, _fake_model(0.412, ood_score=7.5, card=card), image, "--json").stdout)
    assert output["ood"]["level"] == "unlike_training" and output["ood"]["hard_threshold"] == 9.0


def test_tta_averages_the_ood_score_and_says_the_threshold_was_chosen_without_it(monkeypatch, image):
    result = _label_image(monkeypatch, _fake_model(0.412, ood_score=7.5), image, "--tta")
    assert "-> called melanoma" in result.stdout.splitlines()[2]
    assert "out-of-distribution score 7.5, above 3.5" in result.stderr
    assert "note: --tta: the thresholds were chosen on single-view scores" in result.stderr


@pytest.mark.parametrize("card, reason", [
    ({"format": "retrain", "labels": ["nevus", "melanoma"]}, "exported before retrain stored operating points"),
    ({"format": "retrain", "labels": ["nevus", "melanoma"], "operating_points": []}, "trained without --operating_point"),
])
def test_a_model_without_operating_points_says_so_in_one_line_and_prints_as_before(monkeypatch, image, card, reason):
    result = _label_image(monkeypatch, _fake_model(0.412, card=card), image)
    assert result.stdout.splitlines() == ["nevus (score=0.58800)", "melanoma (score=0.41200)"]
    (note,) = result.stderr.splitlines()
    assert note.startswith(f"note: no operating point, so no decision: the model was {reason}")
    assert note.endswith("it has no out-of-distribution check either")
    output = json.loads(_label_image(monkeypatch, _fake_model(0.412, card=card), image, "--json").stdout)
    assert output["decisions"] == [] and output["ood"] is None
    assert reason in output["no_operating_point"]


def test_a_model_with_an_operating_point_but_no_ood_check_says_that_alone(monkeypatch, image):
    card = {"format": "retrain", "labels": ["nevus", "melanoma"], "operating_points": [MELANOMA.card()]}
    result = _label_image(monkeypatch, _fake_model(0.412, card=card), image)
    assert result.stderr.splitlines() == [
        "note: no out-of-distribution check: the model cannot warn that an image is unlike its training images"]


# ---- real models: square_model's graph, with its model card rewritten ---------------------------------


def _with_card(graph, target, change):
    """A copy of a frozen graph whose model card is `change(card)`; None removes the card (a poets graph)."""
    import tensorflow as tf

    from retrain.card.formats import MODEL_CARD_NODE

    graph_def = tf.compat.v1.GraphDef.FromString(graph.read_bytes())
    (node,) = [n for n in graph_def.node if n.name == MODEL_CARD_NODE]
    card = change(json.loads(node.attr["value"].tensor.string_val[0]))
    if card is None:
        graph_def.node.remove(node)
    else:
        node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(json.dumps(card)))
    target.write_bytes(graph_def.SerializeToString())
    return target


def _square(tmp_path, colour: str):
    path = tmp_path / f"{colour}.png"
    square_image(SQUARE_COLOURS[colour], seed=77)[0].save(path)
    return path


def test_an_old_export_loads_and_prints_the_no_operating_point_line(square_model, tmp_path):
    old_keys = ("operating_points", "ood", "calibration", "validation_figures")
    old = _with_card(square_model / "graph.pb", tmp_path / "old.pb",
                     lambda card: {k: v for k, v in card.items() if k not in old_keys})
    result = run_cli(label_image, ["--graph", old, "--image", _square(tmp_path, "red")])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("red (score=")
    assert all("(score=" in line for line in result.stdout.splitlines())
    (note,) = result.stderr.splitlines()
    assert "no operating point" in note and "exported before retrain stored operating points" in note


def test_a_graph_with_a_fixed_threshold_decides_over_and_under_it_heatmap_too(square_model, tmp_path):
    point = OperatingPoint("red", "threshold", 0.5, 0.5, 1.0, 1.0, 2, 4, "a hand-picked tree")
    graph = _with_card(square_model / "graph.pb", tmp_path / "point.pb",
                       lambda card: {**card, "operating_points": [point.card()]})
    red = run_cli(label_image, ["--graph", graph, "--image", _square(tmp_path, "red"), "--json",
                                "--heatmap", tmp_path / "heat.png"])
    assert red.exit_code == 0, red.output
    output = json.loads(red.stdout)
    (decision,) = output["decisions"]
    scores = {p["label"]: p["score"] for p in output["predictions"]}
    assert decision["positive"] and decision["score"] == scores["red"] > 0.5
    assert output["heatmap"]["label"] == "red" and (tmp_path / "heat.png").exists()
    blue = run_cli(label_image, ["--graph", graph, "--image", _square(tmp_path, "blue"), "--tta"])
    assert blue.exit_code == 0, blue.output
    assert "Decision: red " in blue.stdout and "-> not called red, which does not rule it out (threshold 0.5 set by " \
        "hand; on the images of a hand-picked tree it gave sensitivity 100.0%, specificity 100.0%)" in blue.stdout


def test_a_graph_exported_as_before_without_an_ood_output_classifies_and_says_it_has_neither(backbone, tmp_path):
    """The shape retrain exported before operating points: no `ood_score` node, a card without the new keys."""
    from retrain.export.graph import ServingModel, export_frozen_graph, model_card
    from retrain.predict.prediction import load_model
    from retrain.train.top_layer import TopLayer

    rng = np.random.default_rng(0)
    layer = TopLayer(rng.normal(0, 0.01, (backbone.feature_size, 2)).astype(np.float32), np.zeros(2, np.float32))
    export_frozen_graph(ServingModel(backbone, layer, "final_result"), model_card(backbone, ["benign", "malignant"],
                                                                                 "final_result"), tmp_path / "old.pb")
    assert load_model(tmp_path / "old.pb").ood is None
    result = run_cli(label_image, ["--graph", tmp_path / "old.pb", "--image", _square(tmp_path, "red")])
    assert result.exit_code == 0, result.output
    assert [line.split(" (score=")[0] for line in result.stdout.splitlines()] in (["benign", "malignant"],
                                                                                 ["malignant", "benign"])
    (note,) = result.stderr.splitlines()
    assert "exported before retrain stored operating points" in note and "no out-of-distribution check" in note
