"""Stand-ins for evaluate's tests: a model whose scores follow an image's redness, and the
predictions of a two-class melanoma model."""

import numpy as np

from retrain.evaluate.evaluation import Predictions
from retrain.predict.loaded_model import LoadedModel


def redness_model(labels):
    """P(first label) grows with how red the image is."""

    def predict(pixels):
        red = pixels[..., 0].mean(axis=(1, 2)) / 255.0
        return np.stack([red, 1 - red], axis=1).astype(np.float32)

    return LoadedModel(predict, 32, 32, labels, "fake.pb", no_maps_reason="a stand-in model")


def melanoma_predictions(paths):
    labels = ["melanoma", "other"]
    probabilities = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.2, 0.8]], np.float32)
    return Predictions(paths, probabilities, np.array([0, 1, 0, 1]), labels, [])
