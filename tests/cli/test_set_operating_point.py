"""set_operating_point: thresholds chosen on a labelled tree, stored in a copy of the model
(.pb, SavedModel), the original untouched; mistakes refused in one line before any image is classified."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from retrain.cli.set_operating_point_command import set_operating_point
from retrain.predict.prediction import load_image_for, load_model
from tests.conftest import SQUARE_COLOURS, run_cli, square_image


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """Four new images per class, none of them a training image of square_model."""
    root = tmp_path_factory.mktemp("tune") / "tune"
    for index, (name, colour) in enumerate(SQUARE_COLOURS.items()):
        (root / name).mkdir(parents=True)
        for i in range(4):
            square_image(colour, seed=5000 + 100 * index + i)[0].save(root / name / f"{name}_{i}.png")
    return root


def _digest(path) -> str:
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return hashlib.sha256(b"".join(p.read_bytes() for p in files)).hexdigest()


def _without_card(model) -> bytes:
    """The model's bytes less its model card (and the card in words beside it)."""
    import tensorflow as tf

    from retrain.card.formats import MODEL_CARD_NODE

    if model.is_dir():
        files = sorted(p for p in model.rglob("*") if p.is_file() and p.parent.name != "assets.extra")
        return b"".join(str(p.relative_to(model)).encode() + p.read_bytes() for p in files)
    graph_def = tf.compat.v1.GraphDef.FromString(model.read_bytes())
    graph_def.node.remove(next(n for n in graph_def.node if n.name == MODEL_CARD_NODE))
    return graph_def.SerializeToString(deterministic=True)  # attribute maps in one order


def _read_card(model) -> dict:
    from retrain.card.formats import model_kind, read_model_card

    return read_model_card(model, model_kind(model)).to_json()


def _error_line(result) -> str:
    assert result.exit_code == 1, result.output
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "Classified" not in result.output  # refused before the slow part
    return line


@pytest.mark.slow
@pytest.mark.parametrize("model", ["graph.pb", "saved_model"])
def test_the_copy_stores_thresholds_that_give_what_was_asked_on_the_tree(square_model, tree, tmp_path, model):
    source = square_model / model
    before = _digest(source)
    output = tmp_path / ("new.pb" if model == "graph.pb" else "new_saved_model")
    result = run_cli(set_operating_point, ["--graph", source, "--image_dir", tree, "--output", output,
                                           "--operating_point", "red:sensitivity=0.75",
                                           "--operating_point", "blue:specificity=0.5"])
    assert result.exit_code == 0, result.output
    assert _digest(source) == before
    copy = load_model(output)
    red, blue = copy.model_card.points
    assert (red.label, red.target, red.value, blue.label, blue.chosen_on) == ("red", "sensitivity", 0.75, "blue", str(tree))
    assert f"Operating point: {red.describe()}" in result.stdout.splitlines()
    labels = copy.labels
    paths = sorted(tree.rglob("*.png"))
    pixels = np.stack([load_image_for(copy, p) for p in paths])
    scores = copy.predict(pixels)
    true = np.array([labels.index(p.parent.name) for p in paths])
    red_scores, blue_scores = scores[:, labels.index("red")], scores[:, labels.index("blue")]
    called_red = red_scores[true == labels.index("red")] >= red.threshold
    assert called_red.mean() >= 0.75 and called_red.mean() == red.sensitivity and red.positives == 4
    cleared_blue = blue_scores[true != labels.index("blue")] < blue.threshold
    assert cleared_blue.mean() >= 0.5 and cleared_blue.mean() == blue.specificity and blue.negatives == 8
    assert _without_card(output) == _without_card(source)  # the same model, weights and all
    assert {**_read_card(output), "operating_points": []} == {**_read_card(source), "operating_points": []}
    markdown = output.with_suffix(".model_card.md") if model == "graph.pb" else output / "assets.extra" / "model_card.md"
    assert red.describe() in markdown.read_text()


def test_an_operating_point_given_twice_is_stored_once_in_the_copy_with_one_note(square_model, tree, tmp_path):
    result = run_cli(set_operating_point, ["--graph", square_model / "graph.pb", "--image_dir", tree,
                                           "--output", tmp_path / "new.pb", "--operating_point", "red:sensitivity=0.75",
                                           "--operating_point", "RED:sensitivity=0.750"])
    assert result.exit_code == 0, result.output
    notes = [line for line in result.stderr.splitlines() if "given" in line]
    assert notes == ["warning: --operating_point red:sensitivity=0.75 is given 2 times; it is stored once"]
    (point,) = load_model(tmp_path / "new.pb").model_card.points
    assert (point.label, point.value) == ("red", 0.75)
    assert sum(line.startswith("Operating point: ") for line in result.stdout.splitlines()) == 1


def test_an_existing_output_is_refused_in_one_line(square_model, tree, tmp_path):
    output = tmp_path / "taken.pb"
    output.write_bytes(b"keep me")
    result = run_cli(set_operating_point, ["--graph", square_model / "graph.pb", "--image_dir", tree,
                                           "--operating_point", "red:sensitivity=0.9", "--output", output])
    assert _error_line(result) == (f"error: --output {output}: already exists; set_operating_point never overwrites a "
                                   "model, so give --output a new name")
    assert output.read_bytes() == b"keep me"


def test_the_input_itself_as_output_is_refused(square_model, tree):
    before = _digest(square_model / "saved_model")
    result = run_cli(set_operating_point, ["--graph", square_model / "saved_model", "--image_dir", tree,
                                           "--operating_point", "red:sensitivity=0.9", "--output", square_model / "saved_model"])
    assert "already exists" in _error_line(result)
    assert _digest(square_model / "saved_model") == before


def test_an_existing_model_card_beside_the_output_is_refused(square_model, tree, tmp_path):
    (tmp_path / "new.model_card.md").write_text("notes")
    result = run_cli(set_operating_point, ["--graph", square_model / "graph.pb", "--image_dir", tree,
                                           "--operating_point", "red:sensitivity=0.9", "--output", tmp_path / "new.pb"])
    assert f"model card {tmp_path / 'new.model_card.md'} already exists" in _error_line(result)
    assert not (tmp_path / "new.pb").exists()


@pytest.mark.parametrize("point, message", [
    ("purple:sensitivity=0.9", "--operating_point: no class 'purple'; the classes are blue, green, red"),
    ("red:sensitivity=1.5", "sensitivity must be above 0 and at most 1"),
    ("sensitivity=0.9", "name the class (one of blue, green, red)"),
])
def test_a_wrong_operating_point_is_refused_before_classifying(square_model, tree, tmp_path, point, message):
    result = run_cli(set_operating_point, ["--graph", square_model / "graph.pb", "--image_dir", tree,
                                           "--operating_point", point, "--output", tmp_path / "new.pb"])
    assert message in _error_line(result)
    assert not (tmp_path / "new.pb").exists()


def test_a_model_not_exported_by_retrain_is_refused(square_model, tree, tmp_path):
    from tests.predict.test_decisions import _with_card

    poets = _with_card(square_model / "graph.pb", tmp_path / "poets.pb", lambda card: None)
    result = run_cli(set_operating_point, ["--graph", poets, "--image_dir", tree,
                                           "--operating_point", "red:sensitivity=0.9", "--output", tmp_path / "new.pb"])
    assert _error_line(result) == (f"error: --graph {poets}: not exported by retrain (no model card node), so it has no "
                                   "model card to store an operating point in; retrain a model to get one")


def test_a_tree_without_images_of_the_class_cannot_choose_its_sensitivity(square_model, tmp_path):
    from tests.conftest import write_colour_tree

    tree = write_colour_tree(tmp_path / "two", {"blue": 2, "green": 2})
    result = run_cli(set_operating_point, ["--graph", square_model / "graph.pb", "--image_dir", tree,
                                           "--operating_point", "red:sensitivity=0.9", "--output", tmp_path / "new.pb"])
    assert result.exit_code == 1
    assert "needs images of red and of other classes" in result.stderr
    assert not (tmp_path / "new.pb").exists()


def test_the_card_written_is_the_json_the_sidecar_format_reads(square_model, tree, tmp_path):
    """The SavedModel copy's card file is plain JSON with the points in it, as retrain writes it."""
    from retrain.card.formats import MODEL_CARD_FILE

    result = run_cli(set_operating_point, ["--graph", square_model / "saved_model", "--image_dir", tree,
                                           "--operating_point", "green:threshold=0.4", "--output", tmp_path / "sm"])
    assert result.exit_code == 0, result.output
    card = json.loads((tmp_path / "sm" / "assets.extra" / MODEL_CARD_FILE).read_text())
    (point,) = card["operating_points"]
    assert (point["label"], point["threshold"], point["chosen_on"]) == ("green", 0.4, str(tree))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".sm.")]  # no half-built folder left behind


def test_an_output_in_another_format_is_refused(square_model, tree, tmp_path):
    result = run_cli(set_operating_point, ["--graph", square_model / "graph.pb", "--image_dir", tree,
                                           "--operating_point", "red:sensitivity=0.9", "--output", tmp_path / "new.tflite"])
    assert _error_line(result) == (f"error: --output {tmp_path / 'new.tflite'}: the copy is a .pb like --graph; give it "
                                   "a name ending in .pb")


def test_an_output_where_nothing_can_be_written_is_refused_before_classifying(square_model, tree):
    output = "/proc/retrain-copy.pb"  # /proc takes no new files, even from root
    result = run_cli(set_operating_point, ["--graph", square_model / "graph.pb", "--image_dir", tree,
                                           "--operating_point", "red:sensitivity=0.9", "--output", output])
    line = _error_line(result)
    assert line.startswith(f"error: --output {output}: cannot write in /proc"), line


@pytest.mark.parametrize("name", ["new.pb", "new.tflite"])
def test_a_model_file_name_for_a_saved_model_copy_is_refused(square_model, tree, tmp_path, name):
    result = run_cli(set_operating_point, ["--graph", square_model / "saved_model", "--image_dir", tree,
                                           "--operating_point", "red:sensitivity=0.9", "--output", tmp_path / name])
    assert _error_line(result) == (f"error: --output {tmp_path / name}: the copy is a SavedModel folder like --graph; "
                                   "give it a folder name, without .pb or .tflite")
    assert not (tmp_path / name).exists()


def _warnings(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("warning:")]


@pytest.mark.parametrize("where", ["the tree", "a folder inside it", "a folder containing it"])
def test_the_model_s_training_tree_is_refused_before_classifying_naming_the_override(square_model, tmp_path, where):
    training = square_model / "images"
    image_dir = {"the tree": training, "a folder inside it": training / "red", "a folder containing it": square_model}[where]
    result = run_cli(set_operating_point, ["--graph", square_model / "graph.pb", "--image_dir", image_dir,
                                           "--operating_point", "red:sensitivity=0.9", "--output", tmp_path / "new.pb"])
    line = _error_line(result)
    assert line.startswith(f"error: --image_dir {image_dir}: ") and str(training) in line
    assert "--allow_training_images" in line
    assert not (tmp_path / "new.pb").exists()


@pytest.mark.slow
def test_allow_training_images_chooses_on_the_training_tree_with_one_warning(square_model, tmp_path):
    training = square_model / "images"
    result = run_cli(set_operating_point, ["--graph", square_model / "graph.pb", "--image_dir", training,
                                           "--operating_point", "red:threshold=0.5", "--output", tmp_path / "new.pb",
                                           "--allow_training_images"])
    assert result.exit_code == 0, result.output
    (line,) = _warnings(result)
    assert line.startswith(f"warning: --image_dir {training}: is the model's training tree") and "overstate" in line
    assert (tmp_path / "new.pb").exists()


def test_copies_of_training_images_in_the_tree_are_one_warning_and_listed(square_model, tree, tmp_path):
    import shutil

    mixed = tmp_path / "mixed"
    shutil.copytree(tree, mixed)
    for name in ("red_0.png", "red_1.png"):
        shutil.copy(square_model / "images" / "red" / name, mixed / "red" / f"copied_{name}")
    result = run_cli(set_operating_point, ["--graph", square_model / "graph.pb", "--image_dir", mixed,
                                           "--operating_point", "red:threshold=0.5", "--output", tmp_path / "new.pb"])
    assert result.exit_code == 0, result.output
    assert _warnings(result) == [
        f"warning: 2 images of --image_dir are copies of the model's training images ({square_model / 'images'}) "
        "(2 exact, 0 near); kept, so the sensitivity and specificity chosen here overstate what new images give; "
        "pairs: see below"]
    assert (f"copy of a training image: {mixed / 'red' / 'copied_red_0.png'} = {square_model / 'images' / 'red' / 'red_0.png'}"
            " (same bytes)") in result.stdout


def test_a_tree_lacking_one_of_the_model_s_classes_is_one_warning_naming_it(square_model, tree, tmp_path):
    import shutil

    partial = tmp_path / "partial"
    for name in ("blue", "green"):
        shutil.copytree(tree / name, partial / name)
    result = run_cli(set_operating_point, ["--graph", square_model / "graph.pb", "--image_dir", partial,
                                           "--operating_point", "blue:threshold=0.5", "--output", tmp_path / "new.pb"])
    assert result.exit_code == 0, result.output
    assert _warnings(result) == [f"warning: --image_dir {partial}: no 'red' folder; the thresholds are chosen without "
                                 "any red image"]
