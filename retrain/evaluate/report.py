"""evaluate's report: one self-contained HTML page to open offline (every picture embedded as
a data: URL, no script, no outside reference): the model card, the model and data, the
figures, ROC curves with the stored operating points, confusion matrix, calibration, the
out-of-distribution flags, subgroups, and the mistakes with heatmaps."""

from __future__ import annotations

import base64
import datetime
import html
import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from retrain.data.images import ImageError, load_image, load_upright
from retrain.errors import UserError
from retrain.evaluate.decisions import CALIBRATION_BINS, Decisions, measure_decisions
from retrain.data.training_copies import TrainingCopies
from retrain.evaluate.evaluation import Predictions, draw_roc
from retrain.patient.subgroups import LEGEND, Subgroups
from retrain.card.markdown import model_card_sections
from retrain.metrics import auc_classes, positive_class_index, reliability_bins, roc_curve
from retrain.paths import write_atomically
from retrain.predict.heatmaps import heatmaps_for, overlay
from retrain.predict.loaded_model import LoadedModel

THUMBNAILS = 8  # per gallery
THUMBNAIL_SIDE = 150  # the image and its heatmap side by side
SENSITIVITY_TARGETS = (0.90, 0.95)


@dataclass
class EvaluatedModel:
    model: LoadedModel
    predictions: Predictions
    result: dict  # metrics.evaluate_probabilities
    decisions: Decisions | None = None  # measured from the model card when not given


def check_report_path(path: Path) -> Path:
    """Checked before any image is classified, so a typo costs nothing."""
    path = Path(path).expanduser()
    if not path.parent.is_dir():
        raise UserError(f"EvaluationOutputs.report {path}: the folder {path.parent} does not exist")
    if path.is_dir():
        raise UserError(f"EvaluationOutputs.report {path}: is a folder; give a file name such as report.html")
    return path


def write_report(path: Path, evaluated: list[EvaluatedModel], image_dir: Path, tta: bool, warn=None,
                 training_copies: TrainingCopies | None = None) -> None:
    """`warn` is told once how many gallery images could no longer be read, and were left out;
    `training_copies` (evaluate's training_dir) are listed above the models' sections."""
    undrawn: list[Path] = []
    sections = [_copies_section(training_copies)] + [_model_section(e, tta, undrawn) for e in evaluated]
    if undrawn and warn:
        warn(f"EvaluationOutputs.report {path}: {len(undrawn)} image(s) could not be read again and are left out of the "
             f"galleries (first: {undrawn[0]})")
    page = _PAGE.format(
        title=html.escape(f"retrain report: {Path(image_dir).name}"),
        heading=html.escape(f"Evaluation of {', '.join(Path(e.model.source).name for e in evaluated)}"),
        when=datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        image_dir=html.escape(str(Path(image_dir).expanduser().resolve())),
        body="\n".join(sections),
    )
    path = Path(path).expanduser()
    try:
        # A file name that is not valid UTF-8 shows as U+FFFD: the page stays valid text.
        write_atomically(path, page.encode("utf-8", "surrogateescape").decode("utf-8", "replace").encode("utf-8"))
    except OSError as e:
        raise UserError(f"EvaluationOutputs.report {path}: cannot write ({e.strerror or e})") from e


def _copies_section(found: TrainingCopies | None) -> str:
    if found is None:
        return ""
    where = html.escape(str(found.training_dir))
    if found.same_folder:
        # The page's reader ran evaluate: the sentence names its flag.
        text = (f"--image_dir is the training tree {where}: every image measured is a training image, so the "
                "figures measure memory, not new images.")
    elif not found.copies:
        text = f"None of the images copies an image of the training tree {where}."
    else:
        text = (f"{len(found.copies)} of the images copy an image of the training tree {where} (kept, so the "
                "figures overstate accuracy on new images).")
    rows = [(str(c.path), str(c.original), c.how) for c in found.copies]
    return (f"<section><h2>Copies of training images</h2><p>{text}</p>"
            + (_table(["image measured", "training image", "how"], rows) if rows else "") + "</section>")


def _model_section(evaluated: EvaluatedModel, tta: bool, undrawn: list[Path]) -> str:
    model, predictions, result = evaluated.model, evaluated.predictions, evaluated.result
    decisions = evaluated.decisions or measure_decisions(model.model_card, predictions)
    labels = predictions.labels
    parts = [f"<h2>{html.escape(model.source)}</h2>", _model_card(model),
             _model_table(model, predictions, tta), _summary(result, labels)]
    parts.append("<div class='row'>" + _figure(_roc_png(predictions, result, decisions), "ROC curves")
                 + _points_table(decisions)
                 + _figure(_confusion_png(result, labels), "Confusion matrix (rows: true class)")
                 + _figure(_calibration_png(predictions, decisions), "Reliability diagram") + "</div>")
    parts.append(_calibration_note(decisions))
    parts.append(_per_class_table(result, labels))
    parts.append(_ood_section(decisions))
    if decisions.subgroups is not None:
        parts.append(_subgroups_section(decisions.subgroups))
    parts.append(_hindsight_section(predictions))
    parts.append(_galleries(model, predictions, undrawn))
    return "<section>" + "\n".join(parts) + "</section>"


def _model_card(model: LoadedModel) -> str:
    """The model card's sections, as the *.model_card.md beside the model says them."""
    if model.model_card is None:
        return ("<p class='note'>No model card: the model carries no retrain model card (a tensorflow-for-poets "
                "graph, or not exported by retrain).</p>")
    sections = "".join(f"<h4>{html.escape(heading)}</h4>{_card_lines(lines)}"
                       for heading, lines in model_card_sections(model.model_card))
    return f"<details open class='card-text'><summary>Model card</summary>{sections}</details>"


def _card_lines(lines: list[str]) -> str:
    """Plain-text lines as HTML: runs of "- " bullets as a list, of "| a | b |" rows as a table
    (the "|---|" rule dropped), other lines as paragraphs; every text escaped."""
    out, bullets, rows = [], [], []

    def flush() -> None:
        if bullets:
            out.append("<ul>" + "".join(f"<li>{html.escape(b)}</li>" for b in bullets) + "</ul>")
        if rows:
            out.append(_table(rows[0], [tuple(r) for r in rows[1:]]))
        bullets.clear()
        rows.clear()

    for line in lines:
        if line.startswith("- "):
            bullets.append(line[2:])
            continue
        if line.startswith("|"):
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            if not all(set(cell) <= {"-", ":"} for cell in cells):
                rows.append(cells)
            continue
        flush()
        if line.strip():
            out.append(f"<p>{html.escape(line)}</p>")
    flush()
    return "".join(out)


def _model_table(model: LoadedModel, predictions: Predictions, tta: bool) -> str:
    card = model.model_card
    counts = np.bincount(predictions.true, minlength=len(predictions.labels))
    rows = [
        ("Model", model.source),
        ("Backbone", card.architecture if card else "unknown (no retrain model card)"),
        ("Recipe", (card.recipe if card else None) or "unknown"),
        ("Input size", f"{model.input_width} x {model.input_height} pixels"),
        ("Classes", ", ".join(f"{label} ({n})" for label, n in zip(predictions.labels, counts))),
        ("Images", f"{len(predictions.paths)}" + (f" ({len(predictions.failures)} unreadable, left out)"
                                                  if predictions.failures else "")),
        ("Test-time augmentation", "the four flips, averaged" if tta else "none"),
    ]
    tuned = card.fine_tuning if card else None
    if tuned:
        rows.append(("Fine-tuning", ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in tuned.to_json().items()
                                               if v is not None and not isinstance(v, (list, dict)))))
    return _table(["", ""], rows, header=False)


def _summary(result: dict, labels: list[str]) -> str:
    aucs = [v for v in result["auc"].values() if not math.isnan(v)]
    if len(labels) == 2:
        positive = labels[positive_class_index(labels)]
        auc_text = f"AUC ({positive}) {result['auc'][positive]:.3f}"
    else:
        auc_text = f"mean one-vs-rest AUC {np.mean(aucs):.3f}" if aucs else "AUC undefined"
    figures = [f"{result['n']} images", f"accuracy {100 * result['accuracy']:.1f}%",
               f"balanced accuracy {100 * result['balanced_accuracy']:.1f}%", auc_text]
    return "<p class='summary'>" + " &middot; ".join(html.escape(f) for f in figures) + "</p>"


def _per_class_table(result: dict, labels: list[str]) -> str:
    rows = []
    for label in labels:
        c = result["per_class"][label]
        rows.append((label, _num(c["precision"]), _num(c["recall"]), _num(c["f1"]), _num(result["auc"][label]),
                     str(c["support"])))
    return "<h3>Per class</h3>" + _table(["class", "precision", "recall (sensitivity)", "F1", "AUC", "images"], rows)


def hindsight_thresholds(scores: np.ndarray, positive: np.ndarray) -> list[tuple[str, float, float, float]]:
    """(how chosen, threshold, sensitivity, specificity): at 0.5, and the highest threshold
    whose sensitivity reaches each target on these very images (so optimistic, unlike a
    stored operating point)."""
    positive = np.asarray(positive, bool)
    points = []

    def at(threshold: float) -> tuple[float, float]:
        called = scores >= threshold
        sensitivity = called[positive].mean() if positive.any() else float("nan")
        specificity = (~called[~positive]).mean() if (~positive).any() else float("nan")
        return float(sensitivity), float(specificity)

    points.append(("threshold 0.5", 0.5, *at(0.5)))
    if positive.any():
        _, tpr, thresholds = roc_curve(scores, positive)
        for target in SENSITIVITY_TARGETS:
            threshold = float(thresholds[np.argmax(tpr >= target - 1e-12)])
            points.append((f"sensitivity {100 * target:.0f}%", threshold, *at(threshold)))
    return points


def _hindsight_section(predictions: Predictions) -> str:
    rows = []
    for index in auc_classes(predictions.labels):
        label = predictions.labels[index]
        for how, threshold, sensitivity, specificity in hindsight_thresholds(
                predictions.probabilities[:, index], predictions.true == index):
            rows.append((label, how, f"{threshold:.3f}", _num(sensitivity), _num(specificity)))
    note = ("<p class='note'>An image is called positive when the class's probability is at least the threshold. "
            "The thresholds that reach a sensitivity are chosen on these images, so they are optimistic for new ones; "
            "the model's stored operating points, chosen before, are measured above.</p>")
    return "<h3>Sensitivity and specificity at thresholds chosen on these images</h3>" + note + _table(
        ["positive class", "chosen by", "threshold", "sensitivity", "specificity"], rows)


def _points_table(decisions: Decisions) -> str:
    """The stored operating points measured on these images, beside the ROC curves they are marked on."""
    if not decisions.points:
        reason = decisions.no_point or "none stored"
        return (f"<div><h3>Operating points</h3><p class='note'>No operating point stored ({html.escape(reason)}): "
                "scores only.</p></div>")
    rows = [(f"{m.point.label} >= {m.point.threshold:.3g}", m.how_chosen(), str(m.sensitivity), str(m.specificity))
            for m in decisions.points]
    note = ("<p class='note'>Stored in the model; measured on these images, with 95% Wilson intervals. "
            "Marked on the ROC curves.</p>")
    return ("<div><h3>Operating points</h3>" + note
            + _table(["operating point", "how", "sensitivity", "specificity"], rows) + "</div>")


def _calibration_note(decisions: Decisions) -> str:
    return "" if decisions.calibration is None else f"<p class='note'>{html.escape(decisions.calibration.line())}</p>"


def _ood_section(decisions: Decisions) -> str:
    ood = decisions.ood
    if ood is None:
        return ("<h3>Out-of-distribution</h3><p class='note'>No out-of-distribution check stored: the model cannot "
                "flag images unlike its training images.</p>")
    rows = [(str(path), f"{score:.4g}") for path, score in ood.images]
    listing = _table(["flagged image", "ood score"], rows) if rows else "<p class='note'>No image flagged.</p>"
    return f"<h3>Out-of-distribution</h3><p>{html.escape(ood.summary())}</p>" + listing


def _subgroups_section(subgroups: Subgroups) -> str:
    parts = [f"<h3>Subgroups</h3><p class='note'>{html.escape(LEGEND)}.</p><div class='row'>"]
    for column in subgroups.columns:
        parts += [f"<div><h4>{html.escape(title)}</h4>{_table(header, [tuple(r) for r in rows])}</div>"
                  for title, header, rows in column.tables()]
    parts.append("</div>")
    parts += [f"<p class='note'>{html.escape(reason)}: no groups.</p>" for reason in subgroups.skipped]
    return "".join(parts)


def _galleries(model: LoadedModel, predictions: Predictions, undrawn: list[Path]) -> str:
    probabilities, true = predictions.probabilities, predictions.true
    predicted = np.argmax(probabilities, axis=1)
    confidence = probabilities[np.arange(len(predicted)), predicted]
    wrong = np.flatnonzero(predicted != true)
    right = np.flatnonzero(predicted == true)
    mistakes = wrong[np.argsort(-confidence[wrong], kind="stable")][:THUMBNAILS]
    unsure = right[np.argsort(confidence[right], kind="stable")][:THUMBNAILS]
    # The page's reader knows the commands: the heatmap is label_image's.
    note = ("<p class='note'>Each picture shows where the evidence for the predicted class lies (red: most), "
            "as in <code>label_image --heatmap</code>.</p>")
    if model.class_activation_maps is None:
        note = f"<p class='note'>No heatmaps: {html.escape(model.no_maps_reason)}.</p>"
    return (note + "<h3>The most confident mistakes</h3>" + _gallery(model, predictions, mistakes, "no mistakes", undrawn)
            + "<h3>The least confident correct answers</h3>" + _gallery(model, predictions, unsure, "none", undrawn))


def _gallery(model: LoadedModel, predictions: Predictions, indices: np.ndarray, empty: str,
             undrawn: list[Path]) -> str:
    """Thumbnails of the images at `indices`; one that cannot be read again goes to `undrawn`."""
    if not len(indices):
        return f"<p class='note'>{empty}</p>"
    labels = predictions.labels
    heatmaps = [None] * len(indices)
    if model.class_activation_maps is not None:
        try:
            pixels = np.stack([load_image(predictions.paths[i], (model.input_width, model.input_height))
                               for i in indices]).astype(np.float32)
            rows = None if predictions.patient_rows is None else predictions.patient_rows[indices]
            heatmaps = heatmaps_for(model, pixels, labels, rows=rows)
        except ImageError:
            pass  # the image changed since it was classified: show it without a heatmap
    cards = []
    for i, heatmap in zip(indices, heatmaps):
        path = predictions.paths[i]
        try:
            picture = load_upright(path, THUMBNAIL_SIDE)
        except ImageError:
            undrawn.append(path)
            continue
        pictures = [picture] + ([overlay(picture, heatmap.grid)] if heatmap is not None else [])
        order = np.argsort(-predictions.probabilities[i], kind="stable")
        scores = "<br>".join(f"{html.escape(labels[k])} {predictions.probabilities[i, k]:.3f}" for k in order[:4])
        cards.append(
            "<figure class='card'>"
            + "".join(f"<img src='{_data_url(_png_of(p))}' alt='{html.escape(path.name)}'>" for p in pictures)
            + f"<figcaption><b>{html.escape(path.name)}</b><br>true: {html.escape(labels[predictions.true[i]])}"
            f"<br>predicted: {html.escape(labels[order[0]])}<br>{scores}</figcaption></figure>"
        )
    return "<div class='row'>" + "".join(cards) + "</div>"


def _calibration_png(predictions: Predictions, decisions: Decisions) -> bytes:
    """Accuracy against confidence per bin (the same bins as the error printed), with counts and the diagonal."""
    bins = reliability_bins(predictions.probabilities, predictions.true, CALIBRATION_BINS)
    figure, axes = _figure_and_axes()
    width = 1 / CALIBRATION_BINS
    centres = [(min(int(confidence * CALIBRATION_BINS), CALIBRATION_BINS - 1) + 0.5) * width for confidence, _, _ in bins]
    accuracy = [a for _, a, _ in bins]
    confidence = [c for c, _, _ in bins]
    axes.bar(centres, accuracy, width=width, edgecolor="black", alpha=0.7, label="accuracy in the bin")
    axes.plot(confidence, confidence, "o", color="crimson", label="mean confidence")
    axes.plot([0, 1], [0, 1], linestyle=":", color="grey")
    for centre, (_, _, count) in zip(centres, bins):
        axes.text(centre, 0.02, str(count), ha="center", fontsize=7)
    error = decisions.calibration.ece if decisions.calibration is not None else float("nan")
    axes.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="confidence in the predicted class", ylabel="accuracy",
             title=f"expected calibration error {error:.3f}")
    axes.legend(loc="upper left", fontsize=8)
    return _png_of_figure(figure)


def _roc_png(predictions: Predictions, result: dict, decisions: Decisions) -> bytes:
    """The ROC curves, each stored operating point marked where it falls on its class's curve."""
    drawn = auc_classes(predictions.labels)
    curves = [(predictions.labels[i], predictions.probabilities[:, i], predictions.true == i,
               result["auc"][predictions.labels[i]]) for i in drawn]
    figure, axes = _figure_and_axes()
    draw_roc(axes, curves)
    colours = {predictions.labels[i]: line.get_color() for i, line in zip(drawn, axes.lines)}
    for measured in decisions.points:
        label = measured.point.label
        if label in colours:
            axes.plot(1 - measured.specificity.value, measured.sensitivity.value, "o", color=colours[label],
                      markeredgecolor="black", markersize=8, zorder=3,
                      label=f"{label} >= {measured.point.threshold:.3g}")
    if decisions.points:
        axes.legend(loc="lower right", fontsize=7)
    axes.set(xlim=(0, 1), ylim=(0, 1.01))
    return _png_of_figure(figure)


def _confusion_png(result: dict, labels: list[str]) -> bytes:
    matrix = np.array(result["confusion_matrix"])
    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    figure, axes = _figure_and_axes()
    axes.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for (row, column), count in np.ndenumerate(matrix):
        axes.text(column, row, f"{count}\n{100 * shares[row, column]:.0f}%", ha="center", va="center", fontsize=8,
                  color="white" if shares[row, column] > 0.6 else "black")
    names = [label.replace(" ", "\n") for label in labels]
    axes.set_xticks(range(len(labels)), names, fontsize=8)
    axes.set_yticks(range(len(labels)), names, fontsize=8)
    axes.set(xlabel="predicted", ylabel="true")
    return _png_of_figure(figure)


def _figure_and_axes():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(4.2, 4), dpi=100)


def _png_of_figure(figure) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()


def _png_of(picture) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def _data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _figure(png: bytes, caption: str) -> str:
    return (f"<figure><img src='{_data_url(png)}' alt='{html.escape(caption)}'>"
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _num(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.3f}"


def _table(columns: list[str], rows: list[tuple], header: bool = True) -> str:
    head = "<tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in columns) + "</tr>" if header else ""
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(cell))}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table>{head}{body}</table>"


# The page says which command made it ("evaluate --report"), for its reader.
_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1400px; padding: 0 1em; color: #222; }}
h1 {{ font-size: 1.5em; }} h2 {{ font-size: 1.2em; border-bottom: 1px solid #ccc; padding-bottom: .2em; }}
h3 {{ font-size: 1.05em; margin-top: 1.5em; }}
table {{ border-collapse: collapse; margin: .5em 0; }}
td, th {{ border: 1px solid #ddd; padding: .25em .6em; text-align: left; font-size: .9em; }}
th {{ background: #f4f4f4; }}
.row {{ display: flex; flex-wrap: wrap; gap: 1em; align-items: flex-start; }}
figure {{ margin: 0; }} figcaption {{ font-size: .8em; color: #555; text-align: center; }}
.card {{ width: {card}px; }} .card img {{ margin-right: 4px; }} .card figcaption {{ text-align: left; }}
.summary {{ font-size: 1.1em; font-weight: 600; }} .note {{ color: #555; font-size: .9em; }}
.card-text {{ background: #fafafa; border: 1px solid #ddd; padding: .3em .8em; margin: .5em 0; }}
.card-text summary {{ font-weight: 600; cursor: pointer; }} .card-text h4 {{ margin: .8em 0 .2em; }}
</style>
</head>
<body>
<h1>{heading}</h1>
<p class="note">Made by retrain's <code>evaluate --report</code> on {when}, from the images in <code>{image_dir}</code>.</p>
{body}
</body>
</html>
""".replace("{card}", str(2 * THUMBNAIL_SIDE + 8))
