"""The command line: user mistakes get one clear line on stderr and a non-zero exit, never a
traceback; progress is a live bar on a terminal and plain lines in a log."""

import io
import sys

import pytest
from click.testing import CliRunner

from retrain.cli import label_image, retrain


def _run(command, args):
    result = CliRunner().invoke(command, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    return result


def _error_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.output
    return lines[0]


def test_help_lists_the_tensorflow_for_poets_flag_spellings():
    result = _run(retrain, ["--help"])
    for flag in ["--image_dir", "--bottleneck_dir", "--model_dir", "--architecture", "--output_graph",
                 "--output_labels", "--how_many_training_steps", "--learning_rate"]:
        assert flag in result.output


def test_missing_image_dir_is_reported(tmp_path):
    result = _run(retrain, [f"--image_dir={tmp_path / 'nowhere'}"])
    assert result.exit_code == 1
    assert "nowhere: no such directory" in _error_line(result)


def test_empty_image_dir_is_reported(tmp_path):
    result = _run(retrain, ["--image-dir", tmp_path])
    assert result.exit_code == 1
    assert "no class folders found" in _error_line(result)


def test_a_single_class_is_reported(make_tree):
    result = _run(retrain, ["--image_dir", make_tree({"red": 3})])
    assert result.exit_code == 1
    assert "need at least two" in _error_line(result)


def test_unknown_architecture_is_reported_with_the_choices(make_tree):
    result = _run(retrain, ["--image_dir", make_tree({"red": 2, "blue": 2}), "--architecture", "alexnet"])
    assert result.exit_code == 1
    assert "unknown architecture 'alexnet'; available: efficientnet_lite0" in _error_line(result)


def test_a_class_whose_images_are_all_unreadable_leaves_too_few_classes(make_tree, tmp_path):
    root = make_tree({"red": 3})
    (root / "broken").mkdir()
    (root / "broken" / "x.jpg").write_text("not a jpeg")
    result = _run(retrain, ["--image_dir", root, "--bottleneck_dir", tmp_path / "bn"])
    assert result.exit_code == 1
    assert "x.jpg: not an image" in result.stderr
    assert "fewer than two classes have readable images" in _error_line(result)


def test_label_image_reports_a_missing_image(tmp_path):
    result = _run(label_image, ["--image", tmp_path / "none.jpg"])
    assert result.exit_code == 1
    assert "none.jpg: no such file" in _error_line(result)


def test_label_image_says_a_device_is_not_an_image_file():
    result = _run(label_image, ["--image", "/dev/null"])
    assert result.exit_code == 1
    line = _error_line(result)
    assert "/dev/null" in line and "not a regular file" in line and "no such file" not in line


def test_evaluate_help_lists_every_model_format_it_takes():
    from retrain.cli import evaluate

    result = _run(evaluate, ["--help"])
    assert result.exit_code == 0
    assert all(kind in result.output for kind in (".pb", "SavedModel", ".tflite"))


def test_label_image_reports_a_corrupt_image(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    result = _run(label_image, ["--image", bad])
    assert result.exit_code == 1
    assert "bad.jpg" in _error_line(result)


@pytest.mark.parametrize("kind", ["missing", "not_a_graph", "empty_folder"])
def test_label_image_reports_a_wrong_graph(tmp_path, make_tree, kind):
    image = next(make_tree({"red": 1}).rglob("*.jpg"))
    graph = tmp_path / "graph.pb"
    if kind == "not_a_graph":
        graph.write_text("hello, I am text")
    elif kind == "empty_folder":
        graph = tmp_path / "folder"
        graph.mkdir()
    result = _run(label_image, ["--graph", graph, "--image", image])
    assert result.exit_code == 1
    assert str(graph) in _error_line(result)


def test_label_image_reports_a_missing_labels_file(tmp_path, make_tree):
    image = next(make_tree({"red": 1}).rglob("*.jpg"))
    result = _run(label_image, ["--image", image, "--labels", tmp_path / "labels.txt"])
    assert result.exit_code == 1
    assert "labels.txt: cannot read" in _error_line(result)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_a_live_bar_on_a_terminal(monkeypatch):
    from retrain.cli import console

    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    update = console.progress(50, "Bottlenecks")
    for _ in range(5):
        update(10)
    drawn = terminal.getvalue()
    assert "\r" in drawn  # redrawn in place
    assert "Bottlenecks" in drawn and "50/50" in drawn and "100%" in drawn and "image/s" in drawn


def test_progress_is_plain_lines_in_a_log(monkeypatch):
    from retrain.cli import console

    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    update = console.progress(30, "Top layer", "steps")
    for _ in range(3):
        update(10)
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue()
    assert len(lines) == 1 and lines[0].startswith("Top layer: 30/30 (") and lines[0].endswith(" steps/s)")
