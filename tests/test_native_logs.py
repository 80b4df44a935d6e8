"""TensorFlow's own log lines: dropped inside native_logs_silenced and kept with
RETRAIN_NATIVE_LOGS=1; neither set_operating_point nor the Python API prints any."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from retrain.native_logs import native_logs_silenced
from tests.conftest import COLOURS, noisy_colour_image

NATIVE_LINE = re.compile(r"^(WARNING: All log messages before absl|[IWEF]\d{4} |To enable the following instructions)")


def test_native_log_lines_are_dropped_inside_and_kept_outside(capfd, monkeypatch):
    monkeypatch.delenv("RETRAIN_NATIVE_LOGS", raising=False)
    os.write(2, b"before\n")
    with native_logs_silenced():
        os.write(2, b"I0000 cudart_stub.cc: Could not find cuda drivers\n")
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "before\nafter\n"


def test_retrain_native_logs_shows_them(capfd, monkeypatch):
    monkeypatch.setenv("RETRAIN_NATIVE_LOGS", "1")
    with native_logs_silenced():
        os.write(2, b"E0000 failed call to cuInit\n")
    assert "cuInit" in capfd.readouterr().err


def _console_script(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def _native_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if NATIVE_LINE.match(line) or "cuInit" in line]


@pytest.mark.slow
@pytest.mark.parametrize("extra", [[], ["--recalibrate"]])  # recalibrating saves a SavedModel again
def test_set_operating_point_on_a_saved_model_prints_no_native_log_lines(square_model, tmp_path, extra):
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "RETRAIN_NATIVE_LOGS")}
    done = subprocess.run([_console_script("set_operating_point"), "--graph", square_model / "saved_model",
                           "--image_dir", square_model / "images", "--operating_point", "red:threshold=0.5",
                           "--output", tmp_path / "copy", "--allow_training_images", *extra],  # only the logs matter
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert _native_lines(done.stderr) == [], done.stderr


@pytest.mark.slow
def test_the_python_api_prints_no_native_log_lines(tmp_path):
    images = tmp_path / "images"
    for name in ("red", "blue"):
        (images / name).mkdir(parents=True)
        for i in range(6):
            noisy_colour_image(COLOURS[name], seed=300 + 10 * len(name) + i).save(images / name / f"{i}.jpg")
    script = (
        "from pathlib import Path\n"
        "from retrain.api import DataConfig, ExportConfig, FeatureConfig, RetrainConfig, Reporter, TrainingConfig, train\n"
        f"root = Path({str(tmp_path)!r})\n"
        "quiet = Reporter(log=lambda line: None, warn=lambda line: None)\n"
        "train(RetrainConfig(DataConfig(root / 'images'), top_layer=TrainingConfig(steps=5),\n"
        "                    features=FeatureConfig(bottleneck_dir=root / 'bn'),\n"
        "                    export=ExportConfig(output_graph=root / 'g.pb', output_labels=root / 'labels.txt')), quiet)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "RETRAIN_NATIVE_LOGS")}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "g.pb").exists()
    assert _native_lines(done.stderr) == [], done.stderr
