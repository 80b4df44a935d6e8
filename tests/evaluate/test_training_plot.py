"""The training plot beside the graph: training curves and the validation ROC."""

import numpy as np

from retrain.evaluate import training_plot
from retrain.evaluate.training_plot import plot_training
from retrain.reporter import Reporter


def test_the_training_roc_of_a_two_class_model_is_drawn_for_melanoma_not_other(tmp_path, monkeypatch):
    drawn = []
    monkeypatch.setattr(training_plot, "draw_roc", lambda axes, curves: drawn.append(curves))
    labels = ["melanoma", "other"]
    probabilities = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.2, 0.8]], np.float32)
    true = np.array([0, 1, 0, 1])
    plot_training(tmp_path / "g.pb", [], probabilities, true, labels, Reporter(log=lambda _: None))
    ((curve,),) = drawn
    assert curve[0] == "melanoma"
    np.testing.assert_array_equal(curve[1], probabilities[:, 0])
    assert (tmp_path / "g.training.png").is_file()
