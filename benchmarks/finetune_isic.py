"""`python -m benchmarks.finetune_isic [--shared ../shared] [--output DIR] [--variants ...] [--seeds 0 1]
[--ensemble NAME ...]`: what weight averaging and colour constancy do to the fine-tuned model, and what
an ensemble of fine-tuned models gives, on ISIC 2017 (issue 29). Variants: base (the `finetune`
recipe on EfficientNet-Lite0), ema (--fine_tune_ema_decay 0.99), cc (--colour_constancy), ema_cc,
lite1 and lite2 (the recipe on EfficientNet-Lite1 and -Lite2).

The real `retrain --recipe finetune` trains the three-class model on the 2000 training images, the
150 validation images as --validation_dir (they choose the kept epoch, the temperature and the
melanoma operating points at 90 % and 95 % sensitivity, so every figure here leans a little
optimistic), once per variant and seed. `evaluate` then measures each model on the validation
images. With --ensemble, the named runs (e.g. base_s0 base_s1) are combined by `ensemble` (its
decisions fitted on the same trees) and measured the same way, with its size and per-image latency
beside one member's. One row per model: per-class AUC with 95 % intervals (Hanley & McNeil), the
mean, the best specificity at 90 % and 95 % melanoma sensitivity on validation, ECE (15 bins, all
classes' top probability), the `retrain` CPU and wall time and the model size. Runs already in
--output (DIR/NAME/graph.pb) are reused, with the times they recorded. Skipped, with a message,
without ../shared.
"""

from __future__ import annotations

import argparse
import csv
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.ood_isic import CLASSES, isic_parser, print_table, run_on_isic
from benchmarks.top_layer_speed import cpu_model

VARIANTS = {"base": [], "ema": ["--fine_tune_ema_decay", "0.99"], "cc": ["--colour_constancy"],
            "ema_cc": ["--fine_tune_ema_decay", "0.99", "--colour_constancy"],
            "lite1": ["--architecture", "efficientnet_lite1"], "lite2": ["--architecture", "efficientnet_lite2"]}
OPERATING_POINTS = ["--operating_point", "melanoma:sensitivity=0.9", "--operating_point", "melanoma:sensitivity=0.95"]
BIN = Path(sys.executable).parent


def trees(isic_dir: Path, output: Path) -> tuple[Path, Path]:
    """prepare_isic's three-class trees of the training and validation sets (hard links)."""
    for name, part in (("train", "Training"), ("validation", "Validation")):
        if not (output / "isic" / name / "three_class").is_dir():
            subprocess.run([str(BIN / "prepare_isic"), "--images", str(isic_dir / f"ISIC-2017_{part}_Data"),
                            "--ground_truth", str(isic_dir / f"ISIC-2017_{part}_Part3_GroundTruth.csv"),
                            "--output", str(output / "isic" / name)], check=True, stdout=subprocess.DEVNULL)
    return output / "isic" / "train" / "three_class", output / "isic" / "validation" / "three_class"


def timed(arguments: list[str], folder: Path, log_name: str) -> None:
    """Run a command, its output to FOLDER/LOG_NAME, its wall and CPU seconds to FOLDER/timing.json."""
    before, started = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    with (folder / log_name).open("w") as log:
        subprocess.run(arguments, check=True, stdout=log, stderr=subprocess.STDOUT)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    (folder / "timing.json").write_text(json.dumps({"wall_s": time.perf_counter() - started, "cpu_s": cpu}))


def fine_tuned(name: str, seed: int, extra: list[str], train: Path, validation: Path, args) -> Path:
    folder = args.output / name
    if (folder / "graph.pb").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    timed([str(BIN / "retrain"), "--image_dir", str(train), "--validation_dir", str(validation),
           "--testing_percentage", "0", "--recipe", "finetune", "--random_seed", str(seed), *OPERATING_POINTS,
           "--bottleneck_dir", str(args.bottleneck_dir), "--output_graph", str(folder / "graph.pb"),
           "--output_labels", str(folder / "labels.txt"), "--saved_model_dir", str(folder / "saved_model"), *extra],
          folder, "retrain.log")
    return folder


def ensembled(members: list[str], train: Path, validation: Path, args) -> Path:
    folder = args.output / ("ensemble_" + "+".join(members))
    if (folder / "graph.pb").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    graphs = [arg for member in members for arg in ("--graph", str(args.output / member / "saved_model"))]
    timed([str(BIN / "ensemble"), *graphs, "--image_dir", str(train), "--validation_dir", str(validation),
           "--testing_percentage", "0", *OPERATING_POINTS, "--bottleneck_dir", str(args.bottleneck_dir),
           "--output_graph", str(folder / "graph.pb"), "--output_labels", str(folder / "labels.txt"),
           "--saved_model_dir", str(folder / "saved_model"), "--tflite_output", str(folder / "model.tflite")],
          folder, "ensemble.log")
    return folder


def predictions(folder: Path, validation: Path) -> tuple[np.ndarray, np.ndarray]:
    """evaluate's probabilities of the validation images, in CLASSES order, and the true classes."""
    table = folder / "evaluate_validation.csv"
    if not table.is_file():
        subprocess.run([str(BIN / "evaluate"), "--graph", str(folder / "graph.pb"), "--image_dir", str(validation),
                        "--predictions", str(table)], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    truth = {path.stem: CLASSES.index(path.parent.name) for path in validation.glob("*/*.jpg")}
    with table.open() as f:
        rows = list(csv.DictReader(f))
    probabilities = np.array([[float(row[c.replace("_", " ")]) for c in CLASSES] for row in rows])
    return probabilities, np.array([truth[Path(row["image"]).stem] for row in rows])


def figures(probabilities: np.ndarray, true: np.ndarray) -> dict:
    from retrain.metrics import auc_interval, expected_calibration_error, roc_auc, specificity_at_sensitivity

    aucs = {c: (roc_auc(probabilities[:, i], true == i), auc_interval(probabilities[:, i], true == i))
            for i, c in enumerate(CLASSES)}
    melanoma = true == CLASSES.index("melanoma")
    return {"auc": aucs, "mean": float(np.mean([auc for auc, _ in aucs.values()])),
            "spec90": specificity_at_sensitivity(probabilities[:, 0], melanoma, 0.9),
            "spec95": specificity_at_sensitivity(probabilities[:, 0], melanoma, 0.95),
            "ece": expected_calibration_error(probabilities, true)}


def paired_difference(first: np.ndarray, second: np.ndarray, true: np.ndarray, draws: int = 2000,
                      seed: int = 0) -> tuple[float, float, float]:
    """Mean AUC of `first` minus that of `second` on the same images, with a 95 % paired bootstrap
    interval (the images resampled together for both)."""
    from retrain.metrics import roc_auc

    def mean_auc(probabilities, labels):
        return float(np.mean([roc_auc(probabilities[:, i], labels == i) for i in range(len(CLASSES))]))

    rng = np.random.default_rng(seed)
    differences = []
    for _ in range(draws):
        sample = rng.integers(0, len(true), len(true))
        if len(np.unique(true[sample])) == len(CLASSES):
            differences.append(mean_auc(first[sample], true[sample]) - mean_auc(second[sample], true[sample]))
    low, high = np.percentile(differences, [2.5, 97.5])
    return mean_auc(first, true) - mean_auc(second, true), float(low), float(high)


def row(name: str, folder: Path, result: dict) -> list[str]:
    timing = json.loads((folder / "timing.json").read_text()) if (folder / "timing.json").is_file() else {}
    aucs = [f"{auc:.3f} [{low:.2f}, {high:.2f}]" for auc, (low, high) in result["auc"].values()]
    minutes = (f"{timing['cpu_s'] / 60:.0f} / {timing['wall_s'] / 60:.0f}" if timing else "?")
    size = (folder / "graph.pb").stat().st_size / 2 ** 20
    return [name, *aucs, f"{result['mean']:.3f}", f"{100 * result['spec90']:.0f} %", f"{100 * result['spec95']:.0f} %",
            f"{result['ece']:.3f}", minutes, f"{size:.1f}"]


def latencies(folders: list[Path], images: list[Path], rounds: int = 3) -> dict[str, float]:
    """Milliseconds per image of each model's .pb and (where written) .tflite through retrain.api.load,
    after a warm-up; the models take turns round by round, so a busy machine slows them alike."""
    from retrain.api import load

    models = {f"{folder.name} {path.suffix[1:]}": load(path) for folder in folders
              for path in (folder / "graph.pb", folder / "model.tflite") if path.exists()}
    seconds = dict.fromkeys(models, 0.0)
    for name, model in models.items():
        model(images[0])
    for _ in range(rounds):
        for name, model in models.items():
            started = time.perf_counter()
            for image in images:
                model(image)
            seconds[name] += time.perf_counter() - started
    return {name: 1000 * total / (rounds * len(images)) for name, total in seconds.items()}


def run(args: argparse.Namespace, isic_dir: Path) -> None:
    from retrain import paths

    args.bottleneck_dir = args.bottleneck_dir or paths.default_bottleneck_dir()
    train, validation = trees(isic_dir, args.output)
    table, scored = [], {}
    for variant in args.variants:
        for seed in args.seeds:
            name = f"{variant}_s{seed}"
            scored[name] = predictions(fine_tuned(name, seed, VARIANTS[variant], train, validation, args), validation)
            table.append(row(name, args.output / name, figures(*scored[name])))
    if args.ensemble:
        folder = ensembled(args.ensemble, train, validation, args)
        scored[folder.name] = predictions(folder, validation)
        table.append(row(folder.name, folder, figures(*scored[folder.name])))
    print(f"\nISIC 2017 validation ({len(list(validation.glob('*/*.jpg')))} images); CPU: {cpu_model()}\n")
    print_table(["model", "AUC mel [95 %]", "AUC nev", "AUC sk", "mean", "spec. @90 % sens.", "spec. @95 % sens.",
                 "ECE", "CPU / wall min", "MB (.pb)"], table)
    for name, (probabilities, true) in scored.items():
        reference = f"base_s{name.rsplit('_s', 1)[-1]}" if not name.startswith("ensemble_") else args.ensemble[0]
        if reference != name and reference in scored:
            print(f"{name} minus {reference}: mean AUC %+.3f [%+.3f, %+.3f] (95 %% paired bootstrap)"
                  % paired_difference(probabilities, scored[reference][0], true))
    if args.ensemble:
        images = sorted(validation.glob("*/*.jpg"))[:args.latency_images]
        timed_models = latencies([args.output / args.ensemble[0], folder], images)
        print("latency (ms per image, label_image's loading and model): " +
              ", ".join(f"{name} {ms:.0f}" for name, ms in timed_models.items()))


def main() -> None:
    parser = isic_parser(__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("finetune_isic"), help="trees, models and logs (reused)")
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=["base", "ema"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--ensemble", nargs="*", default=[], help="runs to combine, by folder name (e.g. base_s0 base_s1)")
    parser.add_argument("--latency_images", type=int, default=30)
    run_on_isic(parser, run)


if __name__ == "__main__":
    main()
