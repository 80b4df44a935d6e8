"""The batch scripts in commands/, run for real on tiny trees, from another directory."""

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import COLOURS, noisy_colour_image
from tests.data.test_isic import write_challenge

COMMANDS = Path(__file__).resolve().parents[2] / "commands"


def _rows(table: Path) -> list[dict]:
    with open(table, newline="") as f:
        return list(csv.DictReader(f))


def _run_script(name, *args, cwd, **env):
    environment = dict(os.environ, PYTHON=sys.executable, **env)
    result = subprocess.run(
        ["bash", str(COMMANDS / name), *map(str, args)], check=False, cwd=cwd, env=environment, capture_output=True, text=True,
        timeout=900
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    return result


def _validation_tree(root: Path) -> Path:
    """Three red images and three copies of one blue picture, plus a fourth copy filed as red:
    a model that tells red from blue gets 6 of 7 right, and its red-vs-blue AUC is
    (3 red x 3 blue pairs right + 3 tied pairs of the misfiled copy, counting half) / 12."""
    (root / "red").mkdir(parents=True)
    (root / "blue").mkdir()
    for i in range(3):
        noisy_colour_image(COLOURS["red"], seed=500 + i).save(root / "red" / f"held_red_{i}.jpg")
    noisy_colour_image(COLOURS["blue"], seed=600).save(root / "blue" / "held_blue_0.jpg")
    for i in range(1, 3):
        shutil.copy(root / "blue" / "held_blue_0.jpg", root / "blue" / f"held_blue_{i}.jpg")
    shutil.copy(root / "blue" / "held_blue_0.jpg", root / "red" / "misfiled_blue.jpg")
    return root


@pytest.mark.slow
def test_batch_retrain_runs_the_grid_and_collects_one_row_per_run(make_tree, tmp_path):
    tree = make_tree({"red": 6, "blue": 6})
    validation = _validation_tree(tmp_path / "validation")
    out = tmp_path / "out"
    result = _run_script("batch_retrain.sh", tree, out, cwd=tmp_path, TRAINING_STEPS="20 40", VALIDATION_DIR=str(validation))
    rows = _rows(out / "results.csv")
    assert [(r["steps"], r["learning_rate"]) for r in rows] == [("20", "0.01"), ("40", "0.01")]
    assert [(r["val_accuracy"], r["val_auc"]) for r in rows] == [("0.8571", "0.8750")] * 2, rows
    assert f"--image_dir {validation}" in result.stderr
    assert "+ retrain --image_dir" in result.stdout + result.stderr
    assert "| task | architecture |" in (out / "results.md").read_text()
    second_log = (out / "logs" / "images_efficientnet_lite0_lr0.01_40.retrain.log").read_text()
    assert "12 reused, 0 computed" in second_log  # the second run reused the shared cache


def _write_isic_data(data):
    """A tiny ISIC 2017 download: 24 training and 9 validation images, one colour per class."""
    colours = {("1.0", "0.0"): (150, 40, 40), ("0.0", "1.0"): (50, 60, 170), ("0.0", "0.0"): (60, 160, 60)}
    for set_name, first_id, count in (("Training", 0, 24), ("Validation", 500, 9)):
        rows = [(f"ISIC_{first_id + i:07d}", *list(colours)[i % 3]) for i in range(count)]
        images, _ = write_challenge(data, rows, set_name=set_name)
        for index, (image_id, melanoma, keratosis) in enumerate(rows):  # seeded by id: no validation image copies one
            noisy_colour_image(colours[(melanoma, keratosis)], seed=first_id + index).save(images / f"{image_id}.jpg")
    return data


@pytest.mark.slow
def test_retrain_isic2017_prepares_trains_and_evaluates_all_three_tasks(tmp_path):
    data = _write_isic_data(tmp_path / "isic")
    out = tmp_path / "out"
    result = _run_script("retrain_isic2017.sh", data, out, cwd=tmp_path, TRAINING_STEPS="60", LEARNING_RATE="0.05")
    commands = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("+ retrain ")]
    assert len(commands) == 3
    assert all("--recipe poets" in c and "--how_many_training_steps 60" in c and "--validation_dir" in c for c in commands)
    # The default operating point goes to the tasks with a melanoma class only.
    assert ["--operating_point melanoma:sensitivity=0.95" in c for c in commands] == [True, False, True]
    assert "note: task2_seborrheic_keratosis has no class melanoma" in result.stderr
    rows = {r["task"]: r for r in _rows(out / "results.csv")}
    assert set(rows) == {"task1_melanoma", "task2_seborrheic_keratosis", "three_class"}
    for row in rows.values():
        assert (row["recipe"], row["steps"], row["learning_rate"]) == ("poets", "60", "0.05"), row
        assert float(row["val_auc"]) > 0.9, row
    for task in ("task1_melanoma", "three_class"):  # 3 melanomas in validation: chosen out of fold, measured there
        row = rows[task]
        assert row["operating_point"] == "melanoma:sensitivity=0.95" and row["op_chosen_on"], row
        assert float(row["val_sensitivity"]) >= 2 / 3 and float(row["val_specificity"]) >= 0.5, row
        assert [float(x) for x in row["val_sensitivity_ci"].split("-")] == sorted(float(x) for x in row["val_sensitivity_ci"].split("-"))
    assert not any(rows["task2_seborrheic_keratosis"][c] for c in ("operating_point", "val_sensitivity", "val_specificity"))
    assert "| operating_point | op_threshold |" in (out / "results.md").read_text()
    assert (out / "results.md").exists()
    assert sorted(p.name for p in (out / "validation" / "three_class").iterdir() if p.is_dir()) == [
        "melanoma", "nevus", "seborrheic_keratosis"]


@pytest.mark.slow
def test_retrain_isic2017_recipe_and_tasks_train_on_the_validation_tree(tmp_path):
    data = _write_isic_data(tmp_path / "isic")
    out = tmp_path / "out"
    result = _run_script("retrain_isic2017.sh", data, out, cwd=tmp_path, RECIPE="strong", TASKS="three_class",
                         LEARNING_RATE="", TRAINING_STEPS="")
    # The recipe sets the learning rate and steps: the script must not pass them.
    [command] = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("+ retrain ")]
    assert "--recipe strong" in command
    assert "--learning_rate" not in command and "--how_many_training_steps" not in command
    log = (out / "logs" / "three_class.retrain.log").read_text()
    assert f"Validation set: 9 images from {out / 'validation' / 'three_class'}" in log, log[-3000:]
    assert ", 9 validation," in log  # the validation tree only: no hash-split share of the training tree
    assert not (out / "logs" / "task1_melanoma.retrain.log").exists()
    rows = _rows(out / "results.csv")
    assert [(r["task"], r["recipe"], r["learning_rate"]) for r in rows] == [("three_class", "strong", "0.001")]
    assert rows[0]["val_auc"] and rows[0]["test_accuracy"]
    assert "| task | architecture | recipe |" in (out / "results.md").read_text()


def _refused(tmp_path, **env):
    """The script's error for settings it refuses, given before anything is prepared."""
    environment = dict(os.environ, PYTHON=sys.executable, **env)
    result = subprocess.run(["bash", str(COMMANDS / "retrain_isic2017.sh"), tmp_path, tmp_path / "out"],
                            check=False, env=environment, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and not (tmp_path / "out").exists(), result.stderr
    return result.stderr


def test_retrain_isic2017_rejects_an_unknown_task(tmp_path):
    assert "unknown task task3" in _refused(tmp_path, TASKS="three_class task3")


def test_retrain_isic2017_rejects_an_operating_point_for_no_class_or_in_retrain_flags(tmp_path):
    assert "no task has class melanona; the classes are" in _refused(tmp_path, OPERATING_POINT="melanona:sensitivity=0.95")
    assert "name the class, e.g. melanoma:sensitivity=0.95" in _refused(tmp_path, OPERATING_POINT="sensitivity=0.9")
    assert "set OPERATING_POINT instead" in _refused(tmp_path, RETRAIN_FLAGS="--operating_point=melanoma:threshold=0.3")


def _evaluation(**extra):
    """An `evaluate --json` result, as old versions (no operating points) wrote it unless `extra` adds some."""
    return {"accuracy": 0.8, "auc": {"melanoma": 0.75, "nevus": 0.85, "seborrheic keratosis": 0.95}, **extra}


def _point(label, target, value, threshold, sensitivity, specificity):
    def rate(successes, count, low, high):
        return {"value": successes / count if count else float("nan"), "successes": successes, "count": count,
                "interval": [low, high]}

    return {"label": label, "target": target, "value": value, "threshold": threshold, "chosen_on": "validation",
            "sensitivity": rate(*sensitivity), "specificity": rate(*specificity)}


def test_results_record_the_operating_points_evaluate_measured():
    from retrain.cli.results import figures_from_evaluation

    assert figures_from_evaluation(_evaluation()) == {"val_accuracy": "0.8000", "val_auc": "0.8500"}
    assert figures_from_evaluation(_evaluation(operating_points=[]))["val_auc"] == "0.8500"
    melanoma = _point("melanoma", "sensitivity", 0.95, 0.2143, (28, 30, 0.787, 0.982), (70, 120, 0.49, 0.67))
    keratosis = _point("seborrheic keratosis", "specificity", 0.9, 0.6, (0, 0, float("nan"), float("nan")), (9, 10, 0.6, 0.98))
    figures = figures_from_evaluation(_evaluation(operating_points=[melanoma]))
    assert figures == {"val_accuracy": "0.8000", "val_auc": "0.8500", "operating_point": "melanoma:sensitivity=0.95",
                       "op_threshold": "0.2143", "op_chosen_on": "validation", "val_sensitivity": "0.9333",
                       "val_sensitivity_ci": "0.7870-0.9820", "val_specificity": "0.5833", "val_specificity_ci": "0.4900-0.6700"}
    both = figures_from_evaluation(_evaluation(operating_points=[melanoma, keratosis]))
    assert both["operating_point"] == "melanoma:sensitivity=0.95; seborrheic_keratosis:specificity=0.9"
    assert both["val_sensitivity"] == "0.9333; " and both["val_sensitivity_ci"] == "0.7870-0.9820; "  # no positives: empty


def test_results_table_written_with_older_columns_gains_the_operating_point_ones(tmp_path):
    from retrain.cli.results import COLUMNS, append_row, markdown

    table = tmp_path / "results.csv"
    table.write_text("task,architecture,val_auc\nthree_class,efficientnet_lite0,0.8400\n")
    append_row(table, {"task": "task1_melanoma", "operating_point": "melanoma:sensitivity=0.95", "val_sensitivity": "0.9333"})
    rows = _rows(table)
    assert list(rows[0]) == COLUMNS and rows[0]["val_auc"] == "0.8400" and rows[0]["val_sensitivity"] == ""
    assert rows[1]["operating_point"] == "melanoma:sensitivity=0.95"
    lines = markdown(table).splitlines()
    assert "| val_sensitivity | val_sensitivity_ci | val_specificity | val_specificity_ci |" in lines[0]
    assert "| melanoma:sensitivity=0.95 |  |  | 0.9333 |" in lines[3]


@pytest.mark.slow
def test_retrain_isic2017_metadata_gives_age_and_sex_to_retrain_and_evaluate(tmp_path):
    data = _write_isic_data(tmp_path / "isic")
    for set_name, first_id, count in (("Training", 0, 24), ("Validation", 500, 9)):
        rows = [f"ISIC_{first_id + i:07d},{30 + 2 * i},{'female' if i % 2 else 'male'}" for i in range(count)]
        (data / f"ISIC-2017_{set_name}_Data_metadata.csv").write_text("image_id,age_approximate,sex\n" + "\n".join(rows) + "\n")
    out = tmp_path / "out"
    result = _run_script("retrain_isic2017.sh", data, out, cwd=tmp_path, TASKS="three_class", METADATA="1",
                         TRAINING_STEPS="60", LEARNING_RATE="0.05")
    lines = (result.stdout + result.stderr).splitlines()
    [retrain_command] = [line for line in lines if line.startswith("+ retrain ")]
    [evaluate_command] = [line for line in lines if line.startswith("+ evaluate ")]
    for command in (retrain_command, evaluate_command):
        assert "ISIC-2017_Training_Data_metadata.csv" in command and "ISIC-2017_Validation_Data_metadata.csv" in command
    log = (out / "logs" / "three_class.retrain.log").read_text()
    assert "Metadata: 33 of 33 images have a row" in log and "Validation with patient metadata AUC" in log
    [row] = _rows(out / "results.csv")
    assert row["metadata"] == "yes" and row["val_auc"]
