"""`python -m benchmarks.mediapipe_isic [--shared ../shared]`: does the phone path (MediaPipe
Tasks' ImageClassifier, the C++ core of its Android, iOS and web builds) classify the ISIC 2017
validation images as label_image does, in each TFLite mode?

The real `retrain` trains the three-class model (melanoma, nevus, seborrheic keratosis) on the
2000 training images, with the 150 validation images as --validation_dir, the strong recipe and
a melanoma operating point at sensitivity 0.9; `retrain --tflite_output` writes the `none` model
and `export_tflite` the three others from the same SavedModel (int8 calibrated on the training
tree). Each .tflite then classifies the validation images twice:

- MediaPipe: the file handed over as an app would, `mp.Image.create_from_file`, which MediaPipe
  decodes and resizes itself, reading the normalisation and labels from the TFLite metadata;
- label_image: `retrain.api.load(model)`, retrain's own decoding, resizing and LiteRT.

One row per mode: top-1 agreement, mean and largest absolute probability difference (over every
class), the largest again with MediaPipe given label_image's already resized pixels (what is
left once the resize is the same), each class's AUC through both paths, and how many images the
stored melanoma operating point (the model card's threshold) decides differently. Class trees
are symlinks in a temporary folder; the bottleneck cache is --bottleneck_dir, so a second run is
warm. Skipped, with a message, without ../shared.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.ood_isic import CLASSES, isic_parser, isic_set, print_table, run_on_isic
from benchmarks.top_layer_speed import cpu_model
from retrain.metrics import roc_auc

MODES = ("none", "float16", "dynamic", "int8")
OPERATING_POINT = "melanoma:sensitivity=0.9"


def class_tree(paths: list[Path], labels: np.ndarray, root: Path) -> Path:
    """One folder of symlinks per class: nothing copied."""
    for name in CLASSES:
        (root / name).mkdir(parents=True)
    for path, label in zip(paths, labels):
        (root / CLASSES[label] / path.name).symlink_to(path.resolve())
    return root


def command(args: list[str], log: Path) -> None:
    """Run one of retrain's console scripts, its output to `log`; stop with its tail on failure."""
    started = time.perf_counter()
    with log.open("w") as out:
        result = subprocess.run(args, stdout=out, stderr=subprocess.STDOUT)
    print(f"  {Path(args[0]).name} {' '.join(args[1:3])} ...: {time.perf_counter() - started:.0f} s")
    if result.returncode:
        raise SystemExit(f"{args[0]} failed ({result.returncode}):\n" + "\n".join(log.read_text().splitlines()[-20:]))


def export_all(train_tree: Path, val_tree: Path, folder: Path, args: argparse.Namespace) -> dict[str, Path]:
    """retrain once (writing the `none` .tflite), then export_tflite for the other modes."""
    bin_dir = Path(sys.executable).parent
    saved_model = folder / "saved_model"
    models = {mode: folder / f"isic_{mode}.tflite" for mode in MODES}
    train = [str(bin_dir / "retrain"), "--image_dir", str(train_tree), "--validation_dir", str(val_tree),
             "--recipe", "strong", "--operating_point", OPERATING_POINT, "--saved_model_dir", str(saved_model),
             "--bottleneck_dir", str(args.bottleneck_dir), "--output_graph", str(folder / "graph.pb"),
             "--output_labels", str(folder / "labels.txt"), "--tflite_output", str(models["none"]),
             "--summaries_dir", str(folder / "summaries")]
    if args.model_dir:
        train += ["--model_dir", str(args.model_dir)]
    command(train, folder / "retrain.log")
    for mode in MODES[1:]:
        command([str(bin_dir / "export_tflite"), "--saved_model_dir", str(saved_model), "--output", str(models[mode]),
                 "--quantization", mode, "--image_dir", str(train_tree)], folder / f"export_{mode}.log")
    return models


def mediapipe_probabilities(model: Path, images: list[Path], labels: tuple[str, ...], size: int | None = None) -> np.ndarray:
    """[images, classes] in `labels`' order, from the probability head of MediaPipe's ImageClassifier:
    each file as an app hands it over (mp.Image.create_from_file), or with `size` the pixels
    label_image feeds its model (retrain's decode and resize), to tell the resize from the rest."""
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision

    from retrain.data.images import load_image

    options = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=str(model)))
    rows = []
    with vision.ImageClassifier.create_from_options(options) as classifier:
        for image in images:
            picture = (mp.Image.create_from_file(str(image)) if size is None else
                       mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(load_image(image, size))))
            heads = {head.head_name: head for head in classifier.classify(picture).classifications}
            scores = {c.category_name: c.score for c in heads["probability"].categories}
            rows.append([scores[label] for label in labels])
    return np.array(rows)


def label_image_probabilities(classifier, images: list[Path]) -> np.ndarray:
    """[images, classes] in the classifier's label order, through retrain.api.load's Classifier."""
    rows = []
    for result in classifier(images, top_k=len(classifier.labels)):
        scores = {p.label: p.score for p in result.predictions}
        rows.append([scores[label] for label in classifier.labels])
    return np.array(rows)


def compare(model: Path, images: list[Path], truth: np.ndarray) -> list[str]:
    """One table row: how far MediaPipe's probabilities are from label_image's on `images`."""
    from retrain.api import load

    classifier = load(model)
    labels = classifier.labels
    ours = label_image_probabilities(classifier, images)
    theirs = mediapipe_probabilities(model, images, labels)
    difference = np.abs(ours - theirs)
    same_pixels = np.abs(ours - mediapipe_probabilities(model, images, labels, classifier.model.input_height))
    point = next(p for p in classifier.model_card.operating_points if p.label == "melanoma")
    melanoma = labels.index("melanoma")
    flips = int(((ours[:, melanoma] >= point.threshold) != (theirs[:, melanoma] >= point.threshold)).sum())
    positives = [truth == CLASSES.index(label.replace(" ", "_")) for label in labels]  # poets' label names
    aucs = [f"{roc_auc(ours[:, i], positive):.3f} / {roc_auc(theirs[:, i], positive):.3f}"
            for i, positive in enumerate(positives)]
    agreement = (ours.argmax(1) == theirs.argmax(1)).sum()
    return [model.stem.removeprefix("isic_"), f"{agreement}/{len(images)}", f"{difference.mean():.4f}",
            f"{difference.max():.4f}", f"{same_pixels.max():.4f}", *aucs,
            f"{flips} (threshold {point.threshold:.3f})"]


def run(args: argparse.Namespace, isic_dir: Path) -> None:
    from retrain import paths

    started = time.perf_counter()
    args.bottleneck_dir = args.bottleneck_dir or paths.default_bottleneck_dir()
    (train_paths, train_y), (val_paths, val_y) = isic_set(isic_dir, "Training"), isic_set(isic_dir, "Validation")
    with tempfile.TemporaryDirectory(prefix="mediapipe_isic_") as name:
        folder = Path(name)
        train_tree = class_tree(train_paths, train_y, folder / "train")
        val_tree = class_tree(val_paths, val_y, folder / "validation")
        print(f"ISIC 2017: {len(train_y)} training, {len(val_y)} validation images; bottlenecks {args.bottleneck_dir}")
        models = export_all(train_tree, val_tree, folder, args)
        images = [val_tree / CLASSES[label] / path.name for path, label in zip(val_paths, val_y)]
        rows = [compare(models[mode], images, val_y) for mode in MODES]
    header = ["mode", "top-1 agree", "mean abs diff", "max abs diff", "max abs diff, label_image's pixels",
              *[f"AUC {c} (label_image / MediaPipe)" for c in CLASSES], f"{OPERATING_POINT} decided differently"]
    print("\nMediaPipe (mp.Image.create_from_file, its own resize) against label_image on the ISIC 2017 validation images:\n")
    print_table(header, rows)
    print(f"\nCPU: {cpu_model()}; {time.perf_counter() - started:.0f} s in all")


def main() -> None:
    run_on_isic(isic_parser(__doc__.splitlines()[0]), run)


if __name__ == "__main__":
    main()
