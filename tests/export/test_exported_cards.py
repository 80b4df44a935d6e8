"""Loading models and the JSON they carry (issue 24, "load"): a SavedModel without its model
card, figures that are not numbers, an int8 .tflite without an out-of-distribution check, the
sidecar's tensor names, a foreign .pb, mistakes in the Python API, and TensorFlow's own log lines."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from retrain.cli import evaluate, label_image, retrain
from retrain.cli.set_operating_point_command import set_operating_point
from retrain.errors import UserError
from tests.conftest import COLOURS, SQUARE_COLOURS, noisy_colour_image, run_cli, square_image

NATIVE_LINE = re.compile(r"^(WARNING: All log messages before absl|[IWEF]\d{4} |To enable the following instructions)")


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


def _square(tmp_path: Path, colour: str) -> Path:
    path = tmp_path / f"{colour}.png"
    square_image(SQUARE_COLOURS[colour], seed=77)[0].save(path)
    return path


def test_a_saved_model_without_assets_extra_classifies_with_labels_and_says_it_has_no_model_card(square_model, tmp_path):
    from retrain.api.classification import classify

    bare = tmp_path / "bare"
    shutil.copytree(square_model / "saved_model", bare, ignore=shutil.ignore_patterns("assets.extra"))
    image = _square(tmp_path, "red")
    printed = run_cli(label_image, ["--graph", bare, "--labels", square_model / "labels.txt", "--image", image])
    assert printed.exit_code == 0, printed.output
    assert printed.stdout.startswith("red (score=")
    (note,) = printed.stderr.splitlines()
    assert note.startswith("note: no operating point, so no decision: the model carries no retrain model card")
    assert "no out-of-distribution check" in note
    result = classify(image, graph=bare, labels=square_model / "labels.txt")
    assert result.predictions[0].label == "red" and result.ood is None and result.decisions == ()
    json_printed = run_cli(label_image, ["--graph", bare, "--labels", square_model / "labels.txt", "--image", image,
                                         "--json"])
    assert json.loads(json_printed.stdout)["no_ood"].startswith("the model carries no retrain model card")


@pytest.mark.parametrize("damage", [b"{not json", b"[1, 2]"])
def test_a_damaged_saved_model_card_is_one_line_naming_the_file(square_model, tmp_path, damage):
    damaged = tmp_path / "damaged"
    shutil.copytree(square_model / "saved_model", damaged)
    card = damaged / "assets.extra" / "retrain_metadata.json"
    card.write_bytes(damage)
    printed = run_cli(label_image, ["--graph", damaged, "--image", _square(tmp_path, "red")])
    assert printed.exit_code == 1 and "Traceback" not in printed.output
    assert printed.stderr.splitlines()[-1].startswith(f"error: {card}: not a")


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


def test_parse_operating_point_of_none_is_a_user_error_naming_the_format():
    from retrain.decisions.operating_points import parse_operating_point

    with pytest.raises(UserError, match=r"--operating_point None: expected \[CLASS:\]sensitivity=S"):
        parse_operating_point(None)


def test_api_evaluate_given_one_path_says_to_pass_a_list(tmp_path):
    from retrain.api import evaluate as evaluate_api

    for one in (tmp_path / "model.pb", str(tmp_path / "model.pb")):
        with pytest.raises(TypeError, match=r"graphs: a list of model paths, e.g. \[Path\('model.pb'\)\]"):
            evaluate_api(one, tmp_path)


def _console_script(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def _native_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if NATIVE_LINE.match(line) or "cuInit" in line]


def test_set_operating_point_on_a_saved_model_prints_no_native_log_lines(square_model, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "RETRAIN_NATIVE_LOGS")}
    done = subprocess.run([_console_script("set_operating_point"), "--graph", square_model / "saved_model",
                           "--image_dir", square_model / "images", "--operating_point", "red:threshold=0.5",
                           "--output", tmp_path / "copy", "--allow_training_images"],  # only the logs matter here
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert _native_lines(done.stderr) == [], done.stderr


def test_the_python_api_prints_no_native_log_lines(tmp_path):
    images = tmp_path / "images"
    for name in ("red", "blue"):
        (images / name).mkdir(parents=True)
        for i in range(6):
            noisy_colour_image(COLOURS[name], seed=300 + 10 * len(name) + i).save(images / name / f"{i}.jpg")
    script = (
        "from pathlib import Path\n"
        "from retrain.api import DataConfig, ExportConfig, FeatureConfig, RetrainConfig, Reporter, TrainingConfig, train\n"
        f"root = Path({str(tmp_path)!r})\n"
        "quiet = Reporter(log=lambda line: None, warn=lambda line: None)\n"
        "train(RetrainConfig(DataConfig(root / 'images'), top_layer=TrainingConfig(steps=5),\n"
        "                    features=FeatureConfig(bottleneck_dir=root / 'bn'),\n"
        "                    export=ExportConfig(output_graph=root / 'g.pb', output_labels=root / 'labels.txt')), quiet)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "RETRAIN_NATIVE_LOGS")}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "g.pb").exists()
    assert _native_lines(done.stderr) == [], done.stderr
