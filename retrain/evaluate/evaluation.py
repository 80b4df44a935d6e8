"""evaluate: classify every image of a class-per-folder tree with an exported model and
measure it; also writes per-image predictions and the ISIC submission CSV."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from retrain.data.dataset import scan_image_tree
from retrain.data.images import ImageError, is_image_file, map_batches
from retrain.errors import UserError
from retrain.json_text import dumps
from retrain.metrics import evaluate_probabilities, roc_curve, thinned_curve
from retrain.paths import write_atomically
from retrain.predict.loaded_model import LoadedModel, with_rows
from retrain.card.model_card import ModelCard
from retrain.decisions.ood import OodThresholds


@dataclass
class Predictions:
    paths: list[Path]
    probabilities: np.ndarray  # [N, classes]
    true: np.ndarray | None  # class index per image, None for an unlabelled folder
    labels: list[str]
    failures: list[ImageError]
    patient_rows: np.ndarray | None = None  # the encoded patient metadata fed beside each image, if any
    ood_scores: np.ndarray | None = None  # [N] out-of-distribution scores, when the model stores a threshold
    metadata: list[dict | None] | None = None  # each image's evaluate.patient_metadata row (None: no row), for subgroups


def ood_thresholds(card: ModelCard | None) -> OodThresholds | None:
    """The stored out-of-distribution thresholds; None when the model stores none."""
    return card.ood.thresholds if card is not None and card.ood is not None else None


def labelled_images(image_dir: Path, model_labels: list[str], warn=None) -> tuple[list[Path], np.ndarray | None]:
    """Images with their class index in the model's label order; a folder of loose
    images (no class folders) is accepted as unlabelled, for predictions only. Class
    folders win: loose images beside them are skipped, with one warning."""
    image_dir = Path(image_dir).expanduser()
    if not image_dir.is_dir():
        raise UserError(f"evaluate.image_dir {image_dir}: no such directory")
    loose = sorted(p for p in image_dir.iterdir() if p.is_file() and is_image_file(p))
    try:
        tree = scan_image_tree(image_dir)
    except UserError:
        if loose:
            return loose, None
        raise
    if loose and not tree.classes:
        return loose, None
    if loose and warn:
        warn(f"evaluate.image_dir {image_dir}: {len(loose)} image(s) outside the class folders skipped "
             f"(first: {loose[0].name})")
    paths, true = [], []
    for image_class in tree.classes:
        if image_class.label not in model_labels:
            raise UserError(
                f"evaluate.image_dir {image_class.folder}: class {image_class.label!r} is not one of the model's labels "
                f"({', '.join(model_labels)})"
            )
        paths += image_class.images
        true += [model_labels.index(image_class.label)] * len(image_class.images)
    if not paths:
        raise UserError(f"evaluate.image_dir {image_dir}: no images found")
    return paths, np.array(true)


def predict_images(
    model: LoadedModel,
    paths: list[Path],
    labels: list[str],
    batch_size: int = 32,
    progress=None,
    rows: np.ndarray | None = None,
    with_ood: bool = False,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, list[ImageError]]:
    """Probabilities for each readable path (the same load_image as training), their
    out-of-distribution scores (`with_ood`: from the same pass, through model.ood; else None),
    a mask of which paths were readable, and the failures. `rows`: encoded patient metadata
    aligned with `paths`, for a model that takes it (None: every value missing)."""

    def predict(pixels, batch_rows=None):
        output, scores = with_rows(model.ood, pixels, batch_rows) if with_ood else (
            with_rows(model.predict, pixels, batch_rows), None)
        output = np.asarray(output)
        if output.shape[1] != len(labels):
            raise UserError(f"{len(labels)} labels but the model {model.source} has {output.shape[1]} outputs")
        return output if scores is None else np.column_stack([output, np.reshape(scores, -1)])

    outputs, ok, failures = map_batches(predict, paths, (model.input_width, model.input_height), batch_size,
                                        progress, rows)
    if outputs is None:
        outputs = np.zeros((len(paths), len(labels) + with_ood), np.float32)
    return outputs[:, :len(labels)], outputs[:, len(labels)] if with_ood else None, ok, failures


def metadata_rows(model: LoadedModel, table, paths: list[Path], log, warn) -> tuple[list | None, np.ndarray | None]:
    """Each image's evaluate.patient_metadata row (for subgroups, whatever the model) and, for a model that
    takes patient metadata, the rows encoded as its input. Such a model without a table gets
    every value missing, said once."""
    from retrain.patient.table import encode, match_images

    encoding = model.patient_encoding
    if table is None:
        if encoding is not None:
            warn(f"{model.source} also takes patient metadata ({', '.join(encoding.column_names)}); without "
                 "evaluate.patient_metadata every value counts as missing")
        return None, None
    rows, without_row, unused_rows = match_images(table, paths)
    log(f"Metadata: {len(paths) - without_row} of {len(paths)} images have a row in {table.file_names()}"
        + (f"; {without_row} without one count as all missing" if without_row else "")
        + (f"; {unused_rows} rows match no image and are ignored" if unused_rows else ""))
    return rows, None if encoding is None else encode(encoding, rows, warn, table.where())


def write_json(path: Path, result: dict) -> None:
    write_atomically(Path(path).expanduser(), dumps(result, indent=2).encode())


def write_predictions(path: Path, predictions: Predictions, thresholds: OodThresholds | None = None) -> None:
    """One row per image; with out-of-distribution scores and `thresholds`, three more columns:
    the score, whether it flags the image (1) or not (0), and how (retrain.decisions.ood's levels)."""
    labels, true, scores = predictions.labels, predictions.true, predictions.ood_scores
    with_ood = scores is not None and thresholds is not None
    rows = [["image", "true_label", "predicted_label", *labels]
            + (["ood_score", "ood_flagged", "ood_level"] if with_ood else [])]
    for i, image in enumerate(predictions.paths):
        probabilities = predictions.probabilities[i]
        rows.append(
            [str(image), labels[true[i]] if true is not None else "", labels[int(np.argmax(probabilities))]]
            + [f"{p:.6f}" for p in probabilities]
            + ([f"{scores[i]:.6g}", str(int(scores[i] > thresholds.unlike)), thresholds.level(float(scores[i]))]
               if with_ood else [])
        )
    _write_csv(path, rows)


def write_isic_submission(path: Path, paths: list[Path], melanoma: np.ndarray, keratosis: np.ndarray) -> None:
    """The challenge's format: image_id,melanoma,seborrheic_keratosis with probabilities."""
    rows = [["image_id", "melanoma", "seborrheic_keratosis"]]
    rows += [[image.stem, f"{m:.6f}", f"{k:.6f}"] for image, m, k in zip(paths, melanoma, keratosis)]
    _write_csv(path, rows)


def _write_csv(path: Path, rows: list[list[str]]) -> None:
    import io

    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    # A file name's own bytes, even where they are not valid UTF-8, so the row names the file.
    write_atomically(Path(path).expanduser(), buffer.getvalue().encode("utf-8", "surrogateescape"))


def isic_scores(probabilities: np.ndarray, labels: list[str], wanted: str) -> np.ndarray | None:
    """P(wanted) from a model whose labels include it (a task model or the three-class one)."""
    return probabilities[:, labels.index(wanted)] if wanted in labels else None


def draw_roc(axes, curves: list[tuple[str, np.ndarray, np.ndarray, float | None]]) -> None:
    """ROC curves (label, scores, positives, AUC or None) and the chance diagonal on matplotlib axes."""
    for label, scores, positives, auc in curves:
        fpr, tpr, _ = roc_curve(scores, positives)
        axes.plot(*thinned_curve(fpr, tpr), label=label if auc is None else f"{label} (AUC {auc:.3f})")
    axes.plot([0, 1], [0, 1], linestyle=":", color="grey")
    axes.set(xlabel="1 - specificity", ylabel="sensitivity")
    axes.legend(loc="lower right")


PLOT_SUFFIXES = (".png", ".pdf", ".svg", ".jpg", ".jpeg")  # what matplotlib draws to without extra software


def plot_path(path: Path) -> Path:
    """The file EvaluationOutputs.plot will be, known before any image is classified: a name without a suffix
    gets .png, as matplotlib would add."""
    path = Path(path)
    return path.with_name(path.name + ".png") if not path.suffix else path


def check_plot_suffix(path: Path) -> None:
    """A suffix matplotlib cannot draw to is refused before the evaluation, not after it."""
    if Path(path).suffix.lower() not in PLOT_SUFFIXES:
        raise UserError(f"EvaluationOutputs.plot {path}: cannot draw ROC curves to a {Path(path).suffix} file; give a name ending in "
                        ".png (or .pdf, .svg, .jpg)")


def plot_roc(path: Path, curves: list[tuple[str, np.ndarray, np.ndarray, float]], title: str) -> None:
    """ROC curves (label, scores, positives, auc) to a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(5.5, 5))
    draw_roc(axes, curves)
    axes.set(title=title, xlim=(0, 1), ylim=(0, 1.01))
    figure.tight_layout()
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


def evaluate_model(model: LoadedModel, labels: list[str], image_dir: Path, progress_factory=None,
                   patient_table=None, log=None, warn=None) -> tuple[Predictions, dict | None]:
    """`progress_factory(total, label)` gives a function told how many images are done;
    `patient_table` (patient_metadata.MetadataTable) gives each image's patient metadata,
    matched by id: the model's second input if it takes one, and the subgroups."""
    paths, true = labelled_images(image_dir, labels, warn)
    rows, encoded = metadata_rows(model, patient_table, paths, log or (lambda _: None), warn)
    progress = progress_factory(len(paths), f"Classifying with {Path(model.source).name}") if progress_factory else None
    with_ood = model.ood is not None and ood_thresholds(model.model_card) is not None
    probabilities, scores, ok, failures = predict_images(model, paths, labels, progress=progress, rows=encoded,
                                                         with_ood=with_ood)
    kept = [p for p, keep in zip(paths, ok) if keep]
    predictions = Predictions(kept, probabilities[ok], None if true is None else true[ok], labels, failures,
                              None if encoded is None else encoded[ok], None if scores is None else scores[ok],
                              None if rows is None else [row for row, keep in zip(rows, ok) if keep])
    if predictions.true is None or not len(kept):
        return predictions, None
    return predictions, evaluate_probabilities(predictions.probabilities, predictions.true, labels)
