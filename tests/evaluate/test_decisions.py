"""evaluate, from scores to decisions: the stored operating points, the out-of-distribution
flags, calibration and subgroups, measured on a tree whose every score is known by hand.

The stand-in model scores each image by its colour: P(melanoma) is the red level / 255 and
the out-of-distribution score the green level / 25.5, so solid-colour PNGs give exact scores."""

from __future__ import annotations

import csv
import json
import re

import numpy as np
import pytest
from PIL import Image

from retrain.cli import evaluate as evaluate_command
from retrain.patient.subgroups import TOO_FEW, age_band, grouping
from retrain.metrics import Rate, auc_interval
from retrain.predict import prediction
from retrain.predict.loaded_model import LoadedModel
from tests.conftest import as_card, run_cli

LABELS = ["melanoma", "other"]
# Red levels: P(melanoma) = red / 255. At 0.5, 4 of 5 melanomas are called (sensitivity 4/5) and
# 5 of 6 others are not (specificity 5/6).
REDS = {"melanoma": [250, 230, 200, 150, 90], "other": [220, 120, 100, 60, 30, 20]}
FLAGGED = {("melanoma", 1), ("other", 4), ("other", 5)}  # green 200: ood score 7.8 > 5; the rest 0.4
POINT = {"label": "melanoma", "target": "sensitivity", "value": 0.95, "threshold": 0.5, "sensitivity": 0.95,
         "specificity": 0.6, "positives": 30, "negatives": 120, "chosen_on": "validation"}
CALIBRATION = {"temperature": 1.3, "ece_before": 0.1, "ece_after": 0.03, "nll_before": 0.5, "nll_after": 0.4,
               "count": 150, "chosen_on": "validation"}
OOD = {"method": "mahalanobis", "threshold": 5.0, "flagged_share": 0.05, "chosen_on": "validation", "count": 150,
       "output_name": "ood_score"}
NEW_CARD = {"labels": LABELS, "architecture": "stand-in", "input_size": 32, "operating_points": [POINT],
            "calibration": CALIBRATION, "ood": OOD}


def _probabilities(pixels):
    red = pixels[..., 0].mean(axis=(1, 2)) / 255.0
    return np.stack([red, 1 - red], axis=1).astype(np.float32)


def _stand_in(card, ood=True):
    """A model with `card`; with an ood output it must be used instead of predict (one pass)."""

    def predict(pixels):
        if ood:
            raise AssertionError("predict called although the model has an ood output")
        return _probabilities(pixels)

    def both(pixels):
        return _probabilities(pixels), pixels[..., 1].mean(axis=(1, 2)) / 25.5

    return LoadedModel(predict, 32, 32, LABELS, "stand_in.tflite", model_card=as_card(card), ood=both if ood else None,
                       no_maps_reason="a stand-in model")


@pytest.fixture
def tree(tmp_path):
    for label, reds in REDS.items():
        (tmp_path / "images" / label).mkdir(parents=True)
        for i, red in enumerate(reds):
            green = 200 if (label, i) in FLAGGED else 10
            Image.new("RGB", (8, 8), (red, green, 0)).save(tmp_path / "images" / label / f"{label[:3]}_{i}.png")
    return tmp_path / "images"


def _evaluate(monkeypatch, tmp_path, model, *extra):
    """evaluate --json out.json on the stand-in (the .tflite name spares importing TensorFlow)."""
    monkeypatch.setattr(prediction, "load_model", lambda graph, *args: model)
    graph = tmp_path / "stand_in.tflite"
    graph.touch()
    result = run_cli(evaluate_command, ["--graph", graph, "--json", tmp_path / "out.json", *extra])
    assert result.exit_code == 0, result.output
    return result, json.loads((tmp_path / "out.json").read_text())


def _warnings(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith(("warning:", "error:"))]


def test_a_stored_operating_point_is_measured_as_counted_by_hand(monkeypatch, tmp_path, tree):
    result, figures = _evaluate(monkeypatch, tmp_path, _stand_in(NEW_CARD), "--image_dir", tree)
    sensitivity, specificity = Rate.of(4, 5), Rate.of(5, 6)
    (point,) = figures["operating_points"]
    assert point == {"label": "melanoma", "target": "sensitivity", "value": 0.95, "threshold": 0.5,
                     "chosen_on": "validation", "sensitivity": sensitivity.as_dict(),
                     "specificity": specificity.as_dict()}
    low, high = point["sensitivity"]["interval"]
    assert 0 < low < 0.8 < high < 1
    assert ("Operating point melanoma >= 0.5 (chosen for sensitivity 0.95 on validation): sensitivity 80.0% "
            "(4/5, 95% CI 38-96%), specificity 83.3% (5/6, 95% CI 44-97%)") in result.stdout.splitlines()
    assert _warnings(result) == []


def test_the_ood_output_flags_the_images_scored_above_the_threshold(monkeypatch, tmp_path, tree):
    result, figures = _evaluate(monkeypatch, tmp_path, _stand_in(NEW_CARD), "--image_dir", tree,
                                "--predictions", tmp_path / "p.csv")
    flagged = {str(tree / label / f"{label[:3]}_{i}.png") for label, i in FLAGGED}
    assert figures["ood"]["threshold"] == 5.0
    assert figures["ood"]["flagged"] == Rate.of(3, 11).as_dict()
    assert set(figures["ood"]["flagged_images"]) == flagged
    assert ("Out-of-distribution: 27.3% (3/11, 95% CI 10-57%) of the images flagged as unlike the training images "
            "(ood score > 5; the threshold flagged 5.0% of validation images)") in result.stdout
    rows = list(csv.DictReader((tmp_path / "p.csv").read_text().splitlines()))
    assert {r["image"] for r in rows if r["ood_flagged"] == "1"} == flagged
    assert {r["ood_flagged"] for r in rows} == {"0", "1"} and float(rows[1]["ood_score"]) == pytest.approx(200 / 25.5)
    # 7.8 is under the hard threshold (1.75 x 5): unlike the training images, not "not of the kind"
    assert figures["ood"]["hard_threshold"] == 8.75 and figures["ood"]["not_of_kind"] == Rate.of(0, 11).as_dict()
    assert {r["ood_level"] for r in rows if r["ood_flagged"] == "1"} == {"unlike_training"}
    assert "; 0.0% (0/11, 95% CI 0-26%) as not of the kind the model was made for (> 8.75)" in result.stdout


def test_calibration_is_measured_and_the_stored_temperature_reported(monkeypatch, tmp_path, tree):
    from retrain.metrics import expected_calibration_error

    result, figures = _evaluate(monkeypatch, tmp_path, _stand_in(NEW_CARD), "--image_dir", tree)
    probabilities = np.array([[r / 255, 1 - r / 255] for label in LABELS for r in REDS[label]])
    true = np.array([index for index, label in enumerate(LABELS) for _ in REDS[label]])
    assert figures["calibration"]["temperature"] == 1.3
    assert figures["calibration"]["ece"] == pytest.approx(expected_calibration_error(probabilities, true), abs=1e-6)
    assert "Calibration: expected calibration error" in result.stdout and "temperature 1.3" in result.stdout


@pytest.mark.parametrize("card, reason", [
    ({"labels": LABELS, "architecture": "stand-in"}, "exported before retrain chose one"),
    (None, "no retrain model card"),
])
def test_an_old_model_evaluates_with_one_line_about_the_operating_point(monkeypatch, tmp_path, tree, card, reason):
    result, figures = _evaluate(monkeypatch, tmp_path, _stand_in(card, ood=False), "--image_dir", tree,
                                "--report", tmp_path / "report.html")
    graph = tmp_path / "stand_in.tflite"
    notes = [line for line in result.stdout.splitlines() if "operating point" in line.lower()]
    assert notes == [f"{graph}: no operating point stored ({reason}); scores only"]
    assert _warnings(result) == []
    assert figures["operating_points"] == [] and figures["ood"] is None and figures["subgroups"] is None
    assert figures["calibration"]["temperature"] is None and figures["accuracy"] == pytest.approx(9 / 11)
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert ("No model card" in page) == (card is None)


def test_the_report_shows_the_card_the_points_and_the_flagged_files(monkeypatch, tmp_path, tree):
    _evaluate(monkeypatch, tmp_path, _stand_in(NEW_CARD), "--image_dir", tree, "--report", tmp_path / "report.html")
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    for text in ("Model card", "Intended use", "Known limits", "Operating points", "Reliability diagram",
                 "80.0% (4/5, 95% CI 38-96%)", "83.3% (5/6, 95% CI 44-97%)", "Out-of-distribution",
                 "27.3% (3/11, 95% CI 10-57%)", "oth_5.png"):
        assert text in page, text
    assert page.index("Model card") < page.index("ROC curves") < page.index("80.0% (4/5")
    text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]*", "", page)  # base64 can spell anything
    assert "http" not in text.lower() and "<script" not in text


def _metadata(tmp_path, rows):
    path = tmp_path / "meta.csv"
    path.write_text("image_id,age_approximate,sex,bmi\n" + "".join(f"{r}\n" for r in rows))
    return path


def test_subgroups_for_a_model_without_metadata_input_mark_the_groups_with_too_few(monkeypatch, tmp_path, tree):
    # Female: all 5 melanomas and 5 of the others (red 220, 120, 100, 60, 30); male: the last other (red 20).
    rows = [f"mel_{i},{age},female,{20 + i}" for i, age in enumerate([15, 25, 45, 65, 85])]
    rows += [f"oth_{i},unknown,female,{30 + i}" for i in range(5)]
    result, figures = _evaluate(monkeypatch, tmp_path, _stand_in(NEW_CARD), "--image_dir", tree,
                                "--metadata", _metadata(tmp_path, rows + ["oth_5,50,male,22"]))
    assert "takes no patient metadata; its rows serve the subgroups only" in result.stdout
    assert _warnings(result) == []
    subgroups = figures["subgroups"]
    columns = {c["column"]: c for c in subgroups["columns"]}
    assert list(columns) == ["age_approximate", "sex"] and columns["sex"]["kind"] == "category"
    assert subgroups["skipped"] == ["column 'bmi': numeric and not an age"]
    female, male = columns["sex"]["groups"]
    assert (female["group"], female["count"], male["group"], male["count"]) == ("female", 10, "male", 1)
    auc = female["auc"]["melanoma"]  # 20 of 25 pairs ranked right: 220 outscores 200 and 150; 120 and 100 outscore 90
    assert auc["value"] == pytest.approx(20 / 25) and auc["too_few"] is False
    scores = np.array([250, 230, 200, 150, 90, 220, 120, 100, 60, 30]) / 255
    assert auc["interval"] == pytest.approx(list(auc_interval(scores, np.arange(10) < 5)))
    (point,) = female["operating_points"]
    assert point["sensitivity"]["successes"] == 4 and point["specificity"] == {**Rate.of(4, 5).as_dict(),
                                                                                "too_few": False}
    assert male["auc"]["melanoma"]["too_few"] is True and male["operating_points"][0]["sensitivity"]["too_few"]
    bands = [g["group"] for g in columns["age_approximate"]["groups"]]
    assert bands == ["under 20", "20-39", "40-59", "60-79", "80+", "unknown"]
    lines = result.stdout.splitlines()
    aucs = lines.index("Subgroups by sex (category): AUC, one class against the rest")
    rates = lines.index("Subgroups by sex (category): operating point melanoma >= 0.5")
    assert lines[aucs + 1].split() == ["group", "N", "melanoma"]
    assert lines[rates + 1].split() == ["group", "N", "sensitivity", "specificity"]
    female, male = lines[aucs + 2] + lines[rates + 2], lines[aucs + 3] + lines[rates + 3]
    assert female.split()[:2] == ["female", "10"] and TOO_FEW not in female and "0.800 (" in female
    assert male.split()[:2] == ["male", "1"] and male.count(TOO_FEW) == 3  # AUC, sensitivity (no melanoma), specificity


def _age_bands(figures) -> dict[str, int]:
    (ages,) = [c for c in figures["subgroups"]["columns"] if c["column"] == "age_approximate"]
    assert ages["kind"] == "age band"
    return {g["group"]: g["count"] for g in ages["groups"]}


def test_evaluate_treats_ages_outside_0_to_120_as_missing_with_one_warning(monkeypatch, tmp_path, tree):
    ages = [15, 25, 200, 65, 85, -5, 50, 50, 50, 50, 50]
    ids = [f"mel_{i}" for i in range(5)] + [f"oth_{i}" for i in range(6)]
    metadata = _metadata(tmp_path, [f"{i},{age},female,20" for i, age in zip(ids, ages)])
    result, figures = _evaluate(monkeypatch, tmp_path, _stand_in(NEW_CARD), "--image_dir", tree, "--metadata", metadata)
    assert _warnings(result) == [f"warning: {metadata}: column 'age_approximate' has 2 age(s) outside 0..120 "
                                 "(e.g. 200, -5); treated as missing"]
    assert _age_bands(figures) == {"under 20": 1, "20-39": 1, "40-59": 5, "60-79": 1, "80+": 1, "unknown": 2}


def test_evaluate_counts_a_word_for_an_age_as_missing_with_one_warning(monkeypatch, tmp_path, tree):
    ages = ["15", "25", "fifty", "65", "85", "adult", "50", "50", "50", "50", "50"]
    ids = [f"mel_{i}" for i in range(5)] + [f"oth_{i}" for i in range(6)]
    metadata = _metadata(tmp_path, [f"{i},{age},female,20" for i, age in zip(ids, ages)])
    result, figures = _evaluate(monkeypatch, tmp_path, _stand_in(NEW_CARD), "--image_dir", tree, "--metadata", metadata)
    assert _warnings(result) == [f"warning: {metadata}: column 'age_approximate' has 2 value(s) that are not numbers "
                                 "of years (e.g. fifty, adult); treated as missing"]
    assert _age_bands(figures) == {"under 20": 1, "20-39": 1, "40-59": 5, "60-79": 1, "80+": 1, "unknown": 2}


def test_evaluate_counts_the_metadata_rows_that_match_no_image(monkeypatch, tmp_path, tree):
    rows = [f"mel_{i},50,female,20" for i in range(5)] + ["nobody,40,male,20", "no_one,30,male,20"]
    result, _ = _evaluate(monkeypatch, tmp_path, _stand_in(NEW_CARD), "--image_dir", tree,
                          "--metadata", _metadata(tmp_path, rows))
    assert ("Metadata: 5 of 11 images have a row in " f"{tmp_path / 'meta.csv'}; 6 without one count as all missing; "
            "2 rows match no image and are ignored") in result.stdout


def test_evaluate_puts_the_copies_of_training_dir_images_in_the_json_and_the_report(monkeypatch, tmp_path, tree):
    import shutil

    training = tmp_path / "training"
    (training / "other").mkdir(parents=True)
    shutil.copy(tree / "other" / "oth_5.png", training / "other" / "seen.png")
    Image.new("RGB", (8, 8), (1, 2, 3)).save(training / "other" / "unlike.png")
    result, figures = _evaluate(monkeypatch, tmp_path, _stand_in(NEW_CARD), "--image_dir", tree,
                                "--training_dir", training, "--report", tmp_path / "report.html")
    assert figures["training_copies"] == {
        "training_dir": str(training), "same_folder": False, "count": 1,
        "copies": [{"image": str(tree / "other" / "oth_5.png"), "training_image": str(training / "other" / "seen.png"),
                    "kind": "exact", "distance": 0}]}
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "Copies of training images" in page
    assert str(tree / "other" / "oth_5.png") in page and str(training / "other" / "seen.png") in page


def test_age_bands_and_columns_that_give_no_groups():
    assert [age_band(v) for v in ["0", "19.5", "20", "39", "40", "79.9", "80", "105", "x", None]] == [
        "under 20", "under 20", "20-39", "20-39", "40-59", "60-79", "80+", "80+", "unknown", "unknown"]
    rows = [{"sex": "Female", "site": f"s{i}", "age": "unknown"} for i in range(13)] + [None]
    sex = grouping("sex", rows)
    assert [name for name, _ in sex.groups] == ["female", "unknown"] and sex.groups[1][1].sum() == 1
    assert grouping("site", rows) == "column 'site': 13 values, more than 12"
    assert grouping("age", rows) == "column 'age': no values"


@pytest.fixture(scope="module")
def exported(backbone, tmp_path_factory):
    """A real frozen graph with an ood output, and a card with an operating point, a temperature
    and an ood threshold; the scores it should give, computed from the features in NumPy."""
    import tensorflow as tf

    from retrain.data.images import load_image
    from retrain.export.graph import ServingModel, export_frozen_graph, model_card
    from retrain.decisions.ood import fit_ood
    from retrain.train.top_layer import TrainingConfig, train_top_layer
    from tests.conftest import write_colour_tree

    root = tmp_path_factory.mktemp("exported")
    tree = write_colour_tree(root / "images", {"blue": 5, "red": 5})
    paths, labels = sorted(tree.rglob("*.jpg")), ["blue", "red"]
    true = np.array([labels.index(p.parent.name) for p in paths])
    pixels = np.stack([load_image(p, backbone.input_size) for p in paths]).astype(np.float32)
    features = backbone.module.features(tf.constant(pixels)).numpy()
    layer = train_top_layer(features[::2], true[::2], features[:0], true[:0], 2,
                            TrainingConfig(steps=5, learning_rate=0.01, random_seed=0))
    detector = fit_ood(features[::2], true[::2], 2)
    card = {**model_card(backbone, labels, "final_result").to_json(),
            "operating_points": [{**POINT, "label": "red", "threshold": _between(layer.probabilities(features)[:, 1])}],
            "calibration": CALIBRATION, "ood": {**OOD, "threshold": _between(detector.scores(features))}}
    export_frozen_graph(ServingModel(backbone, layer, "final_result", detector), as_card(card), root / "graph.pb")
    return root, paths, true, layer.probabilities(features)[:, 1], detector.scores(features), card


def _between(scores: np.ndarray) -> float:
    """A threshold in the widest gap between the middle scores, so float rounding cannot move an image across it."""
    ranked = np.sort(scores)[len(scores) // 4: -len(scores) // 4]
    gap = int(np.argmax(np.diff(ranked)))
    return float((ranked[gap] + ranked[gap + 1]) / 2)


def test_an_exported_model_is_measured_at_its_stored_threshold_and_flags_by_its_ood_output(exported, tmp_path):
    root, paths, true, red, ood_scores, card = exported
    result = run_cli(evaluate_command, ["--graph", root / "graph.pb", "--image_dir", root / "images",
                                        "--json", tmp_path / "out.json"])
    assert result.exit_code == 0, result.output
    figures = json.loads((tmp_path / "out.json").read_text())
    threshold, called = card["operating_points"][0]["threshold"], red >= card["operating_points"][0]["threshold"]
    (point,) = figures["operating_points"]
    assert point["threshold"] == threshold
    assert point["sensitivity"] == Rate.of(int((called & (true == 1)).sum()), 5).as_dict()
    assert point["specificity"] == Rate.of(int((~called & (true == 0)).sum()), 5).as_dict()
    flagged = ood_scores > card["ood"]["threshold"]
    assert figures["ood"]["flagged"] == Rate.of(int(flagged.sum()), 10).as_dict() and 0 < flagged.sum() < 10
    assert figures["ood"]["flagged_images"] == [str(paths[i]) for i in np.argsort(-ood_scores) if flagged[i]]
