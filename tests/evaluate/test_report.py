"""evaluate --report: one HTML file that opens offline and renders in a real browser; a gallery
image that cannot be read again is counted in one warning."""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from retrain.cli import evaluate
from retrain.evaluate.report import EvaluatedModel, hindsight_thresholds, write_report
from retrain.metrics import evaluate_probabilities
from tests.conftest import COLOURS, SQUARE_COLOURS, noisy_colour_image, run_cli, square_image
from tests.evaluate.conftest import melanoma_predictions, redness_model


@pytest.fixture(scope="module")
def report(square_model, tmp_path_factory):
    """The square model on new images, one of them a blue square labelled red: a sure mistake."""
    root = tmp_path_factory.mktemp("report")
    for index, name in enumerate(SQUARE_COLOURS):
        (root / "images" / name).mkdir(parents=True)
        for i in range(6):
            square_image(SQUARE_COLOURS[name], seed=5000 + 10 * index + i)[0].save(root / "images" / name / f"{i}.png")
    square_image(SQUARE_COLOURS["blue"], seed=77)[0].save(root / "images" / "red" / "mislabelled.png")
    result = run_cli(evaluate, ["--graph", square_model / "graph.pb", "--image_dir", root / "images",
                                "--report", root / "report.html"])
    assert result.exit_code == 0, result.output
    return root / "report.html"


def test_report_is_self_contained(report):
    page = report.read_text(encoding="utf-8")
    sources = re.findall(r"<img src='([^']*)'", page)
    text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]*", "", page)  # base64 can spell anything
    assert "http" not in text.lower() and "file:" not in text
    assert "<script" not in text and "<link" not in text and "url(" not in text
    assert len(sources) >= 3 + 2 * (1 + 8)  # ROC, confusion, calibration; image + heatmap of the mistake and 8 more
    assert re.findall(r"src=", page) == ["src="] * len(sources)  # no image referenced any other way
    for source in sources:
        assert source.startswith("data:image/png;base64,")
        Image.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1]))).verify()


def test_report_shows_the_figures_and_the_mistake(report):
    page = report.read_text(encoding="utf-8")
    for heading in ("ROC curves", "Confusion matrix", "Reliability diagram", "Per class", "Sensitivity and specificity",
                    "The most confident mistakes", "The least confident correct answers"):
        assert heading in page
    assert "mislabelled.png" in page and "true: red" in page
    assert "sensitivity 95%" in page and "threshold 0.5" in page
    assert "efficientnet_lite0" in page and "19 images" in page


@pytest.mark.skipif(shutil.which("chromium") is None,
                    reason="chromium is not installed (apt-get install -y chromium) to render the report")
def test_report_renders_in_chromium_without_console_messages(report, tmp_path):
    screenshot = tmp_path / "report.png"
    result = subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
         "--enable-logging=stderr", "--v=0", "--window-size=1200,1600", f"--screenshot={screenshot}",
         report.as_uri()],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert screenshot.exists(), result.stderr
    assert ":CONSOLE" not in result.stderr, result.stderr
    pixels = np.asarray(Image.open(screenshot).convert("L"))
    assert pixels.std() > 10  # something was drawn, not a blank page


def test_report_into_a_missing_folder_fails_before_any_work(square_model, tmp_path):
    result = run_cli(evaluate, ["--graph", square_model / "graph.pb", "--image_dir", square_model / "images",
                                "--report", tmp_path / "nowhere" / "report.html"])
    assert result.exit_code == 1
    assert result.stdout == ""
    (error,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "nowhere" in error and "does not exist" in error


def test_hindsight_thresholds_reach_the_sensitivity_at_the_highest_threshold():
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.4, 0.3, 0.2, 0.1, 0.05, 0.01])
    positive = np.array([1, 1, 0, 1, 1, 0, 0, 1, 0, 0], bool)
    points = {how: (threshold, sensitivity, specificity)
              for how, threshold, sensitivity, specificity in hindsight_thresholds(scores, positive)}
    assert points["threshold 0.5"] == (0.5, 0.6, 0.8)
    assert points["sensitivity 90%"] == (0.1, 1.0, 0.4)  # 4 of 5 is 80 %: every positive is needed
    assert points["sensitivity 95%"] == (0.1, 1.0, 0.4)


def test_reliability_bins_and_calibration_error_by_hand():
    from retrain.metrics import expected_calibration_error, reliability_bins

    # Two images at confidence 0.95, both right; two at 0.55, one right.
    probabilities = np.array([[0.95, 0.05], [0.05, 0.95], [0.55, 0.45], [0.45, 0.55]])
    true = np.array([0, 1, 0, 0])
    assert reliability_bins(probabilities, true, bins=10) == [(pytest.approx(0.55), 0.5, 2), (pytest.approx(0.95), 1.0, 2)]
    assert expected_calibration_error(probabilities, true, bins=10) == pytest.approx((2 * 0.05 + 2 * 0.05) / 4)


def test_a_report_gallery_image_that_cannot_be_read_again_is_counted_in_one_warning(tmp_path):
    paths = []
    for i in range(4):
        paths.append(tmp_path / f"{i}.jpg")
        noisy_colour_image(COLOURS["red"], seed=i).save(paths[-1])
    run = melanoma_predictions(paths)
    metrics = evaluate_probabilities(run.probabilities, run.true, run.labels)
    paths[1].unlink()
    warnings = []
    write_report(tmp_path / "report.html", [EvaluatedModel(redness_model(run.labels), run, metrics)], tmp_path, False,
                 warnings.append)
    (line,) = warnings
    assert "1 image(s)" in line and str(paths[1]) in line
    assert "2.jpg" in (tmp_path / "report.html").read_text(encoding="utf-8")
