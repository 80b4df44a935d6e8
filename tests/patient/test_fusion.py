"""Patient metadata as a second model input: generated images whose class depends partly on
an `age` column; every export takes the same (image, metadata) to the same probabilities."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from retrain.cli import evaluate, export_tflite, label_image, prepare_isic, retrain
from tests.conftest import run_cli

pytestmark = pytest.mark.slow

QUANTIZATIONS = {"none": 1e-4, "float16": 1e-2, "dynamic": 3e-2, "int8": 6e-2}  # largest probability difference


def _write_set(root, rng) -> list[str]:
    """Colour says the class only weakly (the classes overlap); age says it strongly; sex is noise."""
    rows = []
    for split, count in (("train", 40), ("test", 30)):
        for label in ("benign", "malignant"):
            (root / split / label).mkdir(parents=True)
            for i in range(count):
                shade = np.clip(rng.normal(0.4 if label == "benign" else 0.6, 0.25), 0, 1)
                colour = np.array([200 * shade + 30, 80, 200 * (1 - shade) + 30])
                pixels = np.clip(colour + rng.normal(0, 20, (40, 48, 3)), 0, 255).astype(np.uint8)
                name = f"{split}_{label}_{i}"
                Image.fromarray(pixels).save(root / split / label / f"{name}.jpg")
                age = rng.normal(40 if label == "benign" else 62, 9)
                rows.append(f"{name},{age:.0f},{rng.choice(['female', 'male', ''])}")
    return rows


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("metadata")
    rows = _write_set(root, np.random.default_rng(0))
    (root / "meta.csv").write_text("image_id,age,sex\n" + "\n".join(rows) + "\nno_such_image,50,male\n")
    common = ["--image_dir", root / "train", "--how_many_training_steps", 300, "--learning_rate", 0.05,
              "--random_seed", 0, "--validation_percentage", 20, "--testing_percentage", 0,
              "--bottleneck_dir", root / "bottlenecks"]
    with_metadata = run_cli(retrain, [*common, "--metadata", root / "meta.csv", "--output_graph", root / "m.pb",
                                      "--output_labels", root / "m.txt", "--saved_model_dir", root / "sm",
                                      "--tflite_output", root / "m_int8.tflite", "--tflite_quantization", "int8"])
    assert with_metadata.exit_code == 0, with_metadata.output
    plain = run_cli(retrain, [*common, "--output_graph", root / "plain.pb", "--output_labels", root / "plain.txt",
                              "--tflite_output", root / "plain.tflite"])
    assert plain.exit_code == 0, plain.output
    for quantization in ("none", "float16", "dynamic"):
        result = run_cli(export_tflite, ["--saved_model_dir", root / "sm", "--output", root / f"m_{quantization}.tflite",
                                         "--quantization", quantization, "--image_dir", root / "train",
                                         "--validation_percentage", 20, "--testing_percentage", 0])
        assert result.exit_code == 0, result.output
    return root, with_metadata.output


def _auc(root, graph, *extra) -> float:
    result = run_cli(evaluate, ["--graph", root / graph, "--image_dir", root / "test", "--json", root / "e.json", *extra])
    assert result.exit_code == 0, result.output
    return json.loads((root / "e.json").read_text())["auc"]["malignant"]


def test_retrain_reports_the_encoding_and_the_matching(trained):
    _, output = trained
    assert "Metadata column age: numeric" in output
    assert "Metadata column sex: categorical: female, male (+ unknown)" in output
    assert "1 rows match no image and are ignored" in output
    assert "Validation with patient metadata AUC" in output


def test_the_model_with_metadata_beats_the_one_without(trained):
    root, _ = trained
    with_metadata = _auc(root, "m.pb", "--metadata", root / "meta.csv")
    without = _auc(root, "plain.pb")
    assert with_metadata > without + 0.1, (with_metadata, without)
    assert _auc(root, "m.pb") < with_metadata  # the same model with every value missing


def _probabilities(root, graph, image, metadata) -> np.ndarray:
    result = run_cli(label_image, ["--graph", root / graph, "--image", image, "--metadata", metadata, "--json"])
    assert result.exit_code == 0, result.output
    scores = {p["label"]: p["score"] for p in json.loads(result.stdout)["predictions"]}
    return np.array([scores["benign"], scores["malignant"]])


@pytest.mark.parametrize("metadata", ["age=30,sex=female", "age=75,sex=male", "sex=male"])
def test_every_export_gives_the_same_probabilities(trained, metadata):
    root, _ = trained
    image = root / "test" / "malignant" / "test_malignant_3.jpg"
    reference = _probabilities(root, "m.pb", image, metadata)
    np.testing.assert_allclose(_probabilities(root, "sm", image, metadata), reference, atol=1e-5)
    for quantization, tolerance in QUANTIZATIONS.items():
        np.testing.assert_allclose(_probabilities(root, f"m_{quantization}.tflite", image, metadata), reference,
                                   atol=tolerance, err_msg=quantization)


def test_age_moves_the_prediction(trained):
    root, _ = trained
    image = root / "test" / "malignant" / "test_malignant_3.jpg"
    young, old = (_probabilities(root, "m.pb", image, f"age={age}")[1] for age in (25, 80))
    assert old - young > 0.3


def test_label_image_without_metadata_says_so_once(trained):
    root, _ = trained
    result = run_cli(label_image, ["--graph", root / "m.pb", "--image", root / "test" / "benign" / "test_benign_0.jpg"])
    assert result.exit_code == 0
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "(age, sex)" in warnings[0] and "missing" in warnings[0]
    assert len(result.stdout.splitlines()) == 2


def test_unseen_category_is_unknown_with_a_warning(trained):
    root, _ = trained
    image = root / "test" / "benign" / "test_benign_0.jpg"
    result = run_cli(label_image, ["--graph", root / "m.pb", "--image", image, "--metadata", "age=40,sex=other"])
    assert result.exit_code == 0
    assert "sex: 'other' was not seen in training; treated as unknown" in result.stderr
    np.testing.assert_allclose(_probabilities(root, "m.pb", image, "age=40,sex=other"),
                               _probabilities(root, "m.pb", image, "age=40,sex=unknown"), atol=1e-6)


def test_label_image_takes_an_age_outside_0_to_120_as_missing_with_one_warning(trained):
    root, _ = trained
    image = root / "test" / "benign" / "test_benign_0.jpg"
    result = run_cli(label_image, ["--graph", root / "m.pb", "--image", image, "--metadata", "age=200,sex=male"])
    assert result.exit_code == 0, result.output
    assert [line for line in result.stderr.splitlines() if line.startswith("warning:")] == [
        "warning: --metadata 'age=200,sex=male': age 200 is outside 0..120; treated as missing"]
    np.testing.assert_allclose(_probabilities(root, "m.pb", image, "age=200,sex=male"),
                               _probabilities(root, "m.pb", image, "sex=male"), atol=1e-6)


def test_metadata_for_a_model_without_it_is_a_warning(trained):
    root, _ = trained
    result = run_cli(label_image, ["--graph", root / "plain.pb", "--image", root / "test" / "benign" / "test_benign_0.jpg",
                                   "--metadata", "age=40"])
    assert result.exit_code == 0
    assert "--metadata ignored: the model takes no patient metadata" in result.stderr


def test_a_model_without_metadata_keeps_one_input(trained):
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    root, _ = trained
    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString((root / "plain.pb").read_bytes())
    assert [n.name for n in graph_def.node if n.op == "Placeholder"] == ["input"]
    assert len(Interpreter(model_path=str(root / "plain.tflite")).get_input_details()) == 1
    assert "patient_metadata" not in json.loads((root / "plain.tflite.json").read_text())
    graph_def.ParseFromString((root / "m.pb").read_bytes())
    assert sorted(n.name for n in graph_def.node if n.op == "Placeholder") == ["input", "metadata"]


@pytest.mark.parametrize("csv_text, flags, message", [
    ("id,age\na,1\n", [], "no image_id column"),
    ("image_id,age\na,1\na,2\n", [], "appears twice (lines 2 and 3)"),
    ("image_id,age\na,1\n", ["--metadata_columns", "agee"], "agee"),
    ("image_id,age\na,1\nb,old\n", ["--metadata_numeric", "age"], "'old'"),
])
def test_bad_metadata_is_one_error_before_any_work(tmp_path, make_tree, csv_text, flags, message):
    images = make_tree({"red": 3, "blue": 3})
    (tmp_path / "meta.csv").write_text(csv_text)
    result = run_cli(retrain, ["--image_dir", images, "--metadata", tmp_path / "meta.csv", *flags,
                               "--output_graph", tmp_path / "g.pb", "--bottleneck_dir", tmp_path / "bn"])
    assert result.exit_code == 1
    (error,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert message in error and "--metadata" in error
    assert not (tmp_path / "bn").exists()  # nothing was computed


def test_prepare_isic_names_the_flag_for_retrain(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    rows = []
    for i, (melanoma, keratosis) in enumerate([(1, 0), (0, 1), (0, 0), (0, 0)]):
        Image.new("RGB", (8, 8)).save(images / f"ISIC_000000{i}.jpg")
        rows.append(f"ISIC_000000{i},{melanoma}.0,{keratosis}.0")
    (tmp_path / "gt.csv").write_text("image_id,melanoma,seborrheic_keratosis\n" + "\n".join(rows) + "\n")
    (tmp_path / "meta.csv").write_text("image_id,age_approximate,sex\n"
                                       + "\n".join(f"ISIC_000000{i},50,female" for i in range(4)) + "\n")
    result = run_cli(prepare_isic, ["--images", images, "--ground_truth", tmp_path / "gt.csv",
                                    "--metadata", tmp_path / "meta.csv", "--output", tmp_path / "out"])
    assert result.exit_code == 0, result.output
    assert f"--metadata {tmp_path / 'meta.csv'}" in result.stdout


def test_a_metadata_option_without_metadata_is_an_error(tmp_path, make_tree):
    result = run_cli(retrain, ["--image_dir", make_tree({"red": 3, "blue": 3}), "--metadata_columns", "age",
                               "--output_graph", tmp_path / "g.pb", "--bottleneck_dir", tmp_path / "bn"])
    assert result.exit_code == 1
    assert "--metadata_columns applies to patient metadata; add --metadata FILE.csv" in result.stderr
