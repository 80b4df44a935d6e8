"""Every numeric flag is checked, with its allowed range in one error line, before any slow
work; a loss that turns NaN stops training instead of exporting a useless model."""

from __future__ import annotations

import struct
import warnings
import zlib

import numpy as np
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


def test_the_top_layer_stops_at_the_step_whose_update_overflows():
    from retrain.errors import UserError
    from retrain.train.top_layer import TrainingConfig, train_top_layer

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(20, 8)).astype(np.float32) * 1e3, np.arange(20) % 2
    with pytest.raises(UserError, match=r"^training diverged at step \d+: the loss became NaN or infinite"):
        train_top_layer(x, y, x[:0], y[:0], 2, TrainingConfig(steps=50, learning_rate=1e38, train_batch_size=4,
                                                              random_seed=0))


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


def test_a_mean_auc_over_classes_missing_from_the_set_is_nan_without_a_numpy_warning():
    from retrain.api.stages import format_auc

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        line = format_auc("Final test", np.full((3, 3), 1 / 3), np.zeros(3, int), ["a", "b", "c"])
    assert line.endswith("mean nan (N=3)")


def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares its size and holds no pixels: enough for the size check."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def test_a_too_large_image_is_refused_with_its_size_and_the_limit(tmp_path):
    from retrain.data.images import ImageError, load_image

    path = tmp_path / "huge.png"
    path.write_bytes(_png_header(13000, 10000))
    with pytest.raises(ImageError, match=r"too large: 13000x10000 pixels \(130\.0 megapixels; the limit is 120 megapixels\)"):
        load_image(path, 32)


def test_a_110_megapixel_image_is_within_the_limit(tmp_path):
    from retrain.data.images import ImageError, load_image

    path = tmp_path / "big.png"
    path.write_bytes(_png_header(11000, 10000))
    with pytest.raises(ImageError) as info:  # no pixels in the file, but not refused for its size
        load_image(path, 32)
    assert "too large" not in str(info.value)


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


def test_ages_outside_0_to_120_are_missing_with_one_warning_per_file_and_column(make_tree, tmp_path):
    image_dir = make_tree({"red": 4, "blue": 4})
    csv = tmp_path / "meta.csv"
    ids = [p.stem for p in sorted(image_dir.rglob("*.jpg"))]
    ages = ["-3", "200", *["50"] * (len(ids) - 2)]
    csv.write_text("image_id,age_approximate,sex\n" + "".join(f"{i},{a},male\n" for i, a in zip(ids, ages)))
    before = csv.read_bytes()
    result = _retrain(tmp_path, image_dir, "--metadata", csv, "--validation_percentage", 0, "--testing_percentage", 0)
    assert result.exit_code == 0, result.output
    warned = [line for line in result.stderr.splitlines() if "outside 0..120" in line]
    expected = f"warning: {csv}: column 'age_approximate' has 2 age(s) outside 0..120 (e.g. -3, 200); treated as missing"
    assert warned == [expected]
    assert "Metadata column age_approximate: numeric, mean 50.0, sd 1.0 (2 of 8 missing)" in result.stdout
    assert csv.read_bytes() == before


def test_prepare_isic_reports_a_bad_ground_truth_row_once(tmp_path):
    from retrain.data.isic import prepare_isic
    from retrain.errors import UserError
    from tests.data.test_isic import ROWS, write_challenge

    data, truth = write_challenge(tmp_path / "challenge", ROWS + [("ISIC_0000006", "2", "0")])
    metadata = tmp_path / "meta.csv"
    metadata.write_text("image_id,age_approximate,sex\nISIC_0000006,55,female\n")
    with pytest.raises(UserError) as info:
        prepare_isic(data, truth, tmp_path / "out", metadata)
    assert str(info.value).count("ISIC_0000006") == 1 and "1 problem(s)" in str(info.value)


def test_prepare_isic_calls_a_negative_age_out_of_range_not_a_non_number(tmp_path):
    from retrain.data.isic import prepare_isic
    from retrain.errors import UserError
    from tests.data.test_isic import write_challenge

    data, truth = write_challenge(tmp_path / "challenge")
    metadata = tmp_path / "meta.csv"
    metadata.write_text("image_id,age_approximate,sex\nISIC_0000001,-3,female\nISIC_0000002,old,male\n")
    with pytest.raises(UserError) as info:
        prepare_isic(data, truth, tmp_path / "out", metadata)
    text = str(info.value)
    assert "ISIC_0000001: age_approximate must be between 0 and 120 years, got '-3'" in text
    assert "ISIC_0000002: age_approximate must be a number or 'unknown', got 'old'" in text


def test_fine_tuning_whose_loss_turns_nan_stops_naming_the_epoch_and_keeps_no_checkpoint(make_tree, tmp_path):
    from retrain.backbones import create_backbone
    from retrain.errors import UserError
    from retrain.reporter import Reporter
    from retrain.train.fine_tuning import (
        FineTuneConfig,
        RunFolder,
        TuningData,
        fine_tune,
    )
    from retrain.train.top_layer import TrainingConfig
    from tests.train.test_fine_tuning import _clone, _images, _starting_head

    backbone = create_backbone("efficientnet_lite0", tmp_path, random_weights=True)
    paths, labels = _images(make_tree)
    pairs = list(zip(paths, labels.tolist()))
    config = FineTuneConfig(layers=1, epochs=1, learning_rate=1e38, batch_size=4, weight_decay=0.0)
    with pytest.raises(UserError, match=r"^fine-tuning diverged in epoch 1: the training loss became NaN or infinite; "
                                        r"try a lower FineTuneConfig.learning_rate \(now 1e\+38\)"):
        fine_tune(backbone, lambda: _clone(backbone), _starting_head(backbone),
                  TuningData(pairs, pairs[:4], 2, backbone.input_size), config, TrainingConfig(random_seed=0),
                  RunFolder(tmp_path / "run", "fp"), Reporter(log=print, warn=print))
    assert not (tmp_path / "run" / "checkpoint.npz").exists()
