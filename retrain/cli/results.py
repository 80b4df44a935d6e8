"""The results table the batch scripts in commands/ collect: one row per retrain run.

`python -m retrain.cli.results add ...` appends a row from a retrain log (held-out test
figures) and an optional `evaluate --json` file (validation figures, with the sensitivity
and specificity at the model's stored operating points when it has any);
`python -m retrain.cli.results markdown results.csv` prints the table as Markdown.

A row records the --recipe, learning rate and step count the run used: a value the
script did not pass to retrain (left empty) is filled in with the recipe's, else
retrain's default, so every row reads the same way.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import re
import sys
from pathlib import Path

import click

COLUMNS = ["task", "architecture", "recipe", "metadata", "steps", "learning_rate", "test_accuracy", "test_auc", "val_accuracy",
           "val_auc", "operating_point", "op_threshold", "op_chosen_on", "val_sensitivity", "val_sensitivity_ci",
           "val_specificity", "val_specificity_ci"]


def figures_from_retrain_log(text: str) -> dict[str, str]:
    """Final test accuracy and AUC (the mean one-vs-rest AUC for more than two classes)."""
    found = {}
    accuracy = re.findall(r"Final test accuracy = ([\d.]+)%", text)
    if accuracy:
        found["test_accuracy"] = f"{float(accuracy[-1]) / 100:.4f}"
    auc = re.findall(r"Final test AUC = ([\d.]+|nan)", text) or re.findall(r"Final test AUC \(one-vs-rest\).*; mean ([\d.]+|nan)", text)
    if auc:
        found["test_auc"] = auc[-1]
    return found


def figures_from_evaluation(result: dict) -> dict[str, str]:
    """Validation accuracy and AUC: the positive class's for two classes, else the mean."""
    aucs = result["auc"]
    if "binary" in result:
        auc = aucs[result["binary"]["positive_label"]]
    else:
        values = [v for v in aucs.values() if v is not None]
        auc = sum(values) / len(values) if values else None
    return {
        "val_accuracy": f"{result['accuracy']:.4f}",
        "val_auc": "" if auc is None else f"{auc:.4f}",
        **figures_at_operating_points(result.get("operating_points") or []),
    }


def figures_at_operating_points(points: list[dict]) -> dict[str, str]:
    """Where each stored operating point was set and the sensitivity and specificity (with
    their 95 % intervals) it gives on the evaluated images; several points are joined by "; "."""
    columns = {
        "operating_point": lambda p: f"{p['label'].replace(' ', '_')}:{p['target']}={p['value']:g}",
        "op_threshold": lambda p: _number(p.get("threshold")),
        "op_chosen_on": lambda p: p.get("chosen_on") or "",
        "val_sensitivity": lambda p: _number(p["sensitivity"].get("value")),
        "val_sensitivity_ci": lambda p: _interval(p["sensitivity"].get("interval")),
        "val_specificity": lambda p: _number(p["specificity"].get("value")),
        "val_specificity_ci": lambda p: _interval(p["specificity"].get("interval")),
    }
    return {name: "; ".join(cell(p) for p in points) for name, cell in columns.items()} if points else {}


def _number(value) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) and math.isfinite(value) else ""


def _interval(bounds) -> str:
    """ "0.7870-0.9820"; empty when there were no images to count."""
    low, high = (_number(b) for b in bounds or (None, None))
    return f"{low}-{high}" if low and high else ""


def effective_settings(recipe: str, steps: str, learning_rate: str) -> dict[str, str]:
    """The recipe, steps and learning rate a retrain run used, given what was passed to it
    ("" = not passed: the recipe's value, else retrain's default)."""
    from retrain.api.config import RECIPES, ExportConfig
    from retrain.train.top_layer import TrainingConfig

    recipe = recipe or ExportConfig.recipe
    top_layer = {**dataclasses.asdict(TrainingConfig()), **RECIPES.get(recipe, {}).get(TrainingConfig, {})}
    return {
        "recipe": recipe,
        "steps": steps or str(top_layer["steps"]),
        "learning_rate": learning_rate or f"{top_layer['learning_rate']:g}",
    }


def _upgrade(table: Path) -> None:
    """Rewrite a table written with other columns (an older version's) with COLUMNS."""
    with open(table, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or reader.fieldnames == COLUMNS:
            return
        rows = list(reader)
    with open(table, "w", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows({column: row.get(column) or "" for column in COLUMNS} for row in rows)


def append_row(table: Path, row: dict[str, str]) -> None:
    new = not table.exists() or table.stat().st_size == 0
    table.parent.mkdir(parents=True, exist_ok=True)
    if not new:
        _upgrade(table)
    with open(table, "a", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS, lineterminator="\n")
        if new:
            writer.writeheader()
        writer.writerow({column: row.get(column, "") for column in COLUMNS})


def markdown(table: Path) -> str:
    with open(table, newline="") as f:
        rows = list(csv.DictReader(f))
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row.get(c, "") for c in COLUMNS) + " |" for row in rows]
    return "\n".join(lines) + "\n"


@click.group()
def main():
    """Collect retrain results into a CSV and a Markdown table."""


@main.command()
@click.option("--table", type=click.Path(path_type=Path), required=True)
@click.option("--task", required=True)
@click.option("--architecture", required=True)
@click.option("--recipe", default="", help="retrain's --recipe; empty: not passed (retrain's default).")
@click.option("--steps", default="", help="--how_many_training_steps as passed; empty: the recipe's.")
@click.option("--learning_rate", default="", help="--learning_rate as passed; empty: the recipe's.")
@click.option("--retrain_log", type=click.Path(path_type=Path, exists=True), required=True)
@click.option("--eval_json", type=click.Path(path_type=Path), default=None)
@click.option("--metadata", default="no", help="yes when retrain was given patient metadata.")
def add(table, task, architecture, recipe, steps, learning_rate, retrain_log, eval_json, metadata):
    row = {"task": task, "architecture": architecture, "metadata": metadata,
           **effective_settings(recipe, steps, learning_rate)}
    row.update(figures_from_retrain_log(retrain_log.read_text(errors="replace")))
    if eval_json and eval_json.exists():
        row.update(figures_from_evaluation(json.loads(eval_json.read_text())))
    append_row(table, row)


@main.command(name="markdown")
@click.argument("table", type=click.Path(path_type=Path, exists=True))
def markdown_command(table):
    sys.stdout.write(markdown(table))


if __name__ == "__main__":
    main()
