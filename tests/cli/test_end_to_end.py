"""The real pipeline, as a user runs it: console scripts, real backbone, real files."""

import subprocess
import sys
from pathlib import Path

import pytest

from retrain.predict.prediction import load_model

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent


def _run(*args) -> subprocess.CompletedProcess:
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=600)
    assert "Traceback" not in result.stderr, result.stderr
    return result


def _top_label(result) -> str:
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines and "(score=" in lines[0], result.stdout
    return lines[0].split(" (score=")[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Retrain with a tensorflow-for-poets command line on three colour classes."""
    from tests.conftest import COLOURS, noisy_colour_image

    root = tmp_path_factory.mktemp("e2e")
    images = root / "images"
    for name, colour in COLOURS.items():
        (images / name.title()).mkdir(parents=True)
        for i in range(14):
            noisy_colour_image(colour, seed=i).save(images / name.title() / f"{name}_{i}.jpg")
    out = root / "out"
    args = [
        BIN / "retrain",
        f"--bottleneck_dir={root / 'bottlenecks'}",
        f"--model_dir={root / 'models'}",
        "--architecture=efficientnet_lite0",
        f"--output_graph={out / 'retrained_graph.pb'}",
        f"--output_labels={out / 'retrained_labels.txt'}",
        f"--image_dir={images}",
        "--how_many_training_steps=150",
        "--learning_rate=0.05",
        f"--saved_model_dir={out / 'saved_model'}",
        "--random_seed=3",
    ]
    first = _run(*args)
    assert first.returncode == 0, first.stderr
    second = _run(*args)
    assert second.returncode == 0, second.stderr
    return root, images, out, first, second


def test_retrain_prints_progress_in_the_original_format(trained):
    _, _, _, first, _ = trained
    assert "Step 0: Train accuracy = " in first.stdout
    assert "Step 149: Cross entropy = " in first.stdout
    # retrain.py's hash puts red_1, red_9 and blue_3 in the test set (10 %)
    assert "Final test accuracy = 100.0% (N=3)" in first.stdout, first.stdout
    assert any(line.startswith("Final test AUC") and line.endswith("mean 1.000 (N=3)") for line in first.stdout.splitlines())
    assert "test set is empty" not in first.stderr


def test_second_run_reuses_every_bottleneck(trained):
    _, _, _, first, second = trained
    assert "0 reused, 42 computed" in first.stdout
    assert "42 reused, 0 computed" in second.stdout


def test_labels_file_has_one_label_per_line_in_output_order(trained):
    _, _, out, _, _ = trained
    assert (out / "retrained_labels.txt").read_text() == "blue\ngreen\nred\n"


@pytest.mark.parametrize("colour", ["red", "green", "blue"])
def test_label_image_classifies_with_the_frozen_graph(trained, tmp_path, colour):
    from tests.conftest import COLOURS, noisy_colour_image

    _, _, out, _, _ = trained
    image = tmp_path / f"new_{colour}.png"
    noisy_colour_image(COLOURS[colour], size=(90, 70), seed=99).save(image)
    result = _run(BIN / "label_image", "--graph", out / "retrained_graph.pb",
                  "--labels", out / "retrained_labels.txt", "--image", image)
    assert _top_label(result) == colour
    assert len(result.stdout.splitlines()) == 3


def test_label_image_classifies_with_the_saved_model_and_its_stored_labels(trained, tmp_path):
    from tests.conftest import COLOURS, noisy_colour_image

    _, _, out, _, _ = trained
    image = tmp_path / "green.jpg"
    noisy_colour_image(COLOURS["green"], seed=5).save(image)
    assert _top_label(_run(BIN / "label_image", "--graph", out / "saved_model", "--image", image)) == "green"


def test_old_label_image_flags_are_accepted(trained, tmp_path):
    from tests.conftest import COLOURS, noisy_colour_image

    _, _, out, _, _ = trained
    image = tmp_path / "blue.jpg"
    noisy_colour_image(COLOURS["blue"], seed=6).save(image)
    result = _run(BIN / "label_image", f"--graph={out / 'retrained_graph.pb'}", f"--labels={out / 'retrained_labels.txt'}",
                  f"--image={image}", "--input_layer=input", "--output_layer=final_result",
                  "--input_height=224", "--input_width=224", "--input_mean=128", "--input_std=128")
    assert _top_label(result) == "blue"
    assert "graph normalises its own input" in result.stderr


def test_frozen_graph_and_saved_model_agree(trained):
    import numpy as np

    _, _, out, _, _ = trained
    graph, saved = load_model(out / "retrained_graph.pb"), load_model(out / "saved_model")
    pixels = np.random.default_rng(0).uniform(0, 255, (3, 224, 224, 3)).astype(np.float32)
    np.testing.assert_allclose(graph.predict(pixels), saved.predict(pixels), atol=1e-5)
    assert graph.labels == ["blue", "green", "red"]


def test_labels_file_with_the_wrong_length_is_refused(trained, tmp_path):
    _, images, out, _, _ = trained
    labels = tmp_path / "two.txt"
    labels.write_text("a\nb\n")
    image = next(images.rglob("*.jpg"))
    result = _run(BIN / "label_image", "--graph", out / "retrained_graph.pb", "--labels", labels, "--image", image)
    assert result.returncode == 1
    assert "2 labels but the model has 3 outputs" in result.stderr
