"""`python -m benchmarks.colour_isic [--shared ../shared] [--output DIR]`: does --colour_constancy
(Shades of Gray inside the model) help the `strong` top layer on ISIC 2017, and does it make the
model indifferent to another camera's colour?

The real `retrain` trains the three-class model on the 2000 training images (10 % of them held
back as its test split, by retrain's stable hash), the 150 validation images as --validation_dir,
`--recipe strong`, a melanoma operating point at sensitivity 0.9; with and without
--colour_constancy, for each --seeds. `evaluate` then measures each model on the validation
images and on a tinted copy of them (every image's channels times TINT, as under a warmer lamp or
another camera's white balance, written losslessly). One row per model: per-class AUC, the
specificity at the stored melanoma threshold, and the mean absolute change of the probabilities
between each image and its tinted copy. Runs already in --output are reused; the bottleneck
cache is --bottleneck_dir. Skipped, with a message, without ../shared.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from benchmarks.mediapipe_isic import OPERATING_POINT, class_tree, command
from benchmarks.ood_isic import CLASSES, isic_parser, isic_set, print_table, run_on_isic

TINT = (1.15, 1.0, 0.8)  # warmer light: red up, blue down, as between dermoscopes
VARIANTS = {"plain": [], "colour_constancy": ["--colour_constancy"]}


def trees(isic_dir: Path, folder: Path) -> tuple[Path, Path, Path]:
    """Training and validation class trees (symlinks) and the tinted validation tree."""
    from PIL import Image

    from retrain.data.images import load_image

    train, validation, tinted = folder / "train", folder / "validation", folder / "validation_tinted"
    if not train.is_dir():
        class_tree(*isic_set(isic_dir, "Training"), train)
    if not validation.is_dir():
        class_tree(*isic_set(isic_dir, "Validation"), validation)
    if not tinted.is_dir():
        for path in sorted(validation.glob("*/*.jpg")):
            pixels = load_image(path, 256).astype(np.float32) * np.array(TINT)
            (tinted / path.parent.name).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.clip(np.round(pixels), 0, 255).astype(np.uint8)).save(tinted / path.parent.name / f"{path.stem}.png")
    return train, validation, tinted


def train(train_tree: Path, val_tree: Path, folder: Path, seed: int, extra: list[str], args: argparse.Namespace) -> Path:
    graph = folder / "graph.pb"
    if graph.is_file():
        return graph
    folder.mkdir(parents=True, exist_ok=True)
    bin_dir = Path(sys.executable).parent
    arguments = [str(bin_dir / "retrain"), "--image_dir", str(train_tree), "--validation_dir", str(val_tree),
                 "--recipe", "strong", "--random_seed", str(seed), "--operating_point", OPERATING_POINT,
                 "--bottleneck_dir", str(args.bottleneck_dir), "--output_graph", str(graph),
                 "--output_labels", str(folder / "labels.txt"), "--saved_model_dir", str(folder / "saved_model"), *extra]
    if args.model_dir:
        arguments += ["--model_dir", str(args.model_dir)]
    command(arguments, folder / "retrain.log")
    return graph


def evaluated(graph: Path, tree: Path, name: str) -> tuple[dict, dict[str, np.ndarray]]:
    """evaluate's JSON and its probabilities by image stem."""
    out = graph.parent / f"evaluate_{name}"
    if not (out.with_suffix(".json")).is_file():
        bin_dir = Path(sys.executable).parent
        subprocess.run([str(bin_dir / "evaluate"), "--graph", str(graph), "--image_dir", str(tree), "--json",
                        str(out.with_suffix(".json")), "--predictions", str(out.with_suffix(".csv"))],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    figures = json.loads(out.with_suffix(".json").read_text())
    with out.with_suffix(".csv").open() as f:
        rows = {Path(row["image"]).stem: np.array([float(row[c.replace("_", " ")]) for c in CLASSES]) for row in csv.DictReader(f)}
    return figures, rows


def row(variant: str, seed: int, figures: dict, tinted: dict, change: float) -> list[str]:
    def aucs(f):
        values = [f["auc"][c.replace("_", " ")] for c in CLASSES]
        return [f"{v:.3f}" for v in values] + [f"{np.mean(values):.3f}"]

    def specificity(f):
        point = next(p for p in f["operating_points"] if p["label"] == "melanoma")
        return f"{100 * point['specificity']['value']:.1f} % (sens. {100 * point['sensitivity']['value']:.0f} %)"

    return [variant, str(seed), *aucs(figures), specificity(figures), *aucs(tinted), specificity(tinted), f"{change:.4f}"]


def run(args: argparse.Namespace, isic_dir: Path) -> None:
    from retrain import paths

    args.bottleneck_dir = args.bottleneck_dir or paths.default_bottleneck_dir()
    train_tree, val_tree, tinted_tree = trees(isic_dir, args.output / "trees")
    table = []
    for variant, extra in VARIANTS.items():
        for seed in args.seeds:
            graph = train(train_tree, val_tree, args.output / f"{variant}-seed{seed}", seed, extra, args)
            figures, plain = evaluated(graph, val_tree, "validation")
            tinted_figures, tinted = evaluated(graph, tinted_tree, "validation_tinted")
            change = float(np.mean([np.abs(plain[stem] - tinted[stem]).mean() for stem in plain]))
            table.append(row(variant, seed, figures, tinted_figures, change))
    short = ["mel", "nev", "sk"]
    header = ["model", "seed", *[f"AUC {c}" for c in short], "mean", "spec. at mel. threshold",
              *[f"tinted AUC {c}" for c in short], "tinted mean", "tinted spec.", "mean |dp| tint"]
    print(f"\nISIC 2017 validation ({len(list(val_tree.glob('*/*')))} images) and its copy tinted by {TINT}:\n")
    print_table(header, table)


def main() -> None:
    parser = isic_parser(__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("colour_isic"), help="models, logs and trees (reused)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    run_on_isic(parser, run)


if __name__ == "__main__":
    main()
