"""retrain chooses (retrain.decisions.fitting) a temperature, the operating points asked for and an out-of-distribution
threshold on held-out images, and stores them with the model."""

import numpy as np
import pytest

from retrain.api import (
    DataConfig,
    DecisionConfig,
    ExportConfig,
    Reporter,
    RetrainConfig,
    TrainingConfig,
    train,
)
from retrain.cli import retrain
from retrain.data.images import load_image
from retrain.predict.prediction import load_model
from retrain.decisions.operating_points import parse_operating_point
from tests.conftest import COLOURS, noisy_colour_image, run_cli


def _validation_tree(root, count: int = 30):
    """Images of the training tree's colours, drawn with other noise: not copies of training images."""
    for name in ("red", "blue"):
        (root / name).mkdir(parents=True)
        for i in range(count):
            noisy_colour_image(COLOURS[name], seed=10_000 + i).save(root / name / f"v{i}.jpg")
    return root


def _train(tree, tmp_path, points=(), **data):
    lines = []
    config = RetrainConfig(DataConfig(tree, **data), top_layer=TrainingConfig(steps=60, random_seed=0),
                           export=ExportConfig(tmp_path / "g.pb", tmp_path / "l.txt"),
                           decisions=DecisionConfig(tuple(parse_operating_point(p) for p in points)))
    train(config, Reporter(log=lines.append, warn=lambda line: lines.append(f"warning: {line}")))
    return load_model(tmp_path / "g.pb").model_card, lines  # typed, as every reader gets it


@pytest.mark.slow
def test_retrain_stores_the_operating_point_calibration_and_ood_threshold_in_the_model_card(make_tree, tmp_path):
    tree = make_tree({"red": 40, "blue": 40})
    validation = _validation_tree(tmp_path / "validation")
    card, lines = _train(tree, tmp_path, ["red:sensitivity=0.9"], validation_dir=validation, validation_percentage=0)
    (point,) = card.points
    assert (point.label, point.target, point.value, point.chosen_on) == ("red", "sensitivity", 0.9, "validation")
    assert point.positives == 30 and point.sensitivity >= 0.9
    # the exported (calibrated) model reaches it on the images it was chosen on
    model = load_model(tmp_path / "g.pb")
    reds = sorted((validation / "red").glob("*.jpg"))
    red = model.predict(np.stack([load_image(p, (224, 224)) for p in reds]).astype(np.float32))[:, 1]
    assert (red >= point.threshold).mean() >= 0.9
    assert any(line.startswith("Operating point: red >= ") for line in lines)
    assert card.calibration.chosen_on == "validation" and card.calibration.temperature > 0
    assert card.ood.flagged_share == pytest.approx(0.05, abs=0.02)
    assert card.training_data.counts["training"]["red"] > 0
    assert "red" in card.validation_figures.auc


def test_with_too_few_validation_positives_the_top_layer_recipes_choose_on_out_of_fold_predictions(make_tree, tmp_path):
    card, lines = _train(make_tree({"red": 30, "blue": 30}), tmp_path, ["red:sensitivity=0.9"])
    warnings = [line for line in lines if line.startswith("warning: DecisionConfig.operating_points: only")]
    assert len(warnings) == 1 and "fewer than 30" in warnings[0] and "out-of-fold" in warnings[0]
    (point,) = card.points
    assert point.chosen_on == "out-of-fold training" and point.positives > 20


def test_a_mistyped_operating_point_fails_before_any_work(make_tree, tmp_path):
    tree = make_tree({"red": 3, "blue": 3})
    result = run_cli(retrain, ["--image_dir", tree, "--operating_point", "red:sensitivity=1.5",
                               "--output_graph", tmp_path / "g.pb", "--bottleneck_dir", tmp_path / "bn"])
    assert result.exit_code == 1
    assert result.output.strip() == ("error: --operating_point 'red:sensitivity=1.5': sensitivity must be above "
                                     "0 and at most 1, got 1.5")
    assert not (tmp_path / "bn").exists()


def test_an_operating_point_for_a_class_that_is_not_in_the_tree_fails_before_the_bottlenecks(make_tree, tmp_path):
    tree = make_tree({"red": 3, "blue": 3})
    result = run_cli(retrain, ["--image_dir", tree, "--operating_point", "melanoma:sensitivity=0.9",
                               "--output_graph", tmp_path / "g.pb", "--bottleneck_dir", tmp_path / "bn"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == ("error: --operating_point: no class 'melanoma'; the classes "
                                                      "are blue, red")
    assert not (tmp_path / "bn").exists()


def test_the_model_card_in_words_lists_the_operating_point(make_tree, tmp_path):
    _train(make_tree({"red": 40, "blue": 40}), tmp_path, ["red:specificity=0.8"],
           validation_dir=_validation_tree(tmp_path / "validation"))
    words = (tmp_path / "g.model_card.md").read_text()
    assert "## Operating points" in words and "red >= " in words and "for specificity 0.8" in words


@pytest.mark.slow
def test_with_patient_metadata_the_model_card_has_the_validation_figures_by_sex(make_tree, tmp_path):
    from retrain.api import BackboneChoice, PatientConfig

    tree = make_tree({"red": 20, "blue": 20})
    table = ["image_id,sex"] + [f"{c}_{i},{'female' if i % 2 else 'male'}" for c in ("red", "blue") for i in range(20)]
    (tmp_path / "meta.csv").write_text("\n".join(table) + "\n")
    config = RetrainConfig(DataConfig(tree, validation_percentage=40), BackboneChoice(image_size=64),
                           top_layer=TrainingConfig(steps=30, random_seed=0),
                           patient=PatientConfig((tmp_path / "meta.csv",)),
                           export=ExportConfig(tmp_path / "g.pb", tmp_path / "l.txt"))
    train(config, Reporter(log=lambda line: None, warn=lambda line: None))
    words = (tmp_path / "g.model_card.md").read_text()
    assert "Subgroups by sex (category)" in words and "female" in words and "male" in words
