"""Evaluating a model on a tree: class folders win over stray images at its root, a folder of
loose images is unlabelled, and the ROC of a two-class model is drawn for its named class."""

from pathlib import Path

import numpy as np

from retrain.evaluate import evaluation, outputs
from retrain.evaluate.evaluation import evaluate_model
from retrain.evaluate.measured import GraphEvaluation
from retrain.metrics import evaluate_probabilities
from tests.conftest import COLOURS, noisy_colour_image
from tests.evaluate.conftest import melanoma_predictions, redness_model


def test_class_folders_win_over_images_at_the_root_which_are_skipped_with_one_warning(make_tree, tmp_path):
    tree = make_tree({"red": 3, "blue": 3})
    noisy_colour_image(COLOURS["red"]).save(tree / "stray.jpg")
    warnings = []
    predictions, metrics = evaluate_model(redness_model(["red", "blue"]), ["red", "blue"], tree,
                                          log=lambda _: None, warn=warnings.append)
    assert metrics is not None and metrics["n"] == 6
    assert sorted(predictions.true.tolist()) == [0, 0, 0, 1, 1, 1]
    assert tree / "stray.jpg" not in predictions.paths
    (line,) = warnings
    assert "1 image(s)" in line and "stray.jpg" in line


def test_a_folder_of_loose_images_alone_is_still_unlabelled(tmp_path):
    for i in range(2):
        noisy_colour_image(COLOURS["red"], seed=i).save(tmp_path / f"{i}.jpg")
    predictions, metrics = evaluate_model(redness_model(["red", "blue"]), ["red", "blue"], tmp_path, warn=print)
    assert metrics is None and predictions.true is None and len(predictions.paths) == 2


def test_the_evaluate_roc_of_a_two_class_model_is_drawn_for_melanoma_not_other(tmp_path, monkeypatch):
    drawn = []
    monkeypatch.setattr(evaluation, "plot_roc", lambda path, curves, title: drawn.append(curves))
    run = melanoma_predictions([tmp_path / f"{i}.jpg" for i in range(4)])
    metrics = evaluate_probabilities(run.probabilities, run.true, run.labels)
    outputs.write_roc(GraphEvaluation(Path("m.pb"), redness_model(run.labels), run, metrics), tmp_path / "roc.png",
                      lambda _: None)
    ((curve,),) = drawn
    assert curve[0] == "melanoma"
    np.testing.assert_array_equal(curve[1], run.probabilities[:, 0])
    np.testing.assert_array_equal(curve[2], run.true == 0)


