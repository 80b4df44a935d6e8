"""Every numeric flag is checked, with its allowed range in one error line, before any slow
work; a folder flag that cannot be a folder is named by its own flag; a loss that turns NaN stops
training instead of exporting a useless model."""

from __future__ import annotations

import pytest

from tests.conftest import run_cli


def _retrain(tmp_path, image_dir, *extra):
    from retrain.cli import retrain

    return run_cli(retrain, [
        "--image_dir", image_dir, "--bottleneck_dir", tmp_path / "bn", "--output_graph", tmp_path / "out" / "g.pb",
        "--output_labels", tmp_path / "out" / "l.txt", "--how_many_training_steps", 10, "--random_seed", 1, *extra])


def _error_line(result) -> str:
    assert result.exit_code == 1, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.output
    return lines[0]


BAD_RETRAIN_FLAGS = [
    (["--learning_rate", "nan"], "--learning_rate must be a finite number > 0, got nan"),
    (["--learning_rate", "inf"], "--learning_rate must be a finite number > 0, got inf"),
    (["--learning_rate", "0"], "--learning_rate must be a finite number > 0, got 0"),
    (["--weight_decay", "nan"], "--weight_decay must be a finite number >= 0, got nan"),
    (["--weight_decay", "-1"], "--weight_decay must be a finite number >= 0"),
    (["--dropout", "nan"], "--dropout must be in [0, 1), got nan"),
    (["--label_smoothing", "1"], "--label_smoothing must be in [0, 1), got 1.0"),
    (["--validation_percentage", "nan"], "--validation_percentage must be in [0, 100), got nan"),
    (["--testing_percentage", "100"], "--testing_percentage must be in [0, 100), got 100.0"),
    (["--testing_percentage", "60", "--validation_percentage", "50"], "must leave room for training"),
    (["--eval_step_interval", "0"], "--eval_step_interval must be at least 1, got 0"),
    (["--validation_batch_size", "0"], "--validation_batch_size must be -1 (the whole validation set) or >= 1, got 0"),
    (["--validation_batch_size", "-2"], "--validation_batch_size must be -1"),
    (["--test_batch_size", "0"], "--test_batch_size must be -1 (the whole test set) or >= 1, got 0"),
    (["--intermediate_store_frequency", "-1"], "--intermediate_store_frequency must be >= 0 (0 = none), got -1"),
    (["--early_stopping_patience", "-1"], "--early_stopping_patience must be >= 0"),
    (["--tflite_output", "m.tflite", "--tflite_representative_images", "-5"],
     "--tflite_representative_images must be >= 0, got -5"),
    (["--image_size", "7"], "--image_size 7: must be at least 32"),
    (["--fine_tune_layers", "all", "--fine_tune_learning_rate", "nan"],
     "--fine_tune_learning_rate must be a finite number > 0, got nan"),
    (["--fine_tune_layers", "all", "--fine_tune_weight_decay", "inf"],
     "--fine_tune_weight_decay must be a finite number >= 0, got inf"),
    (["--fine_tune_layers", "all", "--crop_aspect", "inf"], "--crop_aspect must be a finite number"),
    (["--fine_tune_layers", "all", "--random_hue", "nan"], "--random_hue must be a percentage >= 0, got nan"),
]


@pytest.mark.parametrize("flags, expected", BAD_RETRAIN_FLAGS, ids=[" ".join(f) for f, _ in BAD_RETRAIN_FLAGS])
def test_a_bad_numeric_flag_is_refused_before_bottlenecks_are_extracted(make_tree, tmp_path, flags, expected):
    result = _retrain(tmp_path, make_tree({"red": 3, "blue": 3}), *flags)
    assert expected in _error_line(result)
    assert "Bottlenecks:" not in result.output
    assert not (tmp_path / "bn").exists()


def test_a_loss_that_turns_nan_stops_training_naming_the_step_and_exports_nothing(make_tree, tmp_path):
    result = _retrain(tmp_path, make_tree({"red": 4, "blue": 4}), "--learning_rate", "1e300",
                      "--train_batch_size", 8, "--validation_percentage", 0, "--testing_percentage", 0)
    line = _error_line(result)
    assert line.startswith("error: training diverged at step ")
    assert "try a lower --learning_rate" in line
    assert not (tmp_path / "out" / "g.pb").exists() and not (tmp_path / "out" / "l.txt").exists()


@pytest.mark.parametrize("top_k", [0, -2])
def test_label_image_requires_top_k_of_at_least_one(tmp_path, top_k):
    from retrain.cli import label_image

    image = tmp_path / "a.jpg"
    image.write_bytes(b"not read")
    assert _error_line(run_cli(label_image, ["--image", image, "--top_k", top_k])) == \
        f"error: --top_k must be at least 1, got {top_k}"


def test_label_image_on_a_folder_says_it_is_a_folder(tmp_path):
    from retrain.cli import label_image

    line = _error_line(run_cli(label_image, ["--image", tmp_path]))
    assert line.startswith(f"error: --image {tmp_path}: is a folder; give one image file")


def test_a_bottleneck_dir_that_is_a_file_is_not_reported_as_a_full_disk(make_tree, tmp_path):
    blocker = tmp_path / "bn"
    blocker.write_bytes(b"a file")
    line = _error_line(_retrain(tmp_path, make_tree({"red": 2, "blue": 2})))
    assert f"{blocker} is a file, not a folder" in line and "free some space" not in line
    assert blocker.read_bytes() == b"a file"


def test_a_bad_intermediate_graphs_dir_is_named_by_its_own_flag(make_tree, tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_bytes(b"a file")
    result = _retrain(tmp_path, make_tree({"red": 3, "blue": 3}), "--intermediate_output_graphs_dir",
                      blocker / "graphs", "--intermediate_store_frequency", 5)
    assert _error_line(result).startswith(f"error: --intermediate_output_graphs_dir {blocker / 'graphs'}")
