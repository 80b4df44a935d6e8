"""set_operating_point --recalibrate: a temperature fitted on the clinic's tree on top of the
model's, in a copy that gives softmax(log p / T) where the original gave p, in every format
(.pb, SavedModel, .tflite in all four modes), with the card keeping both calibrations."""

from __future__ import annotations

import numpy as np
import pytest

from retrain.cli.export_tflite_command import export_tflite
from retrain.cli.set_operating_point_command import set_operating_point
from retrain.decisions.calibration import with_temperature
from retrain.decisions.operating_points import where
from retrain.predict.prediction import load_image_for, load_model
from tests.conftest import SQUARE_COLOURS, run_cli, square_image

# Squares drawn off their training colours, so that the model is unsure and its probabilities move.
CLINIC_SHIFT = 60


@pytest.fixture(scope="module")
def clinic(tmp_path_factory):
    """Another camera: each class's square shifted in colour, four images a class."""
    root = tmp_path_factory.mktemp("clinic") / "clinic"
    for index, (name, colour) in enumerate(SQUARE_COLOURS.items()):
        (root / name).mkdir(parents=True)
        shifted = tuple(int(np.clip(c + CLINIC_SHIFT * (1 if c < 128 else -1), 0, 255)) for c in colour)
        for i in range(4):
            square_image(shifted, seed=7000 + 100 * index + i)[0].save(root / name / f"{name}_{i}.png")
    return root


@pytest.fixture(scope="module")
def tflites(square_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("recalibrate_tflite")
    paths = {}
    for mode in ("none", "dynamic", "float16", "int8"):
        paths[mode] = root / f"{mode}.tflite"
        result = run_cli(export_tflite, ["--saved_model_dir", square_model / "saved_model", "--output", paths[mode],
                                         "--quantization", mode, "--image_dir", square_model / "images",
                                         "--representative_images", 8])
        assert result.exit_code == 0, result.output
    return paths


def _probabilities(model_path, images) -> np.ndarray:
    model = load_model(model_path)
    return model.predict(np.stack([load_image_for(model, p) for p in images]))


def _recalibrate(source, clinic, output):
    result = run_cli(set_operating_point, ["--graph", source, "--image_dir", clinic, "--output", output,
                                           "--operating_point", "red:sensitivity=0.75", "--recalibrate"])
    assert result.exit_code == 0, result.output
    return result


def _check_copy(source, output, clinic, result, tolerance):
    """The copy's probabilities are the original's with the new temperature, the winner unchanged,
    and its card holds the new calibration on top of the training-time one."""
    copy_card, original_card = load_model(output).model_card, load_model(source).model_card
    calibration = copy_card.calibration
    assert calibration.chosen_on == str(clinic) and calibration.count == 12
    assert calibration.recalibrated_from == original_card.calibration
    assert calibration.recalibrated_from.chosen_on != str(clinic)
    assert calibration.total_temperature == pytest.approx(
        calibration.temperature * original_card.calibration.temperature)
    line = calibration.describe()
    assert line in result.stdout.splitlines() and line.startswith(f"Calibration on {clinic} (N=12): ")
    assert f"expected calibration error {calibration.ece_before:.3f} before, {calibration.ece_after:.3f} after" in line
    assert f"on top of temperature {original_card.calibration.temperature:.3g} fitted on " in line
    assert abs(np.log(calibration.temperature)) > 0.05  # a temperature that moves the probabilities
    images = sorted(clinic.rglob("*.png"))
    before, after = _probabilities(source, images), _probabilities(output, images)
    expected = with_temperature(before, calibration.temperature)
    assert np.abs(after - expected).max() < tolerance
    print(f"max |copy - softmax(log p / T)| {np.abs(after - expected).max():.4f}, max |copy - original| "
          f"{np.abs(after - before).max():.4f}, T {calibration.temperature:.3f}")
    assert np.abs(after - before).max() > 3 * tolerance
    assert (after.argmax(axis=1) == before.argmax(axis=1)).all()
    (point,) = copy_card.points  # chosen on the recalibrated probabilities: what the copy gives
    red = expected[[p.parent.name == "red" for p in images], list(copy_card.labels).index("red")]
    assert (red >= point.threshold).mean() == point.sensitivity


@pytest.mark.slow
@pytest.mark.parametrize("model", ["graph.pb", "saved_model"])
def test_the_copy_gives_the_recalibrated_probabilities_and_keeps_both_calibrations(square_model, clinic, tmp_path,
                                                                                   model):
    output = tmp_path / ("new.pb" if model == "graph.pb" else "new_saved_model")
    result = _recalibrate(square_model / model, clinic, output)
    _check_copy(square_model / model, output, clinic, result, 1e-5)
    markdown = output.with_suffix(".model_card.md") if model == "graph.pb" else output / "assets.extra" / "model_card.md"
    earlier = load_model(square_model / model).model_card.calibration
    assert (f"- the temperature: on {where(str(clinic))} (12 images), on top of temperature "
            f"{earlier.temperature:.3g} fitted on {where(earlier.chosen_on)}") in markdown.read_text()


@pytest.mark.slow
def test_a_saved_model_copy_keeps_every_signature_and_converts_to_a_recalibrated_tflite(square_model, clinic, tmp_path):
    import tensorflow as tf

    _recalibrate(square_model / "saved_model", clinic, tmp_path / "sm")
    original = tf.saved_model.load(str(square_model / "saved_model")).signatures
    assert sorted(tf.saved_model.load(str(tmp_path / "sm")).signatures) == sorted(original)
    result = run_cli(export_tflite, ["--saved_model_dir", tmp_path / "sm", "--output", tmp_path / "sm.tflite"])
    assert result.exit_code == 0, result.output
    images = sorted(clinic.rglob("*.png"))
    assert np.abs(_probabilities(tmp_path / "sm.tflite", images) - _probabilities(tmp_path / "sm", images)).max() < 1e-5
    assert load_model(tmp_path / "sm.tflite").model_card.calibration.recalibrated_from is not None


@pytest.mark.slow
@pytest.mark.parametrize("mode, tolerance", [("none", 1e-5), ("dynamic", 1e-5), ("float16", 1e-5), ("int8", 0.01)])
def test_a_tflite_copy_gives_the_recalibrated_probabilities_in_every_mode(tflites, clinic, tmp_path, mode, tolerance):
    from retrain.card.formats import read_embedded_card

    output = tmp_path / "new.tflite"
    result = _recalibrate(tflites[mode], clinic, output)
    _check_copy(tflites[mode], output, clinic, result, tolerance)
    assert read_embedded_card(output).calibration == load_model(output).model_card.calibration  # an app sees it too


@pytest.mark.slow
def test_recalibrating_twice_multiplies_the_temperatures(square_model, clinic, tmp_path):
    images = sorted(clinic.rglob("*.png"))
    _recalibrate(square_model / "graph.pb", clinic, tmp_path / "once.pb")
    _recalibrate(tmp_path / "once.pb", clinic, tmp_path / "twice.pb")
    once, twice = (load_model(tmp_path / name).model_card.calibration for name in ("once.pb", "twice.pb"))
    # About 1: the same images; not exactly, as fit_temperature's prior pulls each fit's log T towards 0.
    assert twice.recalibrated_from == once and twice.temperature == pytest.approx(1, abs=0.1)
    expected = with_temperature(_probabilities(tmp_path / "once.pb", images), twice.temperature)
    assert np.abs(_probabilities(tmp_path / "twice.pb", images) - expected).max() < 1e-5


def test_a_tree_of_one_class_is_refused_before_classifying(square_model, clinic, tmp_path):
    import shutil

    single = tmp_path / "single"
    shutil.copytree(clinic / "red", single / "red")
    result = run_cli(set_operating_point, ["--graph", square_model / "graph.pb", "--image_dir", single,
                                           "--output", tmp_path / "new.pb", "--operating_point", "red:threshold=0.5",
                                           "--recalibrate"])
    assert result.exit_code == 1
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert line == (f"error: --image_dir {single}: images of only 'red'; --recalibrate needs images of at least two "
                    "of the model's classes (blue, green, red) to fit a temperature")
    assert "Classified" not in result.output and not (tmp_path / "new.pb").exists()


@pytest.mark.slow
def test_a_small_tree_is_one_warning_and_the_copy_is_written(square_model, clinic, tmp_path):
    result = _recalibrate(square_model / "graph.pb", clinic, tmp_path / "new.pb")
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: --image_dir")]
    assert warnings == [f"warning: --image_dir {clinic}: only 12 images to fit the temperature on; it may be far "
                        "from what new images need (give at least 50)"]


def test_the_earlier_calibration_is_a_card_key_of_its_own_that_older_readers_pass_by():
    from retrain.card.model_card import ModelCard
    from retrain.decisions.calibration import Calibration
    from tests.conftest import as_card

    earlier = Calibration(1.5, 0.1, 0.05, 0.6, 0.5, 40, "validation", 0.04)
    assert "recalibrated_from" not in earlier.card() and "recalibrated_from" not in as_card(
        {"labels": ["a", "b"], "calibration": earlier.card()}).to_json()
    recalibrated = Calibration(1.5, 0.2, 0.1, 0.7, 0.6, 60, "/clinic", 0.03, earlier)
    written = as_card({"labels": ["a", "b"]}).replace(calibration=recalibrated).to_json()
    assert "recalibrated_from" not in written["calibration"]  # what a retrain before recalibration reads as it did
    assert Calibration(**written["calibration"]).temperature == 1.5
    again = ModelCard.from_json(written, "test").calibration
    assert again == recalibrated and again.total_temperature == pytest.approx(2.25)
