"""retrain from Python: train() does what the command does and returns what it found."""

from pathlib import Path

import pytest

from retrain.api import (
    DataConfig,
    ExportConfig,
    Reporter,
    RetrainConfig,
    TrainingConfig,
    UserError,
    train,
)
from retrain.cli import retrain
from retrain.cli.fields import in_flags
from tests.conftest import run_cli


def test_train_exports_a_model_and_returns_the_classes_and_test_figures(make_tree, tmp_path):
    tree = make_tree({"red": 12, "green": 12, "blue": 12})
    lines = []
    result = train(RetrainConfig(DataConfig(tree), top_layer=TrainingConfig(steps=30, random_seed=0),
                                 export=ExportConfig(tmp_path / "g.pb", tmp_path / "l.txt")),
                   Reporter(log=lines.append, warn=lines.append))
    assert result.labels == ["blue", "green", "red"]
    assert result.files.graph == tmp_path / "g.pb" and result.files.graph.stat().st_size > 1000
    assert (tmp_path / "l.txt").read_text().split() == ["blue", "green", "red"]
    assert result.test_count > 0 and 0 <= result.test_accuracy <= 1
    assert f"Final test accuracy = {100 * result.test_accuracy:.1f}% (N={result.test_count})" in lines
    assert result.bottlenecks_computed + result.bottlenecks_reused == 36


def test_a_mistake_raises_user_error_with_the_line_the_command_prints(make_tree, tmp_path):
    tree = make_tree({"red": 3, "blue": 3})
    with pytest.raises(UserError) as raised:
        train(RetrainConfig(DataConfig(tree), top_layer=TrainingConfig(steps=0)))
    printed = run_cli(retrain, ["--image_dir", tree, "--how_many_training_steps", 0,
                                "--output_graph", tmp_path / "g.pb"])
    assert printed.exit_code == 1
    assert str(raised.value) == "TrainingConfig.steps must be at least 1, got 0"  # the field a Python user set
    assert printed.output.strip() == f"error: {in_flags(str(raised.value))}"
    assert not Path(tmp_path / "g.pb").exists()


def test_importing_the_api_does_not_import_tensorflow():
    import subprocess
    import sys

    script = "import sys, retrain.api; print('tensorflow' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
