"""evaluate on a model retrained (for real, in process) on colour classes named like ISIC's."""

import csv
import json

import pytest
from click.testing import CliRunner

from retrain.api.config import DataConfig, ExportConfig, FeatureConfig, RetrainConfig
from retrain.api.training import train as run_retrain
from retrain.cli import evaluate
from retrain.reporter import Reporter
from retrain.train.top_layer import TrainingConfig
from tests.conftest import noisy_colour_image

CLASSES = {"melanoma": (150, 40, 40), "nevus": (60, 160, 60), "seborrheic_keratosis": (50, 60, 170)}


def _tree(root, per_class, seed_offset=0):
    for name, colour in CLASSES.items():
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            noisy_colour_image(colour, seed=seed_offset + i).save(root / name / f"ISIC_{seed_offset + i:07d}_{name[:3]}.jpg")
    return root


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    train = _tree(root / "train", 8)
    config = RetrainConfig(
        DataConfig(image_dir=train),
        export=ExportConfig(output_graph=root / "graph.pb", output_labels=root / "labels.txt"),
        features=FeatureConfig(bottleneck_dir=root / "bn"),
        top_layer=TrainingConfig(steps=120, learning_rate=0.05, random_seed=0),
    )
    run_retrain(config, Reporter(log=lambda _: None, warn=lambda _: None))
    return root, _tree(root / "held_out", 4, seed_offset=100)


def _invoke(args):
    result = CliRunner().invoke(evaluate, [str(a) for a in args])
    assert "Traceback" not in result.output
    return result


@pytest.mark.slow
def test_prints_and_writes_the_metrics(model, tmp_path):
    root, held_out = model
    out = tmp_path / "m.json"
    result = _invoke(["--graph", root / "graph.pb", "--labels", root / "labels.txt", "--image_dir", held_out, "--json", out,
                      "--plot", tmp_path / "roc.png", "--predictions", tmp_path / "p.csv"])
    assert result.exit_code == 0, result.output
    for text in ["N = 12", "Accuracy = 100.0%", "Balanced accuracy", "Confusion matrix", "seborrheic keratosis"]:
        assert text in result.stdout
    metrics = json.loads(out.read_text())
    assert metrics["n"] == 12 and metrics["accuracy"] == 1.0
    assert metrics["auc"] == {"melanoma": 1.0, "nevus": 1.0, "seborrheic keratosis": 1.0}
    assert metrics["confusion_matrix"] == [[4, 0, 0], [0, 4, 0], [0, 0, 4]]
    assert set(metrics["per_class"]["nevus"]) == {"precision", "recall", "f1", "support"}
    assert (tmp_path / "roc.png").read_bytes()[:4] == b"\x89PNG"
    rows = list(csv.DictReader((tmp_path / "p.csv").read_text().splitlines()))
    assert len(rows) == 12 and all(r["true_label"] == r["predicted_label"] for r in rows)


@pytest.mark.slow
def test_a_plot_without_suffix_is_written_as_png_and_the_line_names_that_file(model, tmp_path):
    root, held_out = model
    result = _invoke(["--graph", root / "graph.pb", "--image_dir", held_out, "--plot", tmp_path / "roc"])
    assert result.exit_code == 0, result.output
    assert f"Wrote ROC curves to {tmp_path / 'roc.png'}" in result.stdout.splitlines()
    assert (tmp_path / "roc.png").read_bytes()[:4] == b"\x89PNG" and not (tmp_path / "roc").exists()


@pytest.mark.slow
def test_writes_the_isic_submission_from_the_three_class_model(model, tmp_path):
    root, held_out = model
    out = tmp_path / "submission.csv"
    result = _invoke(["--graph", root / "graph.pb", "--image_dir", held_out, "--predictions", out, "--isic_submission"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out.read_text().splitlines()))
    assert list(rows[0]) == ["image_id", "melanoma", "seborrheic_keratosis"]
    melanoma_rows = [r for r in rows if r["image_id"].endswith("_mel")]
    assert len(rows) == 12 and all(float(r["melanoma"]) > 0.5 for r in melanoma_rows)


@pytest.mark.slow
def test_a_folder_whose_label_the_model_lacks_is_an_error(model, tmp_path):
    root, _ = model
    (tmp_path / "basal_cell").mkdir()
    noisy_colour_image((1, 2, 3)).save(tmp_path / "basal_cell" / "x.jpg")
    result = _invoke(["--graph", root / "graph.pb", "--image_dir", tmp_path])
    assert result.exit_code == 1
    assert "class 'basal cell' is not one of the model's labels" in result.stderr


def test_binary_models_report_sensitivity_and_specificity(tmp_path):
    import numpy as np

    from retrain.metrics import evaluate_probabilities, format_report

    report = format_report(
        evaluate_probabilities(np.array([[0.8, 0.2], [0.3, 0.7]]), np.array([0, 1]), ["melanoma", "other"]),
        ["melanoma", "other"],
    )
    assert "Positive class: melanoma" in report and "Specificity at 95% sensitivity = 1.000" in report
