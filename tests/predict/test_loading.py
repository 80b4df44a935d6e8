"""Loading a model retrain did not wholly write: a SavedModel without its model card classifies
with the labels given and says it has no card; a .pb without one gets no set_operating_point hint."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from retrain.cli import label_image
from retrain.cli.set_operating_point_command import set_operating_point
from tests.conftest import SQUARE_COLOURS, run_cli, square_image


def _square(tmp_path: Path, colour: str) -> Path:
    path = tmp_path / f"{colour}.png"
    square_image(SQUARE_COLOURS[colour], seed=77)[0].save(path)
    return path


def test_a_saved_model_without_assets_extra_classifies_with_labels_and_says_it_has_no_model_card(square_model, tmp_path):
    from retrain.api import classify, load

    bare = tmp_path / "bare"
    shutil.copytree(square_model / "saved_model", bare, ignore=shutil.ignore_patterns("assets.extra"))
    image = _square(tmp_path, "red")
    printed = run_cli(label_image, ["--graph", bare, "--labels", square_model / "labels.txt", "--image", image])
    assert printed.exit_code == 0, printed.output
    assert printed.stdout.startswith("red (score=")
    (note,) = printed.stderr.splitlines()
    assert note.startswith("note: no operating point, so no decision: the model carries no retrain model card")
    assert "no out-of-distribution check" in note
    result = classify(image, load(bare, labels=square_model / "labels.txt"))
    assert result.predictions[0].label == "red" and result.ood is None and result.decisions == ()
    json_printed = run_cli(label_image, ["--graph", bare, "--labels", square_model / "labels.txt", "--image", image,
                                         "--json"])
    assert json.loads(json_printed.stdout)["no_ood"].startswith("the model carries no retrain model card")


def _foreign_pb(square_model: Path, target: Path) -> Path:
    """square_model's graph without its model card: a graph retrain did not export."""
    import tensorflow as tf

    from retrain.card.formats import MODEL_CARD_NODE

    graph_def = tf.compat.v1.GraphDef.FromString((square_model / "graph.pb").read_bytes())
    (node,) = [n for n in graph_def.node if n.name == MODEL_CARD_NODE]
    graph_def.node.remove(node)
    target.write_bytes(graph_def.SerializeToString())
    return target


def test_set_operating_point_is_suggested_only_for_a_model_it_accepts(square_model, tmp_path):
    image = _square(tmp_path, "red")
    own = run_cli(label_image, ["--graph", square_model / "graph.pb", "--image", image])
    assert own.exit_code == 0, own.output
    assert "set_operating_point" in own.stderr
    foreign = _foreign_pb(square_model, tmp_path / "foreign.pb")
    printed = run_cli(label_image, ["--graph", foreign, "--labels", square_model / "labels.txt", "--image", image])
    assert printed.exit_code == 0, printed.output
    assert all("(score=" in line for line in printed.stdout.splitlines())  # fed as a poets graph: no card says how
    assert "no retrain model card" in printed.stderr and "set_operating_point" not in printed.stderr
    refused = run_cli(set_operating_point, ["--graph", foreign, "--image_dir", square_model / "images",
                                            "--operating_point", "red:threshold=0.5", "--output", tmp_path / "c.pb"])
    assert refused.exit_code == 1 and "not exported by retrain" in refused.stderr
