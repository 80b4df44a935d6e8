"""Every file a command writes is named in its "Wrote" lines, so none is left behind unseen."""

from __future__ import annotations

import json

import pytest

from retrain.cli import retrain, set_operating_point
from retrain.card.markdown import model_card_markdown_path
from retrain.card.formats import read_embedded_card, sidecar_path
from tests.conftest import run_cli, write_colour_tree


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """One tiny retrain with a .tflite: its output, and its folder."""
    root = tmp_path_factory.mktemp("written")
    images = write_colour_tree(root / "images", {"red": 6, "blue": 6})
    result = run_cli(retrain, ["--image_dir", images, "--bottleneck_dir", root / "bn", "--how_many_training_steps", 5,
                               "--output_graph", root / "g.pb", "--output_labels", root / "labels.txt",
                               "--tflite_output", root / "m.tflite", "--random_seed", 1])
    assert result.exit_code == 0, result.output
    return result, root


def test_retrain_names_the_tflite_model_card_it_writes(exported):
    result, root = exported
    (line,) = [line for line in result.stdout.splitlines() if line.startswith(f"Wrote {root / 'm.tflite'} ")]
    assert str(sidecar_path(root / "m.tflite")) in line
    assert str(model_card_markdown_path(root / "m.tflite")) in line
    assert model_card_markdown_path(root / "m.tflite").exists()


def test_set_operating_point_names_the_sidecar_of_a_tflite_copy(exported, tmp_path):
    _, root = exported
    tree = write_colour_tree(tmp_path / "tune", {"red": 2, "blue": 2})
    copy = tmp_path / "copy.tflite"
    result = run_cli(set_operating_point, ["--graph", root / "m.tflite", "--image_dir", tree,
                                           "--operating_point", "red:threshold=0.5", "--output", copy])
    assert result.exit_code == 0, result.output
    named = " ".join(line for line in result.stdout.splitlines() if line.startswith("Wrote "))
    for path in (copy, sidecar_path(copy), model_card_markdown_path(copy)):
        assert path.exists() and str(path) in named, (path, result.stdout)
    # the card inside the copy's TFLite metadata carries the new operating point too, for an app that reads no sidecar
    assert read_embedded_card(copy).to_json() == json.loads(sidecar_path(copy).read_text())
