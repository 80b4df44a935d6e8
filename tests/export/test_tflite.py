"""TFLite export: every quantization mode from a real retrained model, parity with the frozen
graph, label_image on a .tflite without TensorFlow, and the mistakes a user can make."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from retrain.cli import export_tflite, label_image, retrain
from retrain.card.formats import sidecar_path
from retrain.predict.prediction import load_model
from tests.conftest import COLOURS, noisy_colour_image

BIN = Path(sys.executable).parent
MODES = ["none", "dynamic", "float16", "int8"]
# The bar for top-1 agreement with the frozen graph, written out here so a change to
# the library's own table cannot lower it.
REQUIRED_AGREEMENT = {"none": 0.995, "float16": 0.995, "dynamic": 0.99, "int8": 0.97}


def _colour_images(folder: Path, per_class: int, first_seed: int) -> dict[str, list[Path]]:
    paths = {}
    for name, colour in COLOURS.items():
        (folder / name).mkdir(parents=True, exist_ok=True)
        paths[name] = []
        for i in range(per_class):
            path = folder / name / f"{name}_{first_seed + i}.jpg"
            noisy_colour_image(colour, size=(40 + 7 * (i % 5), 36 + 5 * (i % 3)), seed=first_seed + i).save(path)
            paths[name].append(path)
    return paths


def _blended_images(folder: Path) -> list[Path]:
    """Colours between two classes: predictions near a decision boundary, where a conversion
    or preprocessing error shows up as a changed top-1 or a large probability difference."""
    folder.mkdir(parents=True, exist_ok=True)
    names, paths = sorted(COLOURS), []
    for a in names:
        for b in names:
            for share in ((0.3, 0.4) if a != b else ()):
                for seed in (1, 2):
                    colour = tuple(int((1 - share) * x + share * y) for x, y in zip(COLOURS[a], COLOURS[b]))
                    path = folder / f"{a}_{b}_{share}_{seed}.jpg"
                    noisy_colour_image(colour, size=(50, 44), seed=seed).save(path)
                    paths.append(path)
    return paths


@pytest.fixture(scope="module")
def models(backbone, tmp_path_factory):
    """A head trained on the real backbone's features, exported as a frozen graph, a SavedModel
    and one .tflite per quantization mode; plus held-back images no step has seen."""
    import tensorflow as tf

    from retrain.data.images import load_image
    from retrain.export.graph import (
        ServingModel,
        export_frozen_graph,
        export_saved_model,
        model_card,
    )
    from retrain.export.tflite import export_tflite as export
    from retrain.train.top_layer import TrainingConfig, train_top_layer

    root = tmp_path_factory.mktemp("tflite")
    training = _colour_images(root / "train", 8, first_seed=0)
    held_back = [p for paths in _colour_images(root / "held_back", 12, first_seed=500).values() for p in paths]
    labels = sorted(training)
    train_paths = [p for label in labels for p in training[label]]
    train_y = np.array([labels.index(label) for label in labels for _ in training[label]])
    pixels = np.stack([load_image(p, backbone.input_size) for p in train_paths]).astype(np.float32)
    features = backbone.module.features(tf.constant(pixels)).numpy()
    head = train_top_layer(features, train_y, features[:0], train_y[:0], len(labels),
                      TrainingConfig(steps=60, learning_rate=0.05, train_batch_size=24, random_seed=0))
    classifier = ServingModel(backbone, head, "final_result")
    metadata = model_card(backbone, labels, "final_result")
    export_frozen_graph(classifier, metadata, root / "graph.pb")
    export_saved_model(classifier, metadata, root / "saved_model")
    exports = {mode: export(root / "saved_model", root / f"model_{mode}.tflite", mode, train_paths[::2]) for mode in MODES}
    return {"root": root, "labels": labels, "held_back": held_back, "blended": _blended_images(root / "blended"),
            "exports": exports, "train_paths": train_paths,
            "reference": load_model(root / "graph.pb")}


def _details(path: Path):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    return interpreter.get_input_details()[0], interpreter.get_output_details()[0]


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
def test_each_mode_has_the_documented_input_and_output(models, mode):
    export = models["exports"][mode]
    input_detail, output_detail = _details(export.path)
    assert list(input_detail["shape"]) == [1, 224, 224, 3]
    assert list(output_detail["shape"]) == [1, 3]
    expected_dtype = np.uint8 if mode == "int8" else np.float32
    assert input_detail["dtype"] == expected_dtype and output_detail["dtype"] == expected_dtype
    if mode == "int8":
        assert input_detail["quantization"] == (1.0, 0)  # uint8 RGB bytes feed in unchanged
        assert output_detail["quantization"] == (1 / 256, 0)
    sidecar = json.loads(sidecar_path(export.path).read_text())
    assert sidecar["labels"] == models["labels"]
    assert sidecar["quantization"] == mode
    assert sidecar["input_size"] == 224 and sidecar["input_range"] == [0, 255]
    assert sidecar["input_tensor"]["dtype"] == np.dtype(expected_dtype).name
    assert export.size_bytes == export.path.stat().st_size
    if mode in ("dynamic", "int8"):  # the backbone is EfficientNet-Lite: its weights were rounded on the 12 images given
        assert sidecar["int8_weights"]["calibration_images"] == export.int8_weights_prepared_on == 12
    else:
        assert "int8_weights" not in sidecar and export.int8_weights_prepared_on is None


@pytest.mark.slow
def test_quantized_files_are_smaller(models):
    size = {mode: export.size_bytes for mode, export in models["exports"].items()}
    assert size["float16"] < 0.6 * size["none"]
    assert size["dynamic"] < 0.35 * size["none"]
    assert size["int8"] < 0.35 * size["none"]


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
def test_parity_with_the_frozen_graph_on_held_back_images(models, mode):
    from retrain.predict.parity import measure_parity

    export = models["exports"][mode]
    candidate = load_model(export.path)
    parity = measure_parity(candidate, models["reference"], models["held_back"], mode, export.size_bytes)
    assert parity.images == len(models["held_back"]) == 36
    assert parity.top1_agreement >= REQUIRED_AGREEMENT[mode]
    assert np.isfinite(parity.max_probability_difference)
    if mode == "none":
        assert parity.max_probability_difference < 1e-4  # the SavedModel route converts exactly


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
def test_parity_near_the_decision_boundary(models, mode):
    """On colours between two classes a conversion error changes the top-1; float modes must
    still agree on every image, quantized ones on nearly every one."""
    from retrain.predict.parity import measure_parity

    export = models["exports"][mode]
    parity = measure_parity(load_model(export.path), models["reference"], models["blended"], mode, export.size_bytes)
    assert parity.images == 24
    assert parity.top1_agreement >= {"none": 1.0, "float16": 1.0, "dynamic": 0.9, "int8": 0.9}[mode]
    assert parity.max_probability_difference < {"none": 1e-4, "float16": 0.02, "dynamic": 0.25, "int8": 0.25}[mode]


@pytest.mark.slow
def test_an_int8_model_takes_the_images_rgb_bytes_unchanged(models):
    """What an app does: feed load_image's uint8 pixels straight in, read uint8 scores times 1/256."""
    from ai_edge_litert.interpreter import Interpreter

    from retrain.data.images import load_image

    path = models["exports"]["int8"].path
    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    (input_detail,), (output_detail,) = interpreter.get_input_details(), interpreter.get_output_details()
    model = load_model(path)
    for image in models["blended"][::4]:
        pixels = load_image(image, 224)
        interpreter.set_tensor(input_detail["index"], pixels[None])
        interpreter.invoke()
        scores = interpreter.get_tensor(output_detail["index"])[0] / 256
        np.testing.assert_array_equal(model.predict(pixels[None].astype(np.float32))[0], scores)
        assert abs(scores.sum() - 1) < 0.02


@pytest.mark.slow
def test_the_tflite_model_classifies_held_back_images_correctly(models):
    from retrain.predict.prediction import classify

    model = load_model(models["exports"]["int8"].path)
    for path in models["held_back"][::6]:
        assert classify(model, path, None)[0].label == path.parent.name


@pytest.mark.slow
def test_label_image_on_tflite_never_imports_tensorflow(models):
    image = models["held_back"][0]
    script = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from retrain.cli import label_image\n"
        f"result = CliRunner().invoke(label_image, ['--graph', {str(models['exports']['int8'].path)!r}, '--image', {str(image)!r}])\n"
        "print(result.output)\n"
        "print('tensorflow imported:', 'tensorflow' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].startswith(f"{image.parent.name} (score=")
    assert "tensorflow imported: False" in result.stdout


@pytest.mark.slow
def test_label_image_console_script_runs_a_tflite_with_its_sidecar_labels(models):
    image = models["held_back"][-1]
    result = subprocess.run([str(BIN / "label_image"), "--graph", str(models["exports"]["float16"].path), "--image", str(image)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].startswith(f"{image.parent.name} (score=")
    assert len(result.stdout.splitlines()) == 3


def _run(command, args):
    result = CliRunner().invoke(command, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def _error_line(result) -> str:
    assert result.exit_code == 1, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


@pytest.mark.slow
def test_export_tflite_command_prints_the_parity_table(models, tmp_path):
    root = models["root"]
    image_dir = models["train_paths"][0].parent.parent
    output = tmp_path / "model.tflite"
    result = _run(export_tflite, ["--saved_model_dir", root / "saved_model", "--output", output,
                                  "--quantization", "dynamic", "--image-dir", image_dir, "--reference_graph", root / "graph.pb",
                                  "--representative_images", 6])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    training_images = 6
    assert lines[0] == f"Rounding the backbone's weights to int8 on {training_images} training images (GPTQ + bias correction)"
    assert lines[1].startswith(f"Wrote {output} (dynamic, ")
    assert f"int8 weights rounded on {training_images} training images" in lines[1]
    table = lines[lines.index(next(line for line in lines if line.startswith("TFLite parity on"))) + 1:]
    assert table[0].split() == ["model", "size", "top-1", "agreement", "max", "|prob", "diff|"]
    assert table[1].split()[0] == "graph.pb" and "(reference)" in table[1]
    assert table[2].split()[:2] == ["model.tflite", "(dynamic)"]
    assert float(table[2].split()[4].rstrip("%")) >= 100 * REQUIRED_AGREEMENT["dynamic"]
    assert sidecar_path(output).exists()


@pytest.mark.slow
def test_dynamic_without_training_images_warns_that_it_rounds_without_calibration(models, tmp_path):
    output = tmp_path / "model.tflite"
    result = _run(export_tflite, ["--saved_model_dir", models["root"] / "saved_model", "--output", output,
                                  "--quantization", "dynamic"])
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert any("without calibration images" in line and "--image_dir" in line for line in warnings), result.stderr
    assert "int8_weights" not in json.loads(sidecar_path(output).read_text())
    assert load_model(output).predict(np.zeros((1, 224, 224, 3), np.float32)).shape == (1, 3)


@pytest.mark.slow
def test_retrain_exports_an_int8_tflite_that_label_image_runs(make_tree, tmp_path):
    images = make_tree({"red": 6, "green": 6, "blue": 6})
    out = tmp_path / "out"
    result = _run(retrain, ["--image_dir", images, "--bottleneck_dir", tmp_path / "bn", "--output_graph", out / "g.pb",
                            "--output_labels", out / "labels.txt", "--how_many_training_steps", 30, "--random_seed", 1,
                            "--tflite_output", out / "m.tflite", "--tflite_quantization", "int8",
                            "--tflite_representative_images", 4])
    assert result.exit_code == 0, result.output
    assert f"Wrote {out / 'm.tflite'} (int8, " in result.stdout
    assert "m.tflite (int8)" in result.stdout and "g.pb" in result.stdout
    assert _details(out / "m.tflite")[0]["dtype"] == np.uint8
    classified = _run(label_image, ["--graph", out / "m.tflite", "--labels", out / "labels.txt",
                                    "--image", images / "green" / "green_0.jpg"])
    assert classified.stdout.splitlines()[0].startswith("green (score=")
    # its out-of-distribution output is there, but int8 clips it to the training images' range: no threshold
    sidecar = json.loads(sidecar_path(out / "m.tflite").read_text())
    assert sidecar["ood_tensor"]["shape"] == [1, 1] and "threshold" not in sidecar["ood"]
    assert "note: no out-of-distribution check: int8 quantization clips" in classified.stderr


@pytest.mark.slow
def test_a_tflite_that_is_not_an_image_classifier_is_refused(tmp_path, models):
    import tensorflow as tf

    module = tf.Module()
    module.serve = tf.function(lambda x: {"y": tf.nn.softmax(x[:, :2])}, input_signature=[tf.TensorSpec([1, 8], tf.float32)])
    tf.saved_model.save(module, str(tmp_path / "sm"), signatures={"serving_default": module.serve})
    wrong = tmp_path / "vector.tflite"
    wrong.write_bytes(tf.lite.TFLiteConverter.from_saved_model(str(tmp_path / "sm")).convert())
    line = _error_line(_run(label_image, ["--graph", wrong, "--image", models["held_back"][0]]))
    assert f"--graph {wrong}: not an image classifier of the shape retrain makes" in line
    assert "its input is [1, 8]" in line


@pytest.mark.slow
def test_a_file_that_is_not_tflite_is_refused(tmp_path, models):
    fake = tmp_path / "fake.tflite"
    fake.write_bytes(b"not a flatbuffer at all" * 10)
    line = _error_line(_run(label_image, ["--graph", fake, "--image", models["held_back"][0]]))
    assert f"--graph {fake}: not a TFLite model" in line


@pytest.mark.slow
def test_a_labels_file_of_the_wrong_length_is_refused(tmp_path, models):
    labels = tmp_path / "two.txt"
    labels.write_text("a\nb\n")
    result = _run(label_image, ["--graph", models["exports"]["none"].path, "--labels", labels, "--image", models["held_back"][0]])
    assert "2 labels but the model has 3 outputs" in _error_line(result)


@pytest.mark.slow
def test_a_sidecar_whose_labels_do_not_match_is_refused(tmp_path, models):
    model = tmp_path / "m.tflite"
    model.write_bytes(models["exports"]["none"].path.read_bytes())
    metadata = json.loads(sidecar_path(models["exports"]["none"].path).read_text())
    sidecar_path(model).write_text(json.dumps({**metadata, "labels": ["only", "two"]}))
    line = _error_line(_run(label_image, ["--graph", model, "--image", models["held_back"][0]]))
    assert f"{sidecar_path(model)}: 2 labels but {model} has 3 outputs" in line


@pytest.mark.slow
def test_an_empty_representative_set_is_refused(models, tmp_path):
    root = models["root"]
    image_dir = models["train_paths"][0].parent.parent
    for args, expected in [
        (["--representative_images", 0, "--image_dir", image_dir], "representative set for int8 calibration is empty"),
        ([], "--quantization int8 needs --image_dir"),
    ]:
        result = _run(export_tflite, ["--saved_model_dir", root / "saved_model", "--output", tmp_path / "x.tflite",
                                      "--quantization", "int8", *args])
        assert expected in _error_line(result)
    assert not (tmp_path / "x.tflite").exists()


def test_an_unreadable_representative_set_is_refused(tmp_path):
    from retrain.errors import UserError
    from retrain.export.tflite import load_representative

    broken = tmp_path / "broken.jpg"
    broken.write_text("not a jpeg")
    with pytest.raises(UserError, match="representative set for int8 calibration is empty"):
        load_representative([broken], 224)


def test_retrain_checks_tflite_flags_before_any_slow_work(make_tree, tmp_path):
    images = make_tree({"red": 2, "blue": 2})
    result = _run(retrain, ["--image_dir", images, "--tflite_output", tmp_path / "m.tflite", "--tflite_quantization", "int8",
                            "--tflite_representative_images", 0])
    assert "--tflite_representative_images must be at least 1" in _error_line(result)
    result = _run(retrain, ["--image_dir", images, "--tflite_output", tmp_path / "m.pb"])
    assert "must end in .tflite" in _error_line(result)


def test_export_tflite_refuses_a_saved_model_not_written_by_retrain(tmp_path):
    import tensorflow as tf

    module = tf.Module()
    module.serve = tf.function(lambda x: x, input_signature=[tf.TensorSpec([1, 2], tf.float32)])
    tf.saved_model.save(module, str(tmp_path / "sm"))
    result = _run(export_tflite, ["--saved_model_dir", tmp_path / "sm", "--output", tmp_path / "x.tflite"])
    assert "not written by retrain (no assets.extra/retrain_metadata.json)" in _error_line(result)


@pytest.mark.slow
def test_heatmap_from_a_tflite_says_it_needs_the_graph_and_still_prints_the_prediction(models, tmp_path):
    image = models["held_back"][0]
    result = _run(label_image, ["--graph", models["exports"]["none"].path, "--image", image,
                                "--heatmap", tmp_path / "heat.png"])
    line = _error_line(result)
    assert result.stdout.startswith(f"{image.parent.name} (score=")
    assert ".pb or SavedModel" in line and "only the heatmap failed" in line
    assert not (tmp_path / "heat.png").exists()


# MediaPipe Tasks' ImageClassifier (the C++ core of its Android, iOS and web builds) as the app
# frameworks' stand-in: it reads the normalisation, labels and outputs from the TFLite metadata.

def _mediapipe_classifier(path: Path):
    from mediapipe.tasks.python import BaseOptions, vision

    options = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=str(path)))
    return vision.ImageClassifier.create_from_options(options)


def _mediapipe_heads(classifier, image: Path) -> dict:
    """Each output head's categories by index: the image decoded as an app would hand it over
    (RGB bytes), resized by MediaPipe itself."""
    import mediapipe
    from PIL import Image

    pixels = np.ascontiguousarray(np.asarray(Image.open(image).convert("RGB")))
    result = classifier.classify(mediapipe.Image(image_format=mediapipe.ImageFormat.SRGB, data=pixels))
    return {head.head_name: sorted(head.categories, key=lambda c: c.index) for head in result.classifications}


def _agreement_with_label_image(path: Path, images: list[Path], labels: list[str]) -> tuple[float, float, float]:
    """MediaPipe's top-1 agreement with label_image's (retrain's own preprocessing and LiteRT),
    and the mean and largest probability difference, over `images`."""
    from retrain.data.images import load_image

    model = load_model(path)
    agree, differences = 0, []
    with _mediapipe_classifier(path) as classifier:
        for image in images:
            categories = _mediapipe_heads(classifier, image)["probability"]
            assert [c.category_name for c in categories] == labels
            theirs = np.array([c.score for c in categories])
            ours = model.predict(load_image(image, model.input_height)[None].astype(np.float32))[0]
            agree += int(np.argmax(theirs) == np.argmax(ours))
            differences.append(np.abs(theirs - ours).max())
    return agree / len(images), float(np.mean(differences)), float(np.max(differences))


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
def test_mediapipe_classifies_each_exported_mode_with_the_class_names_from_the_model(models, mode):
    top1, mean_difference, max_difference = _agreement_with_label_image(
        models["exports"][mode].path, models["held_back"], models["labels"])
    print(f"{mode}: MediaPipe vs label_image top-1 {top1:.3f}, |prob diff| mean {mean_difference:.4f} max {max_difference:.4f}")
    assert top1 == 1.0
    assert max_difference < 1e-4  # the same pixels (retrain resizes as MediaPipe does): rounding only


@pytest.fixture(scope="module")
def retrained(tmp_path_factory):
    """One .tflite per mode written by `retrain --tflite_output` (with its out-of-distribution
    output), the bottlenecks shared; plus the images it trained on."""
    from tests.conftest import write_colour_tree

    root = tmp_path_factory.mktemp("retrained")
    images = write_colour_tree(root / "images", {"red": 6, "green": 6, "blue": 6})
    paths = {}
    for mode in MODES:
        out = root / mode
        result = _run(retrain, ["--image_dir", images, "--bottleneck_dir", root / "bn", "--output_graph", out / "g.pb",
                                "--output_labels", out / "labels.txt", "--how_many_training_steps", 30,
                                "--random_seed", 1, "--tflite_output", out / "m.tflite", "--tflite_quantization", mode,
                                "--tflite_representative_images", 4])
        assert result.exit_code == 0, result.output
        paths[mode] = out / "m.tflite"
    return {"images": images, "tflite": paths}


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
def test_mediapipe_loads_what_retrain_writes_with_both_outputs(retrained, mode):
    path = retrained["tflite"][mode]
    images = sorted(retrained["images"].glob("*/*.jpg"))
    with _mediapipe_classifier(path) as classifier:
        heads = _mediapipe_heads(classifier, images[0])
    assert [c.category_name for c in heads["probability"]] == ["blue", "green", "red"]
    assert len(heads["ood_score"]) == 1 and np.isfinite(heads["ood_score"][0].score)
    top1, _, max_difference = _agreement_with_label_image(path, images[::2], ["blue", "green", "red"])
    assert top1 == 1.0 and max_difference < 1e-4


@pytest.mark.slow
def test_the_metadata_describes_the_input_outputs_and_carries_the_model_card(retrained):
    from retrain.card.formats import attached_files, parse_card
    from retrain.export import metadata_schema_py_generated as meta
    from retrain.export.tflite_metadata import METADATA_NAME
    from ai_edge_litert import schema_py_generated as schema

    for mode, path in retrained["tflite"].items():
        data = path.read_bytes()
        model = schema.Model.GetRootAsModel(data, 0)
        entry = next(model.Metadata(i) for i in range(model.MetadataLength()) if model.Metadata(i).Name() == METADATA_NAME.encode())
        metadata = meta.ModelMetadataT.InitFromObj(meta.ModelMetadata.GetRootAsModelMetadata(
            model.Buffers(entry.Buffer()).DataAsNumpy().tobytes(), 0))
        assert metadata.author == b"retrain" and mode.encode() in metadata.name
        image = metadata.subgraphMetadata[0].inputTensorMetadata[0]
        assert image.content.contentProperties.colorSpace == meta.ColorSpaceType.RGB
        assert image.content.contentProperties.defaultSize.width == 224
        assert (b"uint8" in image.description) == (mode == "int8")
        assert (list(image.processUnits[0].options.mean), list(image.processUnits[0].options.std)) == ([0.0], [1.0])
        names = [t.name for t in metadata.subgraphMetadata[0].outputTensorMetadata]
        assert sorted(names) == [b"ood_score", b"probability"]
        ood = metadata.subgraphMetadata[0].outputTensorMetadata[names.index(b"ood_score")]
        card = parse_card(attached_files(path)["model_card.json"], str(path))
        assert card.to_json() == json.loads(sidecar_path(path).read_text())
        assert attached_files(path)["labels.txt"] == b"blue\ngreen\nred\n"
        if mode == "int8":
            assert b"clips the out-of-distribution score" in ood.description
        else:
            assert f"above {card.ood.threshold:.6g}".encode() in ood.description


@pytest.mark.slow
def test_label_image_and_evaluate_read_the_labels_and_card_from_a_tflite_without_its_sidecar(retrained, tmp_path):
    from retrain.cli import evaluate

    model = tmp_path / "alone.tflite"
    model.write_bytes(retrained["tflite"]["none"].read_bytes())
    image = retrained["images"] / "green" / "green_0.jpg"
    classified = _run(label_image, ["--graph", model, "--image", image])
    assert classified.exit_code == 0, classified.output
    assert classified.stdout.splitlines()[0].startswith("green (score=")
    assert "no out-of-distribution check" not in classified.stderr
    evaluated = _run(evaluate, ["--graph", model, "--image_dir", retrained["images"], "--json", tmp_path / "m.json"])
    assert evaluated.exit_code == 0, evaluated.output
    metrics = json.loads((tmp_path / "m.json").read_text())
    stored = json.loads(sidecar_path(retrained["tflite"]["none"]).read_text())
    assert metrics["n"] == 18 and metrics["ood"]["threshold"] == pytest.approx(stored["ood"]["threshold"])


def _with_card(tmp_path: Path, source: Path, **changes) -> Path:
    """A copy of `source` with no sidecar, its metadata rewritten from a changed model card."""
    from retrain.card.formats import parse_card
    from retrain.export.tflite_metadata import with_metadata

    card = parse_card(sidecar_path(source).read_text(), str(source)).replace(**changes)
    copy = tmp_path / "changed.tflite"
    copy.write_bytes(with_metadata(source.read_bytes(), card))
    return copy


@pytest.mark.slow
def test_a_tflite_whose_metadata_disagrees_with_the_model_is_refused(retrained, tmp_path):
    source, image = retrained["tflite"]["float16"], retrained["images"] / "red" / "red_0.jpg"
    line = _error_line(_run(label_image, ["--graph", _with_card(tmp_path, source, labels=("a", "b")), "--image", image]))
    assert "its attached labels.txt lists 2 labels but the model has 3 outputs" in line
    line = _error_line(_run(label_image, ["--graph", _with_card(tmp_path, source, input_size=160), "--image", image]))
    assert "(its attached model_card.json): input size 160" in line
    damaged = tmp_path / "damaged.tflite"
    data = bytearray(source.read_bytes())
    start = data.rindex(b'"format"')
    data[start:start + 8] = b"#" * 8
    damaged.write_bytes(bytes(data))
    line = _error_line(_run(label_image, ["--graph", damaged, "--image", image]))
    assert f"{damaged}: the files attached to its TFLite metadata are damaged" in line


def _foreign_tflite(tmp_path: Path) -> Path:
    """A .tflite another tool made: it expects pixels normalised to [-1, 1] by the client, and its
    standard metadata (no retrain model card) says so and names its labels file."""
    import tensorflow as tf

    from retrain.export import metadata_schema_py_generated as meta
    from retrain.export.tflite_metadata import embed_metadata

    module = tf.Module()
    module.serve = tf.function(lambda x: {"scores": tf.nn.softmax(5 * tf.reduce_mean(x, axis=[1, 2]))},
                               input_signature=[tf.TensorSpec([1, 32, 32, 3], tf.float32)])
    tf.saved_model.save(module, str(tmp_path / "sm"), signatures={"serving_default": module.serve})
    normalisation = meta.ProcessUnitT()
    normalisation.optionsType = meta.ProcessUnitOptions.NormalizationOptions
    normalisation.options = meta.NormalizationOptionsT()
    normalisation.options.mean, normalisation.options.std = [127.5], [127.5]
    image, scores, labels = meta.TensorMetadataT(), meta.TensorMetadataT(), meta.AssociatedFileT()
    image.name, image.processUnits = "image", [normalisation]
    labels.name, labels.type = "colours.txt", meta.AssociatedFileType.TENSOR_AXIS_LABELS
    scores.name, scores.associatedFiles = "scores", [labels]
    subgraph, metadata = meta.SubGraphMetadataT(), meta.ModelMetadataT()
    subgraph.inputTensorMetadata, subgraph.outputTensorMetadata = [image], [scores]
    metadata.name, metadata.subgraphMetadata = "another tool's classifier", [subgraph]
    path = tmp_path / "foreign.tflite"
    converted = tf.lite.TFLiteConverter.from_saved_model(str(tmp_path / "sm")).convert()
    path.write_bytes(embed_metadata(converted, metadata, {"colours.txt": b"red\ngreen\nblue\n"}))
    return path


@pytest.mark.slow
def test_a_tflite_from_another_tool_classifies_with_the_labels_and_normalisation_of_its_metadata(tmp_path):
    from retrain.data.images import load_image

    path = _foreign_tflite(tmp_path)
    image = tmp_path / "green.jpg"
    noisy_colour_image(COLOURS["green"], size=(40, 36), seed=3).save(image)
    model = load_model(path)
    assert model.labels == ["red", "green", "blue"] and model.model_card is None
    pixels = load_image(image, 32)[None].astype(np.float32)
    expected = np.exp(5 * ((pixels.mean(axis=(1, 2)) - 127.5) / 127.5))
    np.testing.assert_allclose(model.predict(pixels), expected / expected.sum(), atol=1e-5)
    classified = _run(label_image, ["--graph", path, "--image", image])
    assert classified.exit_code == 0, classified.output
    assert classified.stdout.splitlines()[0].startswith("green (score=")
