"""The out-of-distribution score is an output of every exported format, and they agree."""

import json

import numpy as np
import pytest
from PIL import Image, ImageDraw

from retrain.data.images import load_image
from retrain.predict.prediction import load_model


def _unlike_lesions(folder, size: int = 192) -> list:
    """A noise frame, a blank frame and a page of text: nothing like the training images."""
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / "noise.png")
    Image.new("RGB", (size, size), (255, 255, 255)).save(folder / "blank.png")
    text = Image.new("RGB", (size, size), (255, 255, 255))
    for row in range(12):
        ImageDraw.Draw(text).text((4, 4 + 15 * row), "The quick brown fox jumps", fill=(0, 0, 0))
    text.save(folder / "text.png")
    return [folder / name for name in ("noise.png", "blank.png", "text.png")]


@pytest.fixture(scope="module")
def tflite_of_square_model(square_model, tmp_path_factory):
    from retrain.export.tflite import export_tflite

    path = tmp_path_factory.mktemp("tflite") / "model.tflite"
    export_tflite(square_model / "saved_model", path, "none", [])
    return path


def test_an_image_unlike_the_training_images_is_flagged_by_the_pb_the_saved_model_and_the_tflite_alike(
        square_model, tflite_of_square_model, tmp_path):
    images = [*_unlike_lesions(tmp_path), *sorted((square_model / "images" / "red").glob("*.png"))[:2]]
    flags = {}
    for path in (square_model / "graph.pb", square_model / "saved_model", tflite_of_square_model):
        model = load_model(path)
        threshold = model.model_card.ood.threshold
        pixels = np.stack([load_image(image, (model.input_width, model.input_height)) for image in images])
        probabilities, scores = model.ood(pixels.astype(np.float32))
        np.testing.assert_allclose(probabilities, model.predict(pixels.astype(np.float32)), atol=1e-5)
        flags[path.name] = list(scores > threshold)
    assert flags["graph.pb"] == [True, True, True, False, False]
    assert flags["saved_model"] == flags["graph.pb"] == flags["model.tflite"]


def test_the_tflite_sidecar_describes_the_ood_output_and_carries_the_threshold(tflite_of_square_model):
    sidecar = json.loads(tflite_of_square_model.with_name("model.tflite.json").read_text())
    assert sidecar["ood"]["output_name"] == sidecar["ood_tensor"]["name"]  # the .tflite's name, not the SavedModel's
    assert sidecar["ood_tensor"]["shape"] == [1, 1]
    assert sidecar["ood"]["threshold"] > 0


def test_every_tflite_output_is_one_row_as_the_task_library_and_ml_kit_require(tflite_of_square_model):
    from ai_edge_litert.interpreter import Interpreter

    outputs = Interpreter(model_path=str(tflite_of_square_model)).get_output_details()
    assert sorted(list(d["shape"]) for d in outputs) == [[1, 1], [1, 3]]


def test_every_export_has_a_model_card_in_words_beside_it(square_model, tflite_of_square_model):
    pb_card = (square_model / "graph.model_card.md").read_text()
    assert "Decision support, not diagnosis" in pb_card
    assert "| red |" in pb_card and "Out-of-distribution check" in pb_card
    assert (square_model / "saved_model" / "assets.extra" / "model_card.md").exists()
    assert "quantized" not in tflite_of_square_model.with_name("model.tflite.model_card.md").read_text()


@pytest.mark.parametrize("ood_shape", [[1, 1], [1]])  # [1]: a .tflite exported before the Task Library fix
def test_the_out_of_distribution_output_is_told_from_the_probabilities_by_its_shape(ood_shape):
    from retrain.export.tflite_format import classifier_outputs

    probability, ood = {"name": "p", "shape": np.array([1, 2])}, {"name": "s", "shape": np.array(ood_shape)}
    assert classifier_outputs([ood, probability]) == (probability, ood)
    assert classifier_outputs([probability]) == (probability, None)
