"""evaluate on a labelled tree with stray images at its root; the ROC pictures of a
two-class model; report galleries that cannot draw an image."""

from pathlib import Path

import numpy as np

from retrain.evaluate import evaluation, outputs, report
from retrain.evaluate.evaluation import Predictions, evaluate_model
from retrain.evaluate.measured import GraphEvaluation
from retrain.metrics import evaluate_probabilities
from retrain.predict.loaded_model import LoadedModel
from tests.conftest import COLOURS, noisy_colour_image


def _redness_model(labels):
    """P(first label) grows with how red the image is."""

    def predict(pixels):
        red = pixels[..., 0].mean(axis=(1, 2)) / 255.0
        return np.stack([red, 1 - red], axis=1).astype(np.float32)

    return LoadedModel(predict, 32, 32, labels, "fake.pb", no_maps_reason="a stand-in model")


def test_class_folders_win_over_images_at_the_root_which_are_skipped_with_one_warning(make_tree, tmp_path):
    tree = make_tree({"red": 3, "blue": 3})
    noisy_colour_image(COLOURS["red"]).save(tree / "stray.jpg")
    warnings = []
    predictions, metrics = evaluate_model(_redness_model(["red", "blue"]), ["red", "blue"], tree,
                                          log=lambda _: None, warn=warnings.append)
    assert metrics is not None and metrics["n"] == 6
    assert sorted(predictions.true.tolist()) == [0, 0, 0, 1, 1, 1]
    assert tree / "stray.jpg" not in predictions.paths
    (line,) = warnings
    assert "1 image(s)" in line and "stray.jpg" in line


def test_a_folder_of_loose_images_alone_is_still_unlabelled(tmp_path):
    for i in range(2):
        noisy_colour_image(COLOURS["red"], seed=i).save(tmp_path / f"{i}.jpg")
    predictions, metrics = evaluate_model(_redness_model(["red", "blue"]), ["red", "blue"], tmp_path, warn=print)
    assert metrics is None and predictions.true is None and len(predictions.paths) == 2


def _melanoma_predictions(paths):
    labels = ["melanoma", "other"]
    probabilities = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.2, 0.8]], np.float32)
    return Predictions(paths, probabilities, np.array([0, 1, 0, 1]), labels, [])


def test_the_evaluate_roc_of_a_two_class_model_is_drawn_for_melanoma_not_other(tmp_path, monkeypatch):
    drawn = []
    monkeypatch.setattr(evaluation, "plot_roc", lambda path, curves, title: drawn.append(curves))
    run = _melanoma_predictions([tmp_path / f"{i}.jpg" for i in range(4)])
    metrics = evaluate_probabilities(run.probabilities, run.true, run.labels)
    outputs.write_roc(GraphEvaluation(Path("m.pb"), _redness_model(run.labels), run, metrics), tmp_path / "roc.png",
                      lambda _: None)
    ((curve,),) = drawn
    assert curve[0] == "melanoma"
    np.testing.assert_array_equal(curve[1], run.probabilities[:, 0])
    np.testing.assert_array_equal(curve[2], run.true == 0)


def test_a_report_gallery_image_that_cannot_be_read_again_is_counted_in_one_warning(tmp_path):
    paths = []
    for i in range(4):
        paths.append(tmp_path / f"{i}.jpg")
        noisy_colour_image(COLOURS["red"], seed=i).save(paths[-1])
    run = _melanoma_predictions(paths)
    metrics = evaluate_probabilities(run.probabilities, run.true, run.labels)
    paths[1].unlink()
    warnings = []
    report.write_report(tmp_path / "report.html", [report.EvaluatedModel(_redness_model(run.labels), run, metrics)],
                        tmp_path, False, warnings.append)
    (line,) = warnings
    assert "1 image(s)" in line and str(paths[1]) in line
    assert "2.jpg" in (tmp_path / "report.html").read_text(encoding="utf-8")
