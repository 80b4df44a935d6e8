"""What retrain logs and its model card say about operating points, calibration and the
held-out figures: each figure labelled by what it is, and each choice by the images it was made on."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from retrain.cli import retrain
from retrain.predict.prediction import load_model
from tests.conftest import COLOURS, noisy_colour_image, run_cli

NEXT = {"red": "green", "green": "blue", "blue": "red"}


def _mixed_tree(root: Path) -> Path:
    """Three colour classes, each with a quarter of the next class's colour: figures below 1.0."""
    for name in COLOURS:
        (root / name).mkdir(parents=True)
        for i in range(24):
            colour = COLOURS[NEXT[name]] if i % 4 == 0 else COLOURS[name]
            noisy_colour_image(colour, seed=700 + 31 * i + len(name)).save(root / name / f"{name}_{i}.jpg")
    return root


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One retrain from a relative --image_dir, with the same operating point given twice and a
    --validation_batch_size larger than the validation set."""
    root = tmp_path_factory.mktemp("ops")
    _mixed_tree(root / "images")
    old = os.getcwd()
    os.chdir(root)
    try:
        result = run_cli(retrain, [
            "--image_dir", "images", "--validation_percentage", 25, "--testing_percentage", 25,
            "--how_many_training_steps", 20, "--validation_batch_size", 100, "--random_seed", 0,
            "--operating_point", "red:sensitivity=0.9", "--operating_point", "red:sensitivity=0.9",
            "--output_graph", root / "g.pb", "--output_labels", root / "l.txt", "--bottleneck_dir", root / "bn"])
    finally:
        os.chdir(old)
    assert result.exit_code == 0, result.output
    return root, result, load_model(root / "g.pb").model_card.to_json()  # as stored


def test_an_operating_point_given_twice_is_stored_once_with_one_note(run):
    root, result, card = run
    notes = [line for line in result.output.splitlines() if "given 2 times" in line]
    assert notes == ["warning: --operating_point red:sensitivity=0.9 is given 2 times; it is stored once"]
    assert len(card["operating_points"]) == 1
    assert sum(line.startswith("Operating point: ") for line in result.stdout.splitlines()) == 1


def test_both_calibration_error_lines_read_before_then_after(run):
    _, result, _ = run
    (validation,) = [line for line in result.stdout.splitlines() if line.startswith("Calibration on ")]
    (test,) = [line for line in result.stdout.splitlines() if line.startswith("Final test expected calibration")]
    assert re.search(r"expected calibration error \d\.\d{3} before, \d\.\d{3} after", validation)
    assert re.match(r"Final test expected calibration error \d\.\d{3} before, \d\.\d{3} after calibration \(", test)


def test_the_logged_validation_auc_is_labelled_and_matches_the_model_card(run):
    _, result, card = run
    lines = result.stdout.splitlines()
    before, after = [line for line in lines if line.startswith("Validation AUC (one-vs-rest) = ")]
    assert before.endswith(", before calibration)")
    assert after.endswith(", after calibration: the figures of the model card and evaluate)")
    logged = dict(re.findall(r"(\w+) (\d\.\d{3})", after.split("=", 1)[1].split(";")[0]))
    assert logged == {label: f"{figure['auc']:.3f}" for label, figure in card["validation_figures"]["auc"].items()}


def test_validation_accuracy_counts_the_distinct_validation_images(run):
    _, result, _ = run
    (validation,) = re.findall(r"Split: \d+ training, (\d+) validation", result.stdout)
    counts = re.findall(r"Validation accuracy = [\d.]+% \(N=(\d+)\)", result.stdout)
    assert counts and set(counts) == {validation}
    assert int(validation) < 100


def test_the_model_card_says_on_which_images_each_choice_was_made(run):
    root, _, card = run
    words = (root / "g.model_card.md").read_text()
    assert "also chose the kept step or epoch" not in words
    assert "- the top layer's step: the last, step 19 (no early stopping)" in words
    assert ("- the temperature: on out-of-fold predictions on the training images "
            f"({card['calibration']['count']} images)") in words
    assert "- the threshold for red (for sensitivity 0.9): on out-of-fold predictions on the training images" in words
    assert "Nothing that shapes these figures was chosen on these images." in words


def test_the_model_card_has_the_test_split_figures_retrain_printed(run):
    root, result, card = run
    (accuracy, count) = re.findall(r"Final test accuracy = ([\d.]+)% \(N=(\d+)\)", result.stdout)[0]
    figures = card["test_figures"]
    assert figures["count"] == int(count) and f"{100 * figures['accuracy']['value']:.1f}" == accuracy
    (mean,) = re.findall(r"Final test AUC \(one-vs-rest\) = .*; mean (\d\.\d{3})", result.stdout)
    aucs = [figure["auc"] for figure in figures["auc"].values()]
    assert f"{sum(aucs) / len(aucs):.3f}" == mean
    (ece,) = re.findall(r"Final test expected calibration error \d\.\d{3} before, (\d\.\d{3}) after", result.stdout)
    assert f"{figures['ece']:.3f}" == ece
    words = (root / "g.model_card.md").read_text()
    assert "## Test-split figures" in words and f"- accuracy {accuracy}%" in words.split("## Test-split figures")[1]


def test_the_model_card_stores_the_training_folders_as_absolute_paths(run):
    root, _, card = run
    assert card["training_data"]["image_dir"] == str((root / "images").resolve())
    assert json.loads(json.dumps(card))["training_data"]["validation_dir"] is None


def test_two_classes_without_other_need_the_class_named_before_any_work(make_tree, tmp_path):
    tree = make_tree({"red": 3, "blue": 3})
    result = run_cli(retrain, ["--image_dir", tree, "--operating_point", "sensitivity=0.9",
                               "--output_graph", tmp_path / "g.pb", "--bottleneck_dir", tmp_path / "bn"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == (
        "error: --operating_point sensitivity=0.9: name the class (blue or red), e.g. red:sensitivity=0.9; "
        "neither class is called 'other', so which one is positive is not obvious")
    assert not (tmp_path / "bn").exists()
