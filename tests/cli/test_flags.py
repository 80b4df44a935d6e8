"""One behaviour test per flag that had none: the real retrain, label_image and evaluate
commands on tiny colour trees at 64 px, each test checking what its flag visibly does
(printed lines, files, the model card in the exported graph, probabilities).

Every retrain run shares one bottleneck cache and the same top-layer settings, so a run
that differs from the plain one in one flag differs from it in that flag only."""

from __future__ import annotations

import csv
import json
import shutil
import zlib
from pathlib import Path

import numpy as np
import pytest

from retrain.cli import evaluate, label_image, retrain
from tests.conftest import COLOURS, noisy_colour_image, run_cli, write_colour_tree

pytestmark = pytest.mark.slow

SIZE = 64  # --image_size: EfficientNet-Lite0 at 64 px keeps every run, fine-tuning included, to seconds
STEPS = 60
FINE_TUNE = {"--fine_tune_learning_rate": 0.01, "--fine_tune_weight_decay": 0.02, "--crop_aspect": 1.5,
             "--random_contrast": 30, "--random_saturation": 40}


def _held_out_tree(root: Path, per_class: int, tag: str) -> Path:
    """Colour images unlike any training image (their own noise seeds)."""
    for name, colour in COLOURS.items():
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            noisy_colour_image(colour, seed=zlib.crc32(f"{tag}_{name}_{i}".encode())).save(root / name / f"{tag}_{name}_{i}.jpg")
    return root


class Runs:
    """The trees, the shared cache and the plain model, for one module."""

    def __init__(self, root: Path):
        self.root = root
        self.train = write_colour_tree(root / "train", {"blue": 6, "green": 6, "red": 6})
        self.validation = _held_out_tree(root / "validation", 2, "val")
        self.test = _held_out_tree(root / "test", 2, "test")
        self.grey = root / "grey"  # two classes of one and the same grey picture: the image says nothing
        self.grey_picture = root / "grey.jpg"
        noisy_colour_image((128, 128, 128), seed=3).save(self.grey_picture)
        for label in ("old", "young"):
            (self.grey / label).mkdir(parents=True)
            for i in range(10):
                shutil.copy(self.grey_picture, self.grey / label / f"{label}{i}.jpg")

    def retrain(self, name: str, *extra, trees=None):
        """retrain with the shared settings plus `extra`, by default on the colour trees (--image_dir,
        --validation_dir, --test_dir); returns (the click result, the output folder)."""
        out = self.root / name
        trees = trees or ["--image_dir", self.train, "--validation_dir", self.validation, "--test_dir", self.test]
        result = run_cli(retrain, [
            *trees, "--output_graph", out / "g.pb", "--output_labels", out / "labels.txt", "--bottleneck_dir", self.root / "bn",
            "--image_size", SIZE, "--how_many_training_steps", STEPS, "--random_seed", 5, *extra,
        ])
        assert result.exit_code == 0, result.output
        return result, out

    def grey_trees(self, validation_percentage=0):
        return ["--image_dir", self.grey, "--validation_percentage", validation_percentage, "--testing_percentage", 0]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    runs = Runs(tmp_path_factory.mktemp("flags"))
    runs.plain, runs.plain_dir = runs.retrain("plain")
    return runs


@pytest.fixture(scope="module")
def fine_tuned(runs):
    """One fine-tuning run (the last block, one batch of 4) with every fine-tuning flag changed."""
    flags = [str(part) for pair in FINE_TUNE.items() for part in pair]
    return runs.retrain("fine_tuned", "--fine_tune_layers", 1, "--fine_tune_steps", 1, "--fine_tune_batch_size", 4, *flags)


def _model_card(graph: Path) -> dict:
    import tensorflow as tf

    from retrain.card.formats import MODEL_CARD_NODE

    graph_def = tf.compat.v1.GraphDef.FromString(graph.read_bytes())
    (node,) = [n for n in graph_def.node if n.name == MODEL_CARD_NODE]
    return json.loads(node.attr["value"].tensor.string_val[0])


def _scores(graph: Path, image: Path, *extra) -> dict[str, float]:
    result = run_cli(label_image, ["--graph", graph, "--image", image, "--json", *extra])
    assert result.exit_code == 0, result.output
    return {p["label"]: p["score"] for p in json.loads(result.stdout)["predictions"]}


def _uncalibrated(graph: Path, image: Path) -> dict[str, float]:
    """The scores as the top layer trained them: the stored temperature undone (softmax(T log p))."""
    scores = _scores(graph, image)
    temperature = _model_card(graph)["calibration"]["temperature"]
    powered = {label: score ** temperature for label, score in scores.items()}
    return {label: value / sum(powered.values()) for label, value in powered.items()}


def _line(output: str, start: str) -> str:
    (line,) = [line for line in output.splitlines() if line.startswith(start)]
    return line


def _predict(graph: Path, paths: list[Path]) -> np.ndarray:
    from retrain.data.images import load_image
    from retrain.predict.prediction import load_model

    return load_model(graph).predict(np.stack([load_image(p, SIZE) for p in paths]).astype(np.float32))


# --- retrain: the top layer -------------------------------------------------------------------


def test_class_weights_tilt_look_alike_images_towards_the_heavier_class(runs):
    """Every image of both classes is the same picture, so the loss is least at P(old) = 1/2
    unweighted, and at 3 / (3 + 1) when an old image weighs 3."""
    converge = ["--learning_rate", 0.002]  # steady: the features' squared length is ~300
    weighted, weighted_dir = runs.retrain("class_weights", "--class_weights", "old=3", *converge, trees=runs.grey_trees())
    assert "Class weights: old 3, young 1" in weighted.stdout, weighted.stdout
    plain, plain_dir = runs.retrain("grey_plain", *converge, trees=runs.grey_trees())
    assert "Class weights" not in plain.stdout
    assert _uncalibrated(weighted_dir / "g.pb", runs.grey_picture)["old"] == pytest.approx(0.75, abs=0.05)
    assert _uncalibrated(plain_dir / "g.pb", runs.grey_picture)["old"] == pytest.approx(0.5, abs=0.05)
    # calibrated on validation images that are half old, half young, the weighted model leans less
    assert 0.5 < _scores(weighted_dir / "g.pb", runs.grey_picture)["old"] < 0.75


def test_class_weights_balanced_weighs_each_class_by_how_rare_it_is_in_training(runs):
    tree = write_colour_tree(runs.root / "imbalanced", {"blue": 2, "green": 6, "red": 4})
    result, _ = runs.retrain("balanced", "--class_weights", "balanced",
                             trees=["--image_dir", tree, "--validation_percentage", 0, "--testing_percentage", 0])
    # n / (classes * count): 12 / (3 * 2) = 2, 12 / (3 * 6) = 0.667, 12 / (3 * 4) = 1
    assert "Class weights: blue 2, green 0.667, red 1" in result.stdout, result.stdout


def test_metadata_fusion_concat_is_recorded_and_the_metadata_decides_between_look_alike_classes(runs, tmp_path):
    """Every image of both classes is the same picture (so --keep_duplicates keeps the validation set); only
    the age column tells them apart."""
    rows = [f"{label}{i},{age + i % 3}" for label, age in (("old", 75), ("young", 25)) for i in range(10)]
    (tmp_path / "ages.csv").write_text("image_id,age\n" + "\n".join(rows) + "\n")
    result, out = runs.retrain("concat", "--metadata", tmp_path / "ages.csv", "--metadata_fusion", "concat",
                               "--how_many_training_steps", 2000, "--learning_rate", 0.005, "--keep_duplicates",
                               trees=runs.grey_trees(20))
    assert "Validation with patient metadata AUC = 1.000" in result.stdout, result.stdout
    card = _model_card(out / "g.pb")["patient_metadata"]
    assert card["fusion"] == "concat" and card["columns"] == ["age"]
    assert _scores(out / "g.pb", runs.grey_picture, "--metadata", "age=76")["old"] > 0.8
    assert _scores(out / "g.pb", runs.grey_picture, "--metadata", "age=24")["young"] > 0.8


def _summaries(folder: Path) -> dict[str, dict[int, float]]:
    """validation/<tag> -> {step: value} from the TensorBoard event files retrain wrote."""
    import tensorflow as tf

    scalars: dict[str, dict[int, float]] = {}
    for events in folder.rglob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(events)):
            for value in event.summary.value:
                tag = f"{events.parent.name}/{value.tag}"
                scalars.setdefault(tag, {})[event.step] = float(tf.make_ndarray(value.tensor))
    return scalars


def test_early_stopping_metric_loss_keeps_the_step_with_the_lowest_validation_loss(runs):
    result, _ = runs.retrain("early_loss", "--early_stopping_patience", 2, "--early_stopping_metric", "loss",
                             "--summaries_dir", runs.root / "early_loss" / "summaries")
    scalars = _summaries(runs.root / "early_loss" / "summaries")
    loss, auc = scalars["validation/cross_entropy"], scalars["validation/auc"]
    best_loss = min(loss, key=lambda step: (loss[step], step))
    first_best_auc = min(step for step in auc if auc[step] == max(auc.values()))
    assert best_loss != first_best_auc  # what --early_stopping_metric auc would keep
    line = _line(result.stdout, "Early stopping: ")
    assert line == f"Early stopping: kept the top layer from step {best_loss}, best validation loss"
    every_evaluation = [*range(0, STEPS, 10), STEPS - 1]  # --eval_step_interval 10, and the last step
    later = [step for step in every_evaluation if step > best_loss]
    assert sorted(loss) == [step for step in every_evaluation if step <= best_loss] + later[:2]  # stopped after 2 worse


def _test_lines(output: str) -> tuple[str, str]:
    return _line(output, "Final test accuracy = "), _line(output, "Final test AUC")


def test_test_batch_size_scores_that_many_test_images(runs):
    result, _ = runs.retrain("test_batch", "--test_batch_size", 4)
    accuracy, auc = _test_lines(result.stdout)
    assert accuracy.endswith("(N=4)") and auc.endswith("(N=4)")
    assert all(line.endswith("(N=6)") for line in _test_lines(runs.plain.stdout))  # default -1: the whole test set


def test_print_misclassified_test_images_lists_each_wrong_test_image_with_its_predicted_label(runs):
    test = _held_out_tree(runs.root / "mislabelled_test", 2, "mis")
    wrong = test / "red" / "really_blue.jpg"
    noisy_colour_image(COLOURS["blue"], seed=11).save(wrong)
    result, _ = runs.retrain("misclassified", "--print_misclassified_test_images",
                             trees=["--image_dir", runs.train, "--validation_dir", runs.validation, "--test_dir", test])
    lines = result.stdout.splitlines()
    start = lines.index("=== MISCLASSIFIED TEST IMAGES ===")
    assert lines[start + 1] == f"{wrong}  blue"
    assert lines[start + 2].startswith("Wrote ")  # the only one
    assert "Final test accuracy = 85.7% (N=7)" in result.stdout
    assert "MISCLASSIFIED" not in runs.plain.stdout


def test_final_tensor_name_names_the_output_node_that_label_image_then_reads(runs):
    import tensorflow as tf

    _, out = runs.retrain("tensor_name", "--final_tensor_name", "colour_scores")
    graph_def = tf.compat.v1.GraphDef.FromString((out / "g.pb").read_bytes())
    ops = {node.name: node.op for node in graph_def.node}
    assert ops.get("colour_scores") == "Softmax" and "final_result" not in ops
    assert _model_card(out / "g.pb")["output_name"] == "colour_scores"
    image = runs.test / "green" / "test_green_0.jpg"
    scores = _scores(out / "g.pb", image)
    assert max(scores, key=scores.get) == "green"
    plain = _scores(runs.plain_dir / "g.pb", image)
    assert scores == pytest.approx(plain, abs=1e-5)  # the same model under another name


# --- label_image and evaluate ----------------------------------------------------------------


def test_top_k_prints_that_many_labels_best_first(runs):
    image = runs.test / "red" / "test_red_1.jpg"

    def lines(*extra):
        result = run_cli(label_image, ["--graph", runs.plain_dir / "g.pb", "--image", image, *extra])
        assert result.exit_code == 0, result.output
        return [(line.split(" (score=")[0], float(line.split("score=")[1].rstrip(")"))) for line in result.stdout.splitlines()]

    every = lines()  # the default 5, but the model has 3 classes
    assert sorted(label for label, _ in every) == ["blue", "green", "red"] and every[0][0] == "red"
    assert [score for _, score in every] == sorted((score for _, score in every), reverse=True)
    assert lines("--top_k", 2) == every[:2]
    assert lines("--top_k", 1) == every[:1]


def test_evaluate_with_several_graphs_reports_each_model_as_it_would_alone(runs, tmp_path):
    _, short_dir = runs.retrain("short", "--how_many_training_steps", 2, "--learning_rate", 0.001)
    graphs = [runs.plain_dir / "g.pb", short_dir / "g.pb"]
    both = run_cli(evaluate, ["--graph", graphs[0], "--graph", graphs[1], "--image_dir", runs.test,
                              "--json", tmp_path / "both.json", "--predictions", tmp_path / "both.csv"])
    assert both.exit_code == 0, both.output
    assert [line for line in both.stdout.splitlines() if line.startswith("== ")] == [f"== {g}" for g in graphs]
    metrics = json.loads((tmp_path / "both.json").read_text())
    assert list(metrics) == [str(g) for g in graphs]
    for index, graph in enumerate(graphs, start=1):
        alone = run_cli(evaluate, ["--graph", graph, "--image_dir", runs.test, "--json", tmp_path / f"{index}.json",
                                   "--predictions", tmp_path / f"{index}.csv"])
        assert alone.exit_code == 0, alone.output
        assert metrics[str(graph)] == json.loads((tmp_path / f"{index}.json").read_text())
        assert (tmp_path / f"both_{index}.csv").read_text() == (tmp_path / f"{index}.csv").read_text()
        assert f"== {graph}\n" + alone.stdout.split("\n", 1)[1].split("\nWrote ")[0] in both.stdout
    rows = [list(csv.DictReader((tmp_path / f"both_{i}.csv").read_text().splitlines())) for i in (1, 2)]
    assert rows[0] != rows[1]  # two different models, not one read twice
    assert metrics[str(graphs[0])]["accuracy"] == 1.0


# --- fine-tuning flags: the settings reach the optimiser and the augmentation, and the model card ---


def _fine_tune_line(output: str) -> str:
    return _line(output, "Fine-tuning the last 1 blocks of efficientnet_lite0")


def test_fine_tune_learning_rate_sets_adamw_s_step_and_moves_the_model(runs, fine_tuned):
    result, out = fine_tuned
    assert "AdamW at 0.01 (cosine decay" in _fine_tune_line(result.stdout)
    assert _model_card(out / "g.pb")["fine_tuning"]["learning_rate"] == 0.01
    images = sorted(runs.validation.rglob("*.jpg"))
    plain = _predict(runs.plain_dir / "g.pb", images)  # the same top layer, never fine-tuned
    assert np.abs(_predict(out / "g.pb", images) - plain).max() > 1e-3
    still, still_dir = runs.retrain("fine_tuned_still", "--fine_tune_layers", 1, "--fine_tune_steps", 1,
                                    "--fine_tune_batch_size", 4, "--fine_tune_learning_rate", 1e-12)
    assert "AdamW at 1e-12 (cosine decay" in _fine_tune_line(still.stdout)
    np.testing.assert_allclose(_predict(still_dir / "g.pb", images), plain, atol=1e-4)


def test_fine_tune_weight_decay_sets_adamw_s_decay(fine_tuned):
    result, out = fine_tuned
    assert "weight decay 0.02)" in _fine_tune_line(result.stdout)
    assert _model_card(out / "g.pb")["fine_tuning"]["weight_decay"] == 0.02


@pytest.mark.parametrize("flag, described", [
    ("--crop_aspect", "crop 100-100% of the area, aspect up to x1.5"),
    ("--random_contrast", "contrast +/-30%"),
    ("--random_saturation", "saturation +/-40%"),
])
def test_fine_tuning_augmentation_flag_is_applied_and_recorded(fine_tuned, flag, described):
    result, out = fine_tuned
    assert described in _fine_tune_line(result.stdout).split("augmentation: ")[1]
    assert described in _model_card(out / "g.pb")["fine_tuning"]["augmentation"]
