"""`python -m benchmarks.ood_small_trees [--shared ../shared]`: do the two out-of-distribution
thresholds (retrain.decisions.ood) hold on small trees as well as on 2,000 images?

Trees are drawn from the ISIC 2017 training images as a user's folder would be: the first
or last N of a class in the folder's order (older collections come first, so these are
narrow, and the rest of the set is from other sources), or N drawn at random (the same
source as everything else). Each tree is split 80 % training / 10 % validation / 10 % test
as retrain does by default; with fewer than 40 validation images the threshold comes from out-of-fold
training scores, as in retrain. Then, on the ISIC images outside the tree (the rest of the
training folder and the 150 validation images, of the tree's classes):

- the share given the soft note (unlike the training images) and the hard warning (not of
  the kind the model was made for);
- the melanoma AUC of a top layer trained on the tree (retrain's default, poets), on the
  noted and the other held-out lesions, with 95 % intervals;
- the share of each kind of generated or packaged non-lesion image (benchmarks.non_lesion_images)
  above the hard threshold, and the lowest of their scores over it.

Features are the embedded EfficientNet-Lite0's at 224 px, through retrain's cache (the
first run computes 2,150 + 197 images' features). Skipped, with a message, without ../shared.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from benchmarks.ood_isic import (
    features_of,
    isic_set,
    non_lesion_features,
    print_table,
    run_on_isic,
    shared_parser,
)
from benchmarks.top_layer_speed import cpu_model
from retrain.metrics import auc_interval, roc_auc
from retrain.decisions.ood import VALIDATION_IMAGES as OOD_VALIDATION_IMAGES
from retrain.decisions.ood import fit_ood, out_of_fold_scores

MELANOMA, NEVUS, KERATOSIS = 0, 1, 2  # benchmarks.ood_isic.CLASSES
TRAINING_SHARE, VALIDATION_SHARE = 0.8, 0.1


def trees(train_y: np.ndarray, seeds: int) -> dict[str, np.ndarray]:
    """Index sets into the training images, named by how they were drawn."""
    def ordered(cls: int, which: str, count: int) -> np.ndarray:
        members = np.flatnonzero(train_y == cls)
        return members[:count] if which == "first" else members[-count:]

    drawn = {
        "first 50 mel + 50 nev": np.r_[ordered(MELANOMA, "first", 50), ordered(NEVUS, "first", 50)],
        "first 150 mel + 150 nev": np.r_[ordered(MELANOMA, "first", 150), ordered(NEVUS, "first", 150)],
        "last 150 mel + 150 nev": np.r_[ordered(MELANOMA, "last", 150), ordered(NEVUS, "last", 150)],
        "last 100 of each of 3": np.r_[[ordered(c, "last", 100) for c in (MELANOMA, NEVUS, KERATOSIS)]].ravel(),
    }
    for size in (100, 300):
        for seed in range(seeds):
            drawn[f"random {size}, seed {seed}"] = np.random.default_rng(seed).choice(len(train_y), size, replace=False)
    drawn["all 2000 (+150 validation)"] = np.arange(len(train_y))
    return drawn


def top_layer_auc(x, y, held_x, held_positive, steps: int):
    """Melanoma scores of retrain's default top layer (poets: plain SGD) on held-out images."""
    from retrain.train.top_layer import TrainingConfig, train_top_layer

    config = TrainingConfig(steps=steps, random_seed=0, eval_step_interval=steps)
    layer = train_top_layer(x, y, x[:0], y[:0], int(y.max()) + 1, config)
    return layer.probabilities(held_x)[:, MELANOMA]


def auc_text(scores: np.ndarray, positive: np.ndarray) -> str:
    if positive.all() or not positive.any():
        return "-"
    low, high = auc_interval(scores, positive)
    return f"{roc_auc(scores, positive):.2f} ({low:.2f}-{high:.2f}, n={len(positive)})"


def measure(name, tree, data, others, steps) -> list[str]:
    train_x, train_y, val_x, val_y = data
    classes = np.unique(train_y[tree])
    whole = name.startswith("all")
    order = np.random.default_rng(1).permutation(tree)
    cut = len(order) if whole else int(TRAINING_SHARE * len(order))
    fit_rows, validation_rows = order[:cut], order[cut:cut + int(VALIDATION_SHARE * len(order))]
    remap = np.searchsorted(classes, train_y[fit_rows])
    detector = fit_ood(train_x[fit_rows], remap, len(classes))
    validation = val_x[np.isin(val_y, classes)] if whole else train_x[validation_rows]
    if len(validation) >= OOD_VALIDATION_IMAGES:
        detector = detector.with_threshold(detector.scores(validation), "validation")
    else:
        detector = detector.with_threshold(out_of_fold_scores(train_x[fit_rows], remap, len(classes), 0), "out-of-fold")
    held = np.setdiff1d(np.flatnonzero(np.isin(train_y, classes)), np.r_[fit_rows, validation_rows])
    held_x = np.concatenate([train_x[held], val_x[np.isin(val_y, classes)]]) if not whole else val_x
    held_y = np.concatenate([train_y[held], val_y[np.isin(val_y, classes)]]) if not whole else val_y
    scores = detector.scores(held_x)
    noted, hard = scores > detector.threshold, scores > detector.hard_threshold
    melanoma = top_layer_auc(train_x[fit_rows], remap, held_x, held_y == MELANOMA, steps)
    outliers = np.concatenate(list(others.values()))
    outlier_scores = detector.scores(outliers)
    return [name, str(len(fit_rows)), f"{detector.threshold:.2f} / {detector.hard_threshold:.2f} ({detector.chosen_on})",
            f"{100 * noted.mean():.1f} %", f"{100 * hard.mean():.1f} %",
            auc_text(melanoma[noted], held_y[noted] == MELANOMA), auc_text(melanoma[~noted], held_y[~noted] == MELANOMA),
            f"{100 * (outlier_scores > detector.hard_threshold).mean():.0f} % of {len(outliers)}",
            f"{outlier_scores.min() / detector.hard_threshold:.2f}"]


def run(args: argparse.Namespace, isic_dir: Path) -> None:
    from retrain import paths
    from retrain.backbones import create_backbone
    from retrain.native_logs import import_tensorflow

    started = time.perf_counter()
    import_tensorflow()
    backbone = create_backbone("efficientnet_lite0", args.model_dir or paths.default_model_dir())
    bottleneck_dir = args.bottleneck_dir or paths.default_bottleneck_dir()
    (train_paths, train_y), (val_paths, val_y) = isic_set(isic_dir, "Training"), isic_set(isic_dir, "Validation")
    data = (features_of(train_paths, backbone, bottleneck_dir), train_y, features_of(val_paths, backbone, bottleneck_dir),
            val_y)
    print("non-lesion images:")
    others = non_lesion_features(backbone, args.count)
    header = ["tree", "fitted on", "thresholds: note / warning", "held-out lesions noted", "warned",
              "melanoma AUC, noted", "melanoma AUC, not noted", "non-lesion warned", "lowest non-lesion / warning"]
    rows = [measure(name, tree, data, others, args.steps) for name, tree in trees(train_y, args.seeds).items()]
    print()
    print_table(header, rows)
    print(f"\nCPU: {cpu_model()}; {time.perf_counter() - started:.0f} s in all")


def main() -> None:
    parser = shared_parser(__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="random trees of each size")
    parser.add_argument("--steps", type=int, default=1000, help="top-layer training steps")
    run_on_isic(parser, run)


if __name__ == "__main__":
    main()
