"""--fine_tune_layers: the split backbone, what tuning may change, the activation cache,
exports carrying the tuned weights, and flag validation."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from retrain.cli import retrain
from retrain.training import Head, TrainingConfig


@pytest.fixture
def random_lite0(tmp_path):
    from retrain.backbones import create_backbone

    return create_backbone("efficientnet_lite0", tmp_path, random_weights=True)


def _pixels(count, seed=0, size=224):
    return np.random.default_rng(seed).uniform(0, 255, (count, size, size, 3)).astype(np.float32)


@pytest.mark.parametrize("first", [0, 11, 15, 16])
def test_frozen_part_then_tuned_part_is_the_whole_network(random_lite0, first):
    module = random_lite0.module
    images = _pixels(2)
    split = module.features_from(module.activations_before(images, first), first).numpy()
    np.testing.assert_allclose(split, module.features(images).numpy(), rtol=1e-5, atol=1e-5)


def _tune(backbone, layers, steps=6):
    from retrain.fine_tuning import FineTuneConfig, fine_tune, start_block

    module = backbone.module
    first = start_block(module, layers)
    activations = module.activations_before(_pixels(8, seed=1), first).numpy()
    labels = np.array([0, 1] * 4)
    rng = np.random.default_rng(0)
    head = Head(rng.normal(0, 0.01, (1280, 2)).astype(np.float32), np.zeros(2, np.float32))
    config = FineTuneConfig(fine_tune_layers=layers, fine_tune_steps=steps, fine_tune_learning_rate=1e-3, fine_tune_batch_size=4)
    return fine_tune(module, first, head, activations, labels, activations[:4], labels[:4],
                     TrainingConfig(eval_step_interval=3, random_seed=0), config)


@pytest.mark.parametrize("layers, tuned_prefixes", [(1, ("head_",)), (3, ("head_", "block15_", "block14_"))])
def test_fine_tuning_changes_only_the_unfrozen_layers(random_lite0, layers, tuned_prefixes):
    module = random_lite0.module
    before = {name: variable.numpy().copy() for name, variable in module.layers.items()}
    _tune(random_lite0, layers)
    assert set(module.layers) == set(before)
    for name, variable in module.layers.items():
        unfrozen = name.startswith(tuned_prefixes)
        assert variable.trainable == unfrozen, name
        if unfrozen and not name.endswith("bias"):
            assert not np.array_equal(variable.numpy(), before[name]), f"{name} was not tuned"
        elif not unfrozen:
            np.testing.assert_array_equal(variable.numpy(), before[name], err_msg=f"{name} is frozen but changed")


def test_exports_carry_the_tuned_weights(random_lite0, tmp_path):
    from retrain.export import Classifier, export_frozen_graph, export_saved_model, model_metadata
    from retrain.fine_tuning import tuned_identity
    from retrain.prediction import load_model
    from retrain.tflite_export import export_classifier_tflite

    images = _pixels(3, seed=2)
    untuned_identity = random_lite0.identity
    head = Head(np.random.default_rng(3).normal(0, 0.05, (1280, 2)).astype(np.float32), np.zeros(2, np.float32))
    untuned = Classifier(random_lite0, head, "final_result").serve(images)["final_result"].numpy()

    tuned_head = _tune(random_lite0, layers=2)
    random_lite0.identity = tuned_identity(random_lite0, 2)
    assert random_lite0.identity.startswith(untuned_identity) and random_lite0.identity != untuned_identity
    classifier = Classifier(random_lite0, tuned_head, "final_result")
    in_memory = classifier.serve(images)["final_result"].numpy()
    metadata = model_metadata(random_lite0, ["a", "b"], "final_result")
    export_frozen_graph(classifier, metadata, tmp_path / "g.pb")
    export_saved_model(classifier, metadata, tmp_path / "saved")
    export_classifier_tflite(classifier, metadata, tmp_path / "saved", tmp_path / "m.tflite", "none", [])

    assert np.abs(in_memory - untuned).max() > 1e-3
    for exported in ("g.pb", "saved", "m.tflite"):
        np.testing.assert_allclose(load_model(tmp_path / exported).predict(images), in_memory, atol=1e-4, err_msg=exported)


@pytest.fixture(scope="module")
def tuned_runs(tmp_path_factory):
    """Two identical CLI runs with --fine_tune_layers 2 and one without, sharing a cache."""
    from tests.conftest import write_colour_tree

    root = tmp_path_factory.mktemp("fine_tune")
    write_colour_tree(root / "images", {"red": 8, "blue": 8})

    def run(name, *extra):
        args = ["--image_dir", root / "images", "--output_graph", root / name / "g.pb", "--output_labels", root / name / "l.txt",
                "--bottleneck_dir", root / "bn", "--how_many_training_steps", "20", "--validation_percentage", "25",
                "--random_seed", "1", *extra]
        result = CliRunner().invoke(retrain, [str(a) for a in args])
        assert result.exit_code == 0, result.output
        return result.output

    tune = ("--fine_tune_layers", "2", "--fine_tune_steps", "4", "--fine_tune_batch_size", "4", "--fine_tune_learning_rate", "0.001")
    return root, run("first", *tune), run("again", *tune), run("plain")


def test_activation_cache_is_written_once_and_reused(tuned_runs):
    root, first, again, _ = tuned_runs
    assert "Fine-tuning block 15 and the head conv (2 of 17 blocks): activations 7x7x192 per image, 0 reused, 16 computed" in first
    assert "16 reused, 0 computed" in again.split("Fine-tuning block")[1]
    folders = sorted(p.name for p in (root / "bn").iterdir())
    assert len(folders) == 2 and folders[1] == folders[0] + "-block15-input", folders
    assert sum(1 for _ in (root / "bn" / folders[1]).rglob("*.bn")) == 16
    assert sum(1 for _ in (root / "bn" / folders[0]).rglob("*.bn")) == 16  # the pretrained bottlenecks only


def test_tuned_run_reports_validation_before_and_after_and_marks_its_export(tuned_runs):
    from retrain.export import METADATA_NODE
    from retrain.prediction import load_model
    from tests.conftest import COLOURS, noisy_colour_image

    root, first, _, plain = tuned_runs
    assert "Validation AUC = " in first and "Fine-tuned validation AUC = " in first and "Fine-tune step 4:" in first
    import tensorflow as tf

    graph_def = tf.compat.v1.GraphDef.FromString((root / "first" / "g.pb").read_bytes())
    (node,) = [n for n in graph_def.node if n.name == METADATA_NODE]
    metadata = json.loads(node.attr["value"].tensor.string_val[0])
    assert metadata["fine_tune_layers"] == 2 and "-ft2-" in metadata["backbone_identity"]
    pixels = np.asarray(noisy_colour_image(COLOURS["red"], size=(224, 224), seed=99), np.float32)[None]
    tuned, untuned = (load_model(root / name / "g.pb").predict(pixels) for name in ("first", "plain"))
    assert np.abs(tuned - untuned).max() > 1e-6


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--fine_tune_layers", "-1"], "--fine_tune_layers must be 0 (off) or more"),
        (["--fine_tune_layers", "18"], "efficientnet_lite0 has 17 blocks"),
        (["--fine_tune_layers", "2", "--architecture", "resnet50"], "supported for efficientnet_lite0/1/2 only"),
        (["--fine_tune_layers", "2", "--fine_tune_steps", "0"], "--fine_tune_steps must be at least 1"),
    ],
)
def test_fine_tune_flag_mistakes_give_one_error_line(make_tree, tmp_path, extra, message):
    tree = make_tree({"red": 2, "blue": 2})
    result = CliRunner().invoke(retrain, ["--image_dir", str(tree), "--bottleneck_dir", str(tmp_path / "bn"), *extra])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.output
    assert not (tmp_path / "bn").exists()


def test_fine_tune_flags_are_in_the_help():
    result = CliRunner().invoke(retrain, ["--help"])
    for flag in ("--fine_tune_layers", "--fine_tune_steps", "--fine_tune_learning_rate", "--fine_tune_batch_size"):
        assert flag in result.output


def test_distorted_copies_are_tuned_on_and_their_activations_cached(make_tree, tmp_path):
    tree = make_tree({"red": 4, "blue": 4})
    args = ["--image_dir", tree, "--output_graph", tmp_path / "g.pb", "--output_labels", tmp_path / "l.txt",
            "--bottleneck_dir", tmp_path / "bn", "--how_many_training_steps", "10", "--validation_percentage", "25",
            "--testing_percentage", "0", "--random_seed", "1", "--flip_left_right", "--distorted_copies", "2",
            "--fine_tune_layers", "1", "--fine_tune_steps", "2", "--fine_tune_batch_size", "4"]
    result = CliRunner().invoke(retrain, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    split = next(line for line in result.output.splitlines() if line.startswith("Split: "))
    training = int(split.split()[1])
    assert "2 distorted copies per training image" in result.output
    (activations,) = (tmp_path / "bn").glob("*-block16-input")
    assert sum(1 for _ in activations.rglob("*.bn")) == 8 + 2 * training
