"""A model trained with --colour_constancy does Shades of Gray itself in every format: the .pb,
the SavedModel and each .tflite agree with one another through label_image's own loading, a
tinted copy of an image gets nearly the probabilities of the image, and the model card says so."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from retrain.cli import export_tflite, retrain
from retrain.card.formats import sidecar_path
from tests.conftest import run_cli

TINT = np.array([1.35, 0.95, 0.6])  # a warm lamp: far more than dermoscopes differ by
SIDE = 96


def lesion(shape: str, seed: int) -> np.ndarray:
    """Skin with a dark lesion: a disc or a bar, whose shape (not colour) is the class; an ellipse
    between the two is where the probabilities are not saturated, so a change shows."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SIDE, :SIDE]
    cy, cx = rng.integers(36, 60, 2)
    radius = rng.integers(14, 22)
    spot = {"disc": (yy - cy) ** 2 + (xx - cx) ** 2 < radius ** 2,
            "bar": (np.abs(yy - cy) < radius // 3) & (np.abs(xx - cx) < 2 * radius),
            "ellipse": ((yy - cy) / (0.6 * radius)) ** 2 + ((xx - cx) / (1.4 * radius)) ** 2 < 1}[shape]
    skin = np.array([170.0, 125.0, 115.0]) * rng.uniform(0.85, 1.05) + rng.normal(0, 8, (SIDE, SIDE, 3))
    return np.clip(np.where(spot[..., None], skin * 0.4, skin), 0, 255)


def tinted(image: np.ndarray) -> np.ndarray:
    """Under another illuminant of the same norm (Shades of Gray keeps its norm as brightness)."""
    def illuminant(x):
        return np.power(np.mean(np.power(x, 6), axis=(0, 1)), 1 / 6)

    tint = TINT * np.linalg.norm(illuminant(image)) / np.linalg.norm(illuminant(image * TINT))
    return np.clip(image * tint, 0, 255)


def save(pixels: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.round(pixels).astype(np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def lesions(tmp_path_factory):
    root = tmp_path_factory.mktemp("lesions")
    for shape in ("disc", "bar"):
        for i in range(12):
            save(lesion(shape, seed=i + (100 if shape == "bar" else 0)), root / "train" / shape / f"{shape}_{i}.png")
    pairs = [(save(image, root / "check" / f"{shape}_{i}.png"), save(tinted(image), root / "check" / f"{shape}_{i}_tinted.png"))
             for shape in ("disc", "bar", "ellipse") for i, image in enumerate(lesion(shape, seed=500 + i) for i in range(4))]
    return root, pairs


def _train(root: Path, name: str, *extra) -> Path:
    out = root / name
    result = run_cli(retrain, [
        "--image_dir", root / "train", "--validation_percentage", 0, "--testing_percentage", 0,
        "--bottleneck_dir", root / "bottlenecks", "--how_many_training_steps", 60, "--learning_rate", 0.02,
        "--random_seed", 1, "--output_graph", out / "graph.pb", "--output_labels", out / "labels.txt",
        "--saved_model_dir", out / "saved_model", "--tflite_output", out / "none.tflite", *extra])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def models(lesions):
    root, _ = lesions
    constant = _train(root, "constant", "--colour_constancy")
    result = run_cli(export_tflite, ["--saved_model_dir", constant / "saved_model", "--output", constant / "int8.tflite",
                                     "--quantization", "int8", "--image_dir", root / "train", "--representative_images", 12])
    assert result.exit_code == 0, result.output
    return {"constant": constant, "plain": _train(root, "plain")}


def probabilities(model: Path, images: list[Path], tta: bool = False) -> np.ndarray:
    """[images, classes] as label_image reads them: retrain.api.load, retrain's decoding and resizing."""
    from retrain.api import load

    classifier = load(model, tta=tta)
    rows = []
    for result in classifier(images, top_k=len(classifier.labels)):
        scores = {p.label: p.score for p in result.predictions}
        rows.append([scores[label] for label in sorted(scores)])
    return np.array(rows)


def formats(folder: Path) -> dict[str, Path]:
    return {"pb": folder / "graph.pb", "saved_model": folder / "saved_model", "none": folder / "none.tflite",
            "int8": folder / "int8.tflite"}


@pytest.mark.slow
def test_every_format_of_a_colour_constancy_model_agrees_with_the_frozen_graph(models, lesions):
    images = [path for pair in lesions[1] for path in pair]
    found = {name: probabilities(path, images) for name, path in formats(models["constant"]).items()}
    reference = found.pop("pb")
    for name, tolerance in (("saved_model", 1e-5), ("none", 1e-4), ("int8", 0.06)):
        assert np.abs(found[name] - reference).max() < tolerance, name
        assert (found[name].argmax(1) == reference.argmax(1)).mean() >= 0.9, name


@pytest.mark.slow
def test_a_tinted_copy_gets_nearly_the_untinted_images_probabilities_only_with_colour_constancy(models, lesions):
    plain_images, tinted_images = [pair[0] for pair in lesions[1]], [pair[1] for pair in lesions[1]]
    change = {}
    for variant in ("constant", "plain"):
        for name, path in formats(models[variant]).items():
            if path.exists():
                change[variant, name] = np.abs(probabilities(path, plain_images) - probabilities(path, tinted_images)).mean()
    for name in ("pb", "saved_model", "none"):
        assert change["constant", name] < 0.02, change
        assert change["plain", name] > 4 * change["constant", name], change
    assert change["constant", "int8"] < 0.05, change
    with_tta = np.abs(probabilities(models["constant"] / "graph.pb", plain_images, tta=True)
                      - probabilities(models["constant"] / "graph.pb", tinted_images, tta=True)).mean()
    assert with_tta < 0.02


@pytest.mark.slow
def test_a_fine_tuned_colour_constancy_model_ignores_a_tint(lesions):
    root, pairs = lesions
    out = root / "tuned"
    result = run_cli(retrain, [
        "--image_dir", root / "train", "--validation_percentage", 0, "--testing_percentage", 0,
        "--bottleneck_dir", root / "bottlenecks", "--how_many_training_steps", 30, "--random_seed", 1,
        "--fine_tune_layers", 2, "--fine_tune_epochs", 1, "--colour_constancy",
        "--output_graph", out / "graph.pb", "--output_labels", out / "labels.txt"])
    assert result.exit_code == 0, result.output
    change = np.abs(probabilities(out / "graph.pb", [a for a, _ in pairs]) - probabilities(out / "graph.pb", [b for _, b in pairs]))
    assert change.mean() < 0.02


@pytest.mark.slow
def test_the_model_card_of_every_format_records_colour_constancy(models):
    from retrain.predict.prediction import load_model

    for name, path in formats(models["constant"]).items():
        card = load_model(path).model_card
        assert card.colour_constancy and card.colour_constancy.startswith("Shades of Gray, Minkowski p = 6"), name
        assert card.backbone_identity.endswith("-shades_of_gray6")
    assert "colour_constancy" not in json.loads(sidecar_path(models["plain"] / "none.tflite").read_text())
    assert "colour constancy inside the model" in (models["constant"] / "graph.model_card.md").read_text()


@pytest.mark.slow
def test_the_bottleneck_cache_is_not_shared_between_colour_constancy_on_and_off(models, lesions):
    root, _ = lesions
    folders = sorted(path.name for path in (root / "bottlenecks").iterdir() if path.is_dir())
    assert len(folders) == 2 and sum(name.endswith("-shades_of_gray6-p2") for name in folders) == 1, folders
    from retrain.features.cache import BottleneckCache

    keys = [BottleneckCache(root / "bottlenecks" / name, 1280).keys() for name in folders]  # Lite0's 1280 features
    assert keys[0] == keys[1] and len(keys[0]) >= 24, [len(k) for k in keys]  # the same images, features of each
