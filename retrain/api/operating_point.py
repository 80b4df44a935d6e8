"""Setting or moving the operating point of an exported model without retraining: classify a
labelled tree with it, choose the thresholds there, and write a copy whose model card carries
them. The weights are untouched, so the copy scores every image exactly as the original does;
unless `recalibrate`: then a temperature is fitted on the tree too, the thresholds are chosen on
the recalibrated probabilities, and the copy gives those (retrain.export.temperature)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from retrain.api.classification import load
from retrain.card.formats import copy_files, missing_card_place, model_kind, read_graph_def, read_model_card, \
    sidecar_path, write_copy_with_card
from retrain.card.markdown import model_card_markdown_path, write_model_card_markdown
from retrain.card.model_card import ModelCard
from retrain.data.dataset import scan_image_tree
from retrain.data.training_copies import check_not_training_tree, recorded_training_tree, warn_of_missing_classes, \
    warn_of_training_copies
from retrain.decisions.calibration import Calibration, recalibrate as fit_on_top, with_temperature
from retrain.decisions.operating_points import FEW_POSITIVES, OperatingPoint, OperatingPointSpec, \
    choose_operating_points, distinct_specs, parse_operating_point
from retrain.errors import UserError
from retrain.features.cache import cached_fingerprints
from retrain.evaluate.evaluation import Predictions, evaluate_model
from retrain.export.temperature import graph_def_with_temperature, save_saved_model_with_temperature, \
    tflite_with_temperature
from retrain.export.tflite_metadata import with_metadata
from retrain.metrics import Rate
from retrain.native_logs import import_tensorflow
from retrain.outputs import check_outputs
from retrain.reporter import Reporter

POINTS = "set_operating_point.operating_points"
TREE = "set_operating_point.image_dir"
RECALIBRATE = "set_operating_point.recalibrate"
FEW_CALIBRATION_IMAGES = 50  # below this many a temperature is mostly the prior's (fit_temperature) and luck


@dataclass(frozen=True)
class OperatingPointUpdate:
    """What set_operating_point chose and wrote."""

    graph: Path  # the model read, as given
    output: Path  # the copy written
    points: tuple[OperatingPoint, ...]  # now stored in the copy's model card
    replaced: tuple[OperatingPoint, ...]  # what the original's card stored
    images: int  # images classified to choose them
    model_card_markdown: Path  # the card in words, written beside the copy
    calibration: Calibration | None = None  # the temperature fitted on the tree (recalibrate), else None


def set_operating_point(graph: Path, image_dir: Path, operating_points: Sequence[str | OperatingPointSpec],
                        output: Path, reporter: Reporter | None = None,
                        allow_training_images: bool = False, recalibrate: bool = False) -> OperatingPointUpdate:
    """Choose each operating point ("melanoma:sensitivity=0.9") on the labelled `image_dir` and
    write a copy of `graph` (.pb, SavedModel folder or .tflite with its sidecar) to `output` whose
    card stores them in place of the old ones. Every parameter and path is checked before the slow
    classification; nothing existing is ever overwritten. The model's own training tree (the
    same folder, one inside it or one holding it) is refused unless `allow_training_images`:
    thresholds chosen on images the model trained on promise more than new images give.
    `recalibrate`: also fit a temperature on `image_dir`, on top of the model's, choose the points
    on the recalibrated probabilities and write a copy that gives them (the card keeps the
    training-time calibration as the new one's `recalibrated_from`)."""
    reporter = reporter or Reporter()
    specs = _specs(operating_points)
    graph, output, image_dir = Path(graph).expanduser(), Path(output).expanduser(), Path(image_dir).expanduser()
    kind = _check_paths(graph, image_dir, output)
    card = _read_card(graph, kind)
    labels = list(card.labels)
    specs, notes = distinct_specs(specs, labels, POINTS)
    for note in notes:
        reporter.warn(note)
    training = recorded_training_tree(card.training_data.image_dir if card.training_data else None)
    overlap = check_not_training_tree(image_dir, training, allow_training_images,
                                      (TREE, "set_operating_point.allow_training_images"), reporter.warn)
    warn_of_missing_classes(image_dir, labels, TREE, reporter.warn)
    if recalibrate:
        _check_recalibration_tree(image_dir, labels)
    if training is not None and not overlap:
        warn_of_training_copies(image_dir, training, TREE, reporter.log, reporter.warn, cached_fingerprints)
    predicted = _classify(graph, labels, image_dir, reporter)
    probabilities, calibration = predicted.probabilities, None
    if recalibrate:
        calibration = _recalibrate(card.calibration, predicted, image_dir, reporter)
        probabilities = with_temperature(probabilities, calibration.temperature)
    points = choose_operating_points(specs, labels, probabilities, predicted.true, str(image_dir))
    for point in points:
        reporter.log(f"Operating point: {point.describe()}")
        _warn_if_few(point, reporter)
    for point in card.points:
        reporter.log(f"Replaces: {point.describe()}")
    new_card = card.replace(operating_points=points, calibration=calibration or card.calibration)
    _write_copy(graph, kind, output, new_card, None if calibration is None else calibration.temperature)
    reporter.log(f"Wrote {output} and its sidecar {sidecar_path(output)}" if kind == "tflite" else f"Wrote {output}")
    markdown = model_card_markdown_path(output, kind == "saved_model")
    write_model_card_markdown(new_card, markdown)
    reporter.log(f"Wrote {markdown}")
    return OperatingPointUpdate(graph, output, points, card.points, len(predicted.paths), markdown, calibration)


def _check_recalibration_tree(image_dir: Path, labels: list[str]) -> None:
    """A temperature fitted on images of one class only sharpens the model towards that class:
    refused before classifying."""
    try:
        present = [c.label for c in scan_image_tree(image_dir, TREE).classes if c.images and c.label in labels]
    except UserError:
        return  # no class folders: the classification says so in its own line
    if len(present) < 2:
        held = f"images of only {present[0]!r}" if present else "no images of the model's classes"
        raise UserError(f"{TREE} {image_dir}: {held}; {RECALIBRATE} needs images of at least two of the model's "
                        f"classes ({', '.join(labels)}) to fit a temperature")


def _recalibrate(earlier: Calibration | None, predicted: Predictions, image_dir: Path,
                 reporter: Reporter) -> Calibration:
    """The temperature fitted on the tree on top of the model's, logged as training logs its own (with
    the expected calibration error on the tree before and after)."""
    calibration = fit_on_top(predicted.probabilities, predicted.true, str(image_dir), earlier)
    reporter.log(calibration.describe())
    if calibration.count < FEW_CALIBRATION_IMAGES:
        reporter.warn(f"{TREE} {image_dir}: only {calibration.count} images to fit the temperature on; it may be far "
                      f"from what new images need (give at least {FEW_CALIBRATION_IMAGES})")
    return calibration


def _write_copy(graph: Path, kind: str, output: Path, card: ModelCard, temperature: float | None) -> None:
    """The copy carrying `card`, its logits divided by `temperature` when one is given."""
    source = f"set_operating_point.graph {graph}"
    extra = {}
    if kind == "tflite":
        model = graph.read_bytes()
        extra["tflite_bytes"] = with_metadata(model if temperature is None else
                                              tflite_with_temperature(model, temperature, source), card)
    elif temperature is not None and kind == "pb":
        extra["graph_def"] = read_graph_def(graph, "set_operating_point.graph")
        graph_def_with_temperature(extra["graph_def"], card.output_name, temperature, source)
    elif temperature is not None:
        extra["write_saved_model"] = lambda folder: save_saved_model_with_temperature(graph, folder, temperature)
    try:
        write_copy_with_card(graph, kind, output, card, **extra)
    except OSError as e:
        raise UserError(f"set_operating_point.output {output}: cannot write ({e.strerror or e})") from e


def _specs(operating_points: Sequence[str | OperatingPointSpec]) -> tuple[OperatingPointSpec, ...]:
    if isinstance(operating_points, (str, OperatingPointSpec)):
        operating_points = [operating_points]
    if not operating_points:
        raise UserError(f"give at least one {POINTS}, e.g. melanoma:sensitivity=0.9")
    return tuple(spec if isinstance(spec, OperatingPointSpec) else parse_operating_point(spec, POINTS)
                 for spec in operating_points)


def _check_paths(graph: Path, image_dir: Path, output: Path) -> str:
    """The model's format, once the model and tree exist and the copy can land at `output`
    without replacing anything."""
    if not graph.exists():
        raise UserError(f"set_operating_point.graph {graph}: no such file or directory")
    if not image_dir.is_dir():
        raise UserError(f"{TREE} {image_dir}: {'not a directory' if image_dir.exists() else 'no such directory'}")
    kind, named = model_kind(graph), f"set_operating_point.output {output}"
    if kind != "saved_model" and output.suffix.lower() != f".{kind}":
        raise UserError(f"{named}: the copy is a .{kind} like set_operating_point.graph; give it a name ending in "
                        f".{kind}")
    if kind == "saved_model" and output.suffix.lower() in (".pb", ".tflite"):
        raise UserError(f"{named}: the copy is a SavedModel folder like set_operating_point.graph; give it a folder "
                        "name, without .pb or .tflite")
    written = copy_files(kind, output)
    if kind != "saved_model":  # a SavedModel's card in words sits inside the new folder
        written["model card"] = model_card_markdown_path(output)
    for what, path in written.items():
        if path.exists() or path.is_symlink():
            raise UserError(f"{named}: {what + ' ' + str(path) + ' ' if what else ''}already exists; "
                            "set_operating_point never overwrites a model, so give set_operating_point.output a new name")
    files = {f"set_operating_point.output's {what}" if what else "set_operating_point.output": path
             for what, path in written.items()}
    folders = {"set_operating_point.output": files.pop("set_operating_point.output")} if kind == "saved_model" else None
    check_outputs({"set_operating_point.graph": graph, "set_operating_point.graph's sidecar": sidecar_path(graph)
                   if kind == "tflite" else None, TREE: image_dir}, files, folders)
    return kind


def _read_card(graph: Path, kind: str) -> ModelCard:
    """The model card `graph` carries; a model without one (not from retrain) has nowhere to keep a point."""
    if kind != "tflite":
        import_tensorflow()  # with its native log lines kept off the terminal
    card = read_model_card(graph, kind, "set_operating_point.graph")
    if not card or not card.labels:
        raise UserError(f"set_operating_point.graph {graph}: not exported by retrain ({missing_card_place(graph, kind)}), "
                        "so it has no model card to store an operating point in; retrain a model to get one")
    return card


def _classify(graph: Path, labels: list[str], image_dir: Path, reporter: Reporter) -> Predictions:
    """The tree's images classified by the model, in the model's label order, with their true classes."""
    model = load(graph, reporter=reporter).model
    predicted, _ = evaluate_model(model, labels, image_dir, reporter.progress, None, reporter.log, reporter.warn)
    for failure in predicted.failures:
        reporter.warn(f"skipped {failure.path}: {failure.reason}")
    if predicted.true is None:
        raise UserError(f"{TREE} {image_dir}: needs class folders named like the model's labels "
                        f"({', '.join(labels)}) to choose a threshold")
    if not len(predicted.paths):
        raise UserError(f"{TREE} {image_dir}: no image could be read")
    reporter.log(f"Classified {len(predicted.paths)} images of {image_dir} with {graph}")
    return predicted


def _warn_if_few(point: OperatingPoint, reporter: Reporter) -> None:
    """A target reached on a handful of images says little about new ones: the interval says how little."""
    if point.target == "threshold":
        return
    count = point.positives if point.target == "sensitivity" else point.negatives
    value = point.sensitivity if point.target == "sensitivity" else point.specificity
    if count < FEW_POSITIVES:
        reporter.warn(f"{POINTS} {point.label}: {point.target} {Rate.of(round(value * count), count)} on only {count} "
                      f"images; on new images it may be anywhere in that interval (give at least {FEW_POSITIVES})")
