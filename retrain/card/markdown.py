"""The model card in words: a short `*.model_card.md` beside every exported model, made from
the JSON model card the model carries, so the two can never disagree.

It says what the model is for (decision support, not diagnosis), what it learned from, how
it did on held-out images, how its scores become decisions, and where it must not be
trusted. evaluate's report shows the same sections at its top.
"""

from __future__ import annotations

import math
from pathlib import Path

from retrain.card.model_card import EnsembleMember, Figures, ModelCard
from retrain.decisions.calibration import Calibration
from retrain.decisions.ood import HARD_FACTOR
from retrain.decisions.operating_points import where
from retrain.errors import UserError
from retrain.metrics import percent, wilson_interval
from retrain.paths import write_atomically

MARKDOWN_SUFFIX = ".model_card.md"


def model_card_markdown_path(model_path: Path, saved_model: bool = False) -> Path:
    """X.pb -> X.model_card.md; X.tflite -> X.tflite.model_card.md (beside its sidecar, so a .pb and
    a .tflite of the same name keep one each); a SavedModel folder -> inside its assets.extra."""
    model_path = Path(model_path).expanduser()
    if saved_model:
        return model_path / "assets.extra" / "model_card.md"
    if model_path.suffix.lower() == ".tflite":
        return model_path.with_name(model_path.name + MARKDOWN_SUFFIX)
    return model_path.with_suffix(MARKDOWN_SUFFIX)


def write_model_card_markdown(card: ModelCard, path: Path) -> None:
    path = Path(path).expanduser()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, model_card_markdown(card).encode("utf-8"))
    except OSError as e:
        raise UserError(f"{path}: cannot write the model card ({e.strerror or e})") from e


def model_card_markdown(card: ModelCard) -> str:
    lines = ["# Model card", ""]
    for heading, body in model_card_sections(card):
        lines += [f"## {heading}", "", *body, ""]
    return "\n".join(lines)


def model_card_sections(card: ModelCard) -> list[tuple[str, list[str]]]:
    """(heading, plain-text lines) in reading order; bullets start with "- "."""
    return [
        ("Intended use", _intended_use(card)),
        ("Training data", _training_data(card)),
        ("Model", _model(card)),
        ("Validation figures", _validation(card)),
        ("Test-split figures", _test(card)),
        ("Operating points", _operating_points(card)),
        ("Calibration", _calibration(card)),
        ("Out-of-distribution check", _ood(card)),
        ("Subgroups", _subgroups(card)),
        ("Known limits", _limits(card)),
    ]


def _intended_use(card: ModelCard) -> list[str]:
    return [f"Decision support, not diagnosis: it sorts an image into one of {len(card.labels)} classes "
            f"({', '.join(card.labels)}) to help a trained person decide what to look at more closely. "
            "Every output must be checked by a clinician; it does not replace examination, history or histology.",
            "It expects images like the ones it was trained on (for dermoscopy models: dermoscopic images of a "
            "single lesion)."]


def _training_data(card: ModelCard) -> list[str]:
    data = card.training_data
    if not data:
        return ["Not recorded (the model was exported before retrain recorded it)."]
    lines = [f"- images: {data.image_dir}" if data.image_dir or not data.image_list else
             f"- images: listed in {data.image_list}"]
    for name, folder in (("validation", data.validation_dir), ("test", data.test_dir)):
        if folder:
            lines.append(f"- {name} images: {folder}")
    counts = data.counts
    lines += ["", "| class | " + " | ".join(counts) + " |", "|---|" + "---|" * len(counts)]
    for label in card.labels:
        lines.append(f"| {label} | " + " | ".join(str(counts[s].get(label, 0)) for s in counts) + " |")
    return lines


def _model(card: ModelCard) -> list[str]:
    lines = [f"- backbone: {card.architecture} at {card.input_size} px",
             f"- recipe: {card.recipe or 'not recorded'}"]
    if card.colour_constancy:
        lines.append(f"- colour constancy inside the model, before its normalisation: {card.colour_constancy}")
    tuned = card.fine_tuning
    if tuned:
        averaged = f", weights averaged (EMA, decay {tuned.ema_decay:g})" if tuned.ema_decay else ""
        lines.append(f"- fine-tuned: {tuned.layers} layers, {tuned.epochs} epochs, kept epoch {tuned.kept_epoch}{averaged}")
    if card.patient_metadata:
        lines.append(f"- also takes patient metadata: {', '.join(card.patient_metadata.columns)}")
    if card.members:
        lines.append(f"- an ensemble of {len(card.members)} models, the mean of their calibrated logits, fed at "
                     f"{card.input_size} px (smaller members see the image resized inside the model):")
        lines += [f"  - {_member(member)}" for member in card.members]
    return lines


def _member(member: EnsembleMember) -> str:
    described = f"{member.path}: {member.architecture} at {member.input_size} px, recipe {member.recipe or 'not recorded'}"
    if member.colour_constancy:
        described += ", colour constancy"
    if member.validation_auc is not None:
        described += f", validation mean AUC {member.validation_auc:.3f}"
    return described


def _validation(card: ModelCard) -> list[str]:
    figures = card.validation_figures
    if not figures or figures.empty:
        return ["Not recorded."]
    choices, on_validation, known = _choices(card)
    if not known:
        verdict = "Not every choice was recorded, so these figures may lean optimistic; evaluate on a held-out set."
    elif on_validation:
        named = on_validation[0] if len(on_validation) == 1 else f"{', '.join(on_validation[:-1])} and {on_validation[-1]}"
        verdict = (f"The {named} {'was' if len(on_validation) == 1 else 'were'} chosen on these same images, so these "
                   "figures lean a little optimistic; evaluate on a held-out set.")
    else:
        verdict = "Nothing that shapes these figures was chosen on these images."
    return [f"On {figures.count} validation images, which the top layer did not train on:", *_figure_lines(figures),
            "", "What was chosen on which images:", *choices, "", verdict]


def _choices(card: ModelCard) -> tuple[list[str], list[str], bool]:
    """One line per choice made after training (kept step, kept epoch, temperature, thresholds),
    saying on which images it was made; the names of those that shape the validation figures
    and were made on the validation images; whether the card records all of them."""
    lines, on_validation = [], []
    top = card.top_layer
    if top is None:
        lines.append("- the top layer's step: not recorded (the model was exported before retrain recorded it)")
    elif top.early_stopping_metric:
        lines.append(f"- the top layer's step: step {top.kept_step} of {top.steps}, the best by validation "
                     f"{top.early_stopping_metric} (early stopping)")
        on_validation.append("top layer's step")
    else:
        lines.append(f"- the top layer's step: the last, step {top.kept_step} (no early stopping)")
    tuned = card.fine_tuning
    if tuned and tuned.kept_epoch is not None:
        lines.append(f"- fine-tuning's epoch: epoch {tuned.kept_epoch} of {tuned.epochs}, the best on the "
                     "validation images")
        on_validation.append("fine-tuning's epoch")
    elif tuned:
        lines.append("- fine-tuning's epoch: the last (no validation images)")
    calibration = card.calibration
    if calibration:
        lines.append(f"- the temperature: on {where(calibration.chosen_on)} ({calibration.count} images)"
                     + _recalibrated_from(calibration))
        if calibration.chosen_on == "validation" and len(card.labels) > 2:
            on_validation.append("temperature")  # with more than two classes it moves the one-vs-rest AUCs
    for point in card.points:
        if point.target == "threshold":
            lines.append(f"- the threshold for {point.label} ({point.threshold:.4g}): set by hand")
        else:
            lines.append(f"- the threshold for {point.label} (for {point.target} {point.value:g}): on "
                         f"{where(point.chosen_on)}")
    return lines, on_validation, top is not None


def _figure_lines(figures: Figures) -> list[str]:
    accuracy = figures.accuracy
    lines = [f"- accuracy {percent(accuracy.value)} (95% CI {_interval(accuracy.interval)})"]
    for label, auc in figures.auc.items():
        if auc.no_auc:
            lines.append(f"- {label}: no AUC, since {auc.no_auc} ({auc.positives} images of the class)")
            continue
        lines.append(f"- {label}: AUC {_number(auc.auc)} (95% CI {_interval(auc.interval, percent=False)}, "
                     f"{auc.positives} images of the class)")
    return lines


def _test(card: ModelCard) -> list[str]:
    figures = card.test_figures
    if figures is None:
        return ["Not recorded."]
    if figures.empty:
        return ["None: retrain had no test images."]
    ece = f"{figures.ece:.3f}"
    if figures.ece_before is not None:
        ece = f"{figures.ece_before:.3f} before calibration, {ece} after"
    return [f"On {figures.count} test images, on which nothing was chosen, as retrain printed them:",
            *_figure_lines(figures),
            f"- expected calibration error {ece} (sampling alone gives about {figures.ece_floor:.3f})"]


def _operating_points(card: ModelCard) -> list[str]:
    points = card.points
    if not points:
        # A sentence of the card, for its reader: the commands that set an operating point.
        return ["None stored: the model gives scores only. Set one with retrain --operating_point or "
                "set_operating_point."]
    lines = []
    for point in points:
        sensitivity = _interval(wilson_interval(round(point.sensitivity * point.positives), point.positives))
        specificity = _interval(wilson_interval(round(point.specificity * point.negatives), point.negatives))
        lines.append(f"- {point.describe()}; 95% CI sensitivity {sensitivity}, specificity {specificity}")
    return lines


def _calibration(card: ModelCard) -> list[str]:
    calibration = card.calibration
    if not calibration:
        return ["Not calibrated: its probabilities may be over- or under-confident."]
    return [f"Temperature {calibration.temperature:.3g}, fitted on {where(calibration.chosen_on)} "
            f"({calibration.count} images) and folded into the exported model: negative log-likelihood "
            f"{calibration.nll_before:.3f} before, {calibration.nll_after:.3f} after; expected calibration "
            f"error {calibration.ece_before:.3f} before, {calibration.ece_after:.3f} after"
            + (f" (sampling alone gives about {calibration.ece_floor:.3f} on that many images)."
               if calibration.ece_floor is not None else ".")
            + (f" It recalibrates the model: the logits are divided by {calibration.total_temperature:.3g} in all."
               if calibration.recalibrated_from else "")]


def _recalibrated_from(calibration: Calibration) -> str:
    """Each earlier temperature, newest first: set_operating_point.recalibrate keeps them."""
    earlier, text = calibration.recalibrated_from, ""
    while earlier is not None:
        text += (f", on top of temperature {earlier.temperature:.3g} fitted on {where(earlier.chosen_on)} "
                 f"({earlier.count} images)")
        earlier = earlier.recalibrated_from
    return text


def _ood(card: ModelCard) -> list[str]:
    ood = card.ood
    if not ood:
        return ["None: the model answers for any image, however unlike its training images."]
    if ood.unavailable:
        return [f"Output `{ood.output_name}` is there, but unusable: {ood.unavailable}."]
    thresholds = ood.thresholds
    return [f"Output `{ood.output_name}`: the Mahalanobis distance of the image's features (scaled to unit "
            f"length) to the nearest training class. Above {thresholds.unlike:.3g} the image is noted as unlike the "
            f"training images (another camera, collection or population): the figures above may not hold for it. "
            f"This threshold flags {percent(ood.flagged_share)} of {ood.chosen_on} images.",
            f"Above {thresholds.not_of_kind:.3g} ({HARD_FACTOR:g} times that) the image is not of the kind the model "
            "was made for (blank frames, noise, text and photos of other things score there), and its prediction "
            "is set aside."]


def _subgroups(card: ModelCard) -> list[str]:
    rows = card.subgroup_lines
    if not rows:
        # A sentence of the card, for its reader: the command that measures subgroups.
        return ["Not measured at training. Run evaluate --metadata on a labelled set to see figures by sex and age."]
    return ["On the validation images:", "", "```", *rows, "```"]


def _limits(card: ModelCard) -> list[str]:
    lines = ["- Only as good as its training images: other cameras, populations, skin types or lesion kinds "
             "may score worse, and the validation figures do not show it.",
             "- Figures come from small sets; read their confidence intervals, not only the point values."]
    if not (card.ood and card.ood.thresholds):
        lines.append("- It has no check for images unlike its training images.")
    if card.quantization not in (None, "none"):
        lines.append(f"- This .tflite is quantized ({card.quantization}): its scores differ slightly from the "
                     "float model the figures were measured on.")
    return lines


def _number(value) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def _interval(bounds, percent: bool = True) -> str:
    low, high = bounds
    if low is None or (isinstance(low, float) and math.isnan(low)):
        return "n/a"
    return f"{100 * low:.0f}-{100 * high:.0f}%" if percent else f"{low:.3f}-{high:.3f}"
