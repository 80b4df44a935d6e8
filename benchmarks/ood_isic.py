"""`python -m benchmarks.ood_isic [--shared ../shared]`: which score best flags images unlike the
ISIC 2017 training images (blank frames, noise, text, screenshots, photos; see
benchmarks.non_lesion_images) while flagging about 5 % of real lesions.

Every score is computed from the pooled EfficientNet-Lite0 features (bottlenecks) of the
2000 training images, the threshold put so that 5 % of the 150 validation images score
above it, and the share of each kind of non-lesion image above it printed:

- Mahalanobis: retrain.decisions.ood, the distance to the nearest class mean (shrunk shared covariance),
  of the features as they are and of the features scaled to unit length;
- energy, -logsumexp(logits), and 1 - max p (max softmax probability), of a softmax top
  layer trained on the training features (Adam, cosine schedule, weight decay, dropout);
- Mahalanobis within the top K principal components of the training features, and the norm
  of the residual outside them (the "virtual logit" part of ViM, Wang et al. 2022);
- the cosine distance to the k-th nearest training image (Sun et al. 2022).

The training and validation bottlenecks come from (and go to) the usual cache, so a second
run computes only the generated images' features. Skipped, with a message, without ../shared.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from benchmarks.non_lesion_images import write_all
from benchmarks.top_layer_speed import cpu_model
from retrain.data.isic import Problems, find_images, read_ground_truth
from retrain.metrics import roc_auc
from retrain.decisions.ood import FLAGGED_SHARE, fit_ood

REPO_ROOT = Path(__file__).resolve().parents[1]
CLASSES = ("melanoma", "nevus", "seborrheic_keratosis")
Score = Callable[[np.ndarray], np.ndarray]


def isic_set(isic_dir: Path, set_name: str) -> tuple[list[Path], np.ndarray]:
    """The images of one challenge set and their class index in CLASSES."""
    problems = Problems()
    lesions = read_ground_truth(isic_dir / f"ISIC-2017_{set_name}_Part3_GroundTruth.csv", problems)
    problems.raise_if_any(f"ISIC 2017 {set_name} ground truth")
    images = find_images(isic_dir / f"ISIC-2017_{set_name}_Data")
    lesions = [lesion for lesion in lesions if lesion.image_id in images]
    return [images[lesion.image_id] for lesion in lesions], np.array([CLASSES.index(lesion.diagnosis) for lesion in lesions])


def features_of(paths: list[Path], backbone, bottleneck_dir: Path) -> np.ndarray:
    """Pooled backbone features, through retrain's cache and its one image-loading path."""
    from retrain.features.cache import open_cache
    from retrain.features.extraction import compute_bottlenecks

    extraction = compute_bottlenecks(paths, backbone, open_cache(bottleneck_dir, backbone))
    if extraction.failures:
        raise SystemExit(f"cannot read {extraction.failures[0].path}: {extraction.failures[0].reason}")
    return extraction.features


def top_layer(train_x, train_y, val_x, val_y, steps: int):
    """A strong-ish softmax layer (the strong recipe without early stopping): energy and max p need one."""
    from retrain.train.top_layer import TrainingConfig, train_top_layer

    config = TrainingConfig(steps=steps, learning_rate=0.001, optimizer="adam", learning_rate_schedule="cosine",
                            weight_decay=1e-3, dropout=0.5, random_seed=0, eval_step_interval=steps,
                            validation_batch_size=-1)
    return train_top_layer(train_x, train_y, val_x, val_y, len(CLASSES), config)


def energy(logits: np.ndarray) -> np.ndarray:
    """-logsumexp(logits) (Liu et al. 2020): low (very negative) where some class is strongly supported."""
    top = logits.max(axis=1)
    return -(top + np.log(np.exp(logits - top[:, None]).sum(axis=1)))


def principal_subspace(train_x: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """The training mean and the top `count` principal directions, as columns."""
    mean = train_x.mean(axis=0)
    _, _, vt = np.linalg.svd(train_x - mean, full_matrices=False)
    return mean, vt[:count].T


def unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1: what cosine similarity and the normed Mahalanobis compare."""
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def knn_distance(train_x: np.ndarray, k: int) -> Score:
    """Cosine distance to the k-th nearest training image, on L2-normalised features."""
    bank = unit(train_x)

    def score(x: np.ndarray) -> np.ndarray:
        similarities = unit(x) @ bank.T
        return 1 - np.sort(similarities, axis=1)[:, -k]

    return score


def raw_mahalanobis(train_x: np.ndarray, train_y: np.ndarray) -> Score:
    """Mahalanobis distance to the nearest class mean without scaling the features to unit
    length, as retrain first did: short feature vectors (blank frames) come out near the means."""
    from retrain.decisions.ood import _whitening

    means = np.stack([train_x[train_y == c].mean(axis=0) for c in range(len(CLASSES))])
    centred = np.asarray(train_x - means[train_y], np.float64)
    whitening = _whitening(lambda: iter([centred]), *centred.shape)
    precision = whitening @ whitening.T  # the inverse of the shrunk covariance

    def score(x: np.ndarray) -> np.ndarray:
        centred = x[:, None, :] - means[None]
        return np.einsum("ncf,fg,ncg->nc", centred, precision, centred).min(axis=1) / x.shape[1]

    return score


def scores(train_x, train_y, layer, components: int, k: int) -> dict[str, Score]:
    """Every candidate: higher = more unlike the training images."""
    retrains = fit_ood(train_x, train_y, len(CLASSES))  # of unit-length features
    mean, basis = principal_subspace(train_x, components)
    within = fit_ood((train_x - mean) @ basis, train_y, len(CLASSES))
    return {
        "Mahalanobis, raw length": raw_mahalanobis(train_x, train_y),
        "retrain's (unit length)": retrains.scores,
        "energy": lambda x: energy(layer.logits(x)),
        "1 - max p": lambda x: 1 - layer.probabilities(x).max(axis=1),
        f"Maha top {components} PCs": lambda x: within.scores((x - mean) @ basis),
        f"residual > {components} PCs": lambda x: np.linalg.norm((x - mean) - (x - mean) @ basis @ basis.T, axis=1),
        f"kNN cosine k={k}": knn_distance(train_x, k),
    }


def flagged_table(methods: dict[str, Score], validation: np.ndarray, rows: dict[str, np.ndarray]) -> list[list[str]]:
    """One row per set of images: its count and the share each method flags at the threshold
    that flags FLAGGED_SHARE of the validation images; then, for the margin, the share of all
    non-lesion images above the highest validation score and the lowest non-lesion score over
    the threshold (for scores that are never negative), and the AUROC validation vs non-lesion."""
    thresholds = {name: float(np.quantile(score(validation), 1 - FLAGGED_SHARE)) for name, score in methods.items()}
    table = [[kind, str(len(x))] + [f"{100 * (score(x) > thresholds[name]).mean():.0f} %" for name, score in methods.items()]
             for kind, x in rows.items()]
    outliers = np.concatenate([x for kind, x in rows.items() if not kind.startswith("ISIC")])
    table.append(["all non-lesion, above every validation image", str(len(outliers))]
                 + [f"{100 * (score(outliers) > score(validation).max()).mean():.0f} %" for score in methods.values()])
    table.append(["lowest non-lesion score / threshold", str(len(outliers))]
                 + [f"{score(outliers).min() / thresholds[name]:.2f}" if thresholds[name] > 0 else "-"
                    for name, score in methods.items()])
    table.append(["AUROC: validation vs all non-lesion", str(len(outliers))]
                 + [f"{_separation(score(validation), score(outliers)):.3f}" for score in methods.values()])
    return table


def _separation(inside: np.ndarray, outside: np.ndarray) -> float:
    return roc_auc(np.concatenate([inside, outside]), np.r_[np.zeros(len(inside), bool), np.ones(len(outside), bool)])


def print_table(header: list[str], table: list[list[str]]) -> None:
    """Markdown with aligned columns: pasted into an issue as it is, and readable in a terminal."""
    widths = [max(len(row[i]) for row in [header, *table]) for i in range(len(header))]
    for row in [header, ["-" * w for w in widths], *table]:
        print("| " + " | ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))) + " |")


def non_lesion_features(backbone, count: int) -> dict[str, np.ndarray]:
    """Features of every non-lesion kind, images and cache in a temporary folder."""
    with tempfile.TemporaryDirectory(prefix="non_lesion_") as folder:
        kinds = write_all(Path(folder) / "images", count)
        for kind, paths in kinds.items():
            where = paths[0].parent if paths[0].is_relative_to(folder) else ", ".join(p.name for p in paths)
            print(f"  {kind}: {len(paths)} ({where})")
        return {kind: features_of(paths, backbone, Path(folder) / "bottlenecks") for kind, paths in kinds.items()}


def run(args: argparse.Namespace, isic_dir: Path) -> None:
    from retrain import paths
    from retrain.backbones import create_backbone
    from retrain.native_logs import import_tensorflow

    started = time.perf_counter()
    import_tensorflow()
    backbone = create_backbone("efficientnet_lite0", args.model_dir or paths.default_model_dir(), image_size=args.image_size)
    bottleneck_dir = args.bottleneck_dir or paths.default_bottleneck_dir()
    (train_paths, train_y), (val_paths, val_y) = isic_set(isic_dir, "Training"), isic_set(isic_dir, "Validation")
    train_x = features_of(train_paths, backbone, bottleneck_dir)
    val_x = features_of(val_paths, backbone, bottleneck_dir)
    print(f"ISIC 2017: {len(train_y)} training, {len(val_y)} validation images; backbone {backbone.identity} "
          f"at {backbone.input_size} px; bottlenecks {bottleneck_dir}")
    print("non-lesion images:")
    others = non_lesion_features(backbone, args.count)
    layer = top_layer(train_x, train_y, val_x, val_y, args.steps)
    probabilities = layer.probabilities(val_x)
    print(f"top layer ({args.steps} Adam steps): validation accuracy {(probabilities.argmax(1) == val_y).mean():.3f}, "
          f"melanoma AUC {roc_auc(probabilities[:, 0], val_y == 0):.3f}")
    methods = scores(train_x, train_y, layer, args.components, args.neighbours)
    rows = {"ISIC validation (threshold set here)": val_x, "ISIC training (fitted on)": train_x, **others}
    print(f"\nShare flagged at the threshold that flags {100 * FLAGGED_SHARE:.0f} % of the ISIC validation images:\n")
    print_table(["images", "n", *methods], flagged_table(methods, val_x, rows))
    print(f"\nCPU: {cpu_model()}; {time.perf_counter() - started:.0f} s in all")


def isic_parser(description: str) -> argparse.ArgumentParser:
    """The flags every benchmark on the shared ISIC images takes: where the data and the caches are."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--shared", type=Path, default=REPO_ROOT.parent / "shared")
    parser.add_argument("--bottleneck_dir", type=Path, default=None, help="bottleneck cache (default: retrain's)")
    parser.add_argument("--model_dir", type=Path, default=None, help="converted backbone weights (default: retrain's)")
    return parser


def shared_parser(description: str) -> argparse.ArgumentParser:
    """The flags every ISIC out-of-distribution benchmark takes: isic_parser's, and how many
    generated images of each kind."""
    parser = isic_parser(description)
    parser.add_argument("--count", type=int, default=20, help="images per generated kind (and photo crops)")
    return parser


def isic_dir_or_skip(args: argparse.Namespace) -> Path | None:
    """The ISIC 2017 folder under --shared, or None after one line saying the benchmark is skipped."""
    isic_dir = args.shared / "data" / "isic2017"
    if not (isic_dir / "ISIC-2017_Validation_Part3_GroundTruth.csv").is_file():
        print(f"skipped: no ISIC 2017 training and validation sets under {isic_dir} (pass --shared)")
        return None
    return isic_dir


def run_on_isic(parser: argparse.ArgumentParser, run) -> None:
    """Parse the flags and run(args, isic_dir) on the shared ISIC 2017 folder, or say it is skipped."""
    args = parser.parse_args()
    isic_dir = isic_dir_or_skip(args)
    if isic_dir is not None:
        run(args, isic_dir)


def main() -> None:
    parser = shared_parser(__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000, help="top-layer training steps (energy, max p)")
    parser.add_argument("--components", type=int, default=64, help="principal components for the PC variants")
    parser.add_argument("--neighbours", type=int, default=10, help="k of the kNN distance")
    parser.add_argument("--image_size", type=int, default=None, help="backbone input size (default: its own, 224)")
    run_on_isic(parser, run)


if __name__ == "__main__":
    main()
