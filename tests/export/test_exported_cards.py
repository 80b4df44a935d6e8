"""The model card each export writes (.pb, SavedModel, int8 .tflite sidecar): strict JSON that
says why an AUC or the out-of-distribution check is missing, and names only tensors the .tflite has."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from retrain.cli import evaluate, label_image, retrain
from tests.conftest import COLOURS, noisy_colour_image, run_cli

pytestmark = pytest.mark.slow


def strict_json(text: str):
    """What JavaScript's JSON.parse accepts: no bare NaN or Infinity."""

    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def one_class_validation(tmp_path_factory):
    """A model whose validation tree has one class only, so its other classes have no AUC; exported as
    .pb, SavedModel and int8 .tflite."""
    root = tmp_path_factory.mktemp("one_class")
    images = root / "images"
    for name in ("red", "green", "blue"):
        (images / name).mkdir(parents=True)
        for i in range(6):
            noisy_colour_image(COLOURS[name], seed=100 * len(name) + i).save(images / name / f"{name}_{i}.jpg")
    (root / "validation" / "red").mkdir(parents=True)
    for i in range(3):
        noisy_colour_image(COLOURS["red"], seed=900 + i).save(root / "validation" / "red" / f"v{i}.jpg")
    out = root / "out"
    result = run_cli(retrain, [
        "--image_dir", images, "--validation_dir", root / "validation", "--bottleneck_dir", root / "bn",
        "--output_graph", out / "g.pb", "--output_labels", out / "labels.txt", "--saved_model_dir", out / "sm",
        "--tflite_output", out / "m.tflite", "--tflite_quantization", "int8", "--tflite_representative_images", 4,
        "--how_many_training_steps", 5, "--random_seed", 1,
    ])
    assert result.exit_code == 0, result.output
    return root


def _pb_card_text(graph: Path) -> str:
    import tensorflow as tf

    from retrain.card.formats import MODEL_CARD_NODE

    graph_def = tf.compat.v1.GraphDef.FromString(graph.read_bytes())
    (node,) = [n for n in graph_def.node if n.name == MODEL_CARD_NODE]
    return node.attr["value"].tensor.string_val[0].decode()


def test_model_cards_hold_no_bare_nan_and_say_why_an_auc_is_missing(one_class_validation):
    out = one_class_validation / "out"
    cards = {"sidecar": strict_json((out / "m.tflite.json").read_text()),
             "saved_model": strict_json((out / "sm" / "assets.extra" / "retrain_metadata.json").read_text()),
             "pb": strict_json(_pb_card_text(out / "g.pb"))}
    for where, card in cards.items():
        aucs = card["validation_figures"]["auc"]
        assert aucs["blue"]["auc"] is None and aucs["blue"]["interval"] == [None, None], where
        assert aucs["blue"]["no_auc"] == "the validation set has no image of blue", where
        assert aucs["red"]["no_auc"] == "every validation image is red", where
    image = one_class_validation / "images" / "red" / "red_0.jpg"
    for graph in (out / "g.pb", out / "m.tflite"):
        printed = run_cli(label_image, ["--graph", graph, "--image", image, "--json"])
        assert printed.exit_code == 0, printed.output
        strict_json(printed.stdout)
    written = one_class_validation / "metrics.json"
    measured = run_cli(evaluate, ["--graph", out / "m.tflite", "--image_dir", one_class_validation / "validation",
                                  "--json", written])
    assert measured.exit_code == 0, measured.output
    strict_json(written.read_text())


def test_an_int8_tflite_says_why_it_has_no_ood_check_in_json_and_in_evaluate(one_class_validation):
    out = one_class_validation / "out"
    reason = json.loads((out / "m.tflite.json").read_text())["ood"]["unavailable"]
    printed = run_cli(label_image, ["--graph", out / "m.tflite", "--image",
                                    one_class_validation / "images" / "red" / "red_0.jpg", "--json"])
    assert printed.exit_code == 0, printed.output
    output = json.loads(printed.stdout)
    assert output["ood"] is None and output["no_ood"] == reason
    measured = run_cli(evaluate, ["--graph", out / "m.tflite", "--image_dir", one_class_validation / "images"])
    assert measured.exit_code == 0, measured.output
    assert f"Out-of-distribution: no check: {reason}" in measured.stdout.splitlines()


def test_the_tflite_sidecar_names_only_tensors_the_tflite_has(one_class_validation, tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    out = one_class_validation / "out"
    interpreter = Interpreter(model_path=str(out / "m.tflite"))
    inputs = {d["name"] for d in interpreter.get_input_details()}
    outputs = {d["name"] for d in interpreter.get_output_details()}
    sidecar = json.loads((out / "m.tflite.json").read_text())
    assert sidecar["input_name"] in inputs and sidecar["input_tensor"]["name"] == sidecar["input_name"]
    assert sidecar["output_name"] in outputs and sidecar["output_tensor"]["name"] == sidecar["output_name"]
    assert sidecar["ood"]["output_name"] in outputs and sidecar["ood_tensor"]["name"] == sidecar["ood"]["output_name"]
    assert "class_activation_maps" not in sidecar
    # a sidecar written before, with the SavedModel's names, still works
    old = tmp_path / "old.tflite"
    shutil.copy(out / "m.tflite", old)
    old.with_name("old.tflite.json").write_text(json.dumps(
        {**sidecar, "input_name": "input", "output_name": "final_result", "class_activation_maps": "class_activation_maps"}))
    printed = run_cli(label_image, ["--graph", old, "--image", one_class_validation / "images" / "red" / "red_0.jpg"])
    assert printed.exit_code == 0, printed.output
    assert printed.stdout.startswith("red (score=")
