"""The representative images of a .tflite export, sampled one way for retrain and export_tflite."""

from pathlib import Path

import pytest

from retrain.errors import UserError
from retrain.export.tflite import representative_images

TRAINING = [Path(f"images/a/{i}.jpg") for i in range(10)]


def test_int8_and_dynamic_sample_the_count_asked_for_the_same_way_for_a_seed():
    for quantization in ("int8", "dynamic"):
        chosen = representative_images(quantization, TRAINING, 3, seed=4)
        assert len(chosen) == 3 and set(chosen) <= set(TRAINING)
        assert chosen == representative_images(quantization, TRAINING, 3, seed=4)
    assert representative_images("int8", TRAINING, 3, None) == representative_images("int8", TRAINING, 3, 0)


def test_dynamic_samples_nothing_without_a_training_tree_or_a_count():
    assert representative_images("dynamic", None, 3, 0) == []
    assert representative_images("dynamic", TRAINING, 0, 0) == []


def test_float_exports_sample_nothing():
    assert representative_images("none", TRAINING, 3, 0) == [] and representative_images("float16", TRAINING, 3, 0) == []


def test_int8_without_images_to_calibrate_on_is_an_error():
    with pytest.raises(UserError, match="representative set for int8 calibration is empty"):
        representative_images("int8", TRAINING, 0, 0)
    with pytest.raises(UserError, match="no training images"):
        representative_images("int8", [], 3, 0)
