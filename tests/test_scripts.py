"""The batch scripts in commands/, run for real on tiny trees, from another directory."""

import csv
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import noisy_colour_image
from tests.test_isic import write_challenge

COMMANDS = Path(__file__).resolve().parent.parent / "commands"


def _run_script(name, *args, cwd, **env):
    environment = dict(os.environ, PYTHON=sys.executable, **env)
    result = subprocess.run(
        ["bash", str(COMMANDS / name), *map(str, args)], cwd=cwd, env=environment, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    return result


def test_batch_retrain_runs_the_grid_and_collects_one_row_per_run(make_tree, tmp_path):
    tree = make_tree({"red": 6, "blue": 6})
    out = tmp_path / "out"
    result = _run_script("batch_retrain.sh", tree, out, cwd=tmp_path, TRAINING_STEPS="20 40", VALIDATION_DIR=str(tree))
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert [(r["steps"], r["learning_rate"]) for r in rows] == [("20", "0.01"), ("40", "0.01")]
    assert all(r["val_accuracy"] and r["val_auc"] for r in rows)
    assert "+ retrain --image_dir" in result.stdout + result.stderr
    assert "| task | architecture |" in (out / "results.md").read_text()
    second_log = (out / "logs" / "images_efficientnet_lite0_lr0.01_40.retrain.log").read_text()
    assert "12 reused, 0 computed" in second_log  # the second run reused the shared cache


def test_retrain_isic2017_prepares_trains_and_evaluates_all_three_tasks(tmp_path):
    data = tmp_path / "isic"
    colours = {("1.0", "0.0"): (150, 40, 40), ("0.0", "1.0"): (50, 60, 170), ("0.0", "0.0"): (60, 160, 60)}
    for set_name, first_id, count in (("Training", 0, 24), ("Validation", 500, 9)):
        rows = [(f"ISIC_{first_id + i:07d}", *list(colours)[i % 3]) for i in range(count)]
        images, _ = write_challenge(data, rows, set_name=set_name)
        for seed, (image_id, melanoma, keratosis) in enumerate(rows):
            noisy_colour_image(colours[(melanoma, keratosis)], seed=seed).save(images / f"{image_id}.jpg")
    out = tmp_path / "out"
    _run_script("retrain_isic2017.sh", data, out, cwd=tmp_path, TRAINING_STEPS="60", LEARNING_RATE="0.05")
    rows = {r["task"]: r for r in csv.DictReader(open(out / "results.csv"))}
    assert set(rows) == {"task1_melanoma", "task2_seborrheic_keratosis", "three_class"}
    for row in rows.values():
        assert float(row["val_auc"]) > 0.9, row
    assert (out / "results.md").exists()
    assert sorted(p.name for p in (out / "validation" / "three_class").iterdir() if p.is_dir()) == [
        "melanoma", "nevus", "seborrheic_keratosis"]
