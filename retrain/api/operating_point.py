"""Setting or moving the operating point of an exported model without retraining: classify a
labelled tree with it, choose the thresholds there, and write a copy whose model card carries
them. The weights are untouched, so the copy scores every image exactly as the original does."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from retrain.card.formats import (
    MODEL_CARD_FILE,
    is_tflite_file,
    model_kind,
    read_model_card,
    sidecar_path,
    write_copy_with_card,
)
from retrain.card.markdown import (
    model_card_markdown_path,
    write_model_card_markdown,
)
from retrain.card.model_card import ModelCard
from retrain.errors import UserError
from retrain.evaluate import evaluation
from retrain.metrics import Rate
from retrain.native_logs import import_tensorflow
from retrain.predict import prediction
from retrain.reporter import Reporter
from retrain.decisions.operating_points import (
    FEW_POSITIVES,
    OperatingPoint,
    OperatingPointSpec,
    choose_operating_points,
    distinct_specs,
    parse_operating_point,
)


@dataclass(frozen=True)
class OperatingPointUpdate:
    """What set_operating_point chose and wrote."""

    graph: Path  # the model read, as given
    output: Path  # the copy written
    points: tuple[OperatingPoint, ...]  # now stored in the copy's model card
    replaced: tuple[OperatingPoint, ...]  # what the original's card stored
    images: int  # images classified to choose them
    model_card_markdown: Path  # the card in words, written beside the copy


def set_operating_point(graph: Path, image_dir: Path, operating_points: Sequence[str | OperatingPointSpec],
                        output: Path, reporter: Reporter | None = None,
                        allow_training_images: bool = False) -> OperatingPointUpdate:
    """Choose each operating point ("melanoma:sensitivity=0.9") on the labelled `image_dir` and
    write a copy of `graph` (.pb, SavedModel folder or .tflite with its sidecar) to `output` whose
    card stores them in place of the old ones. Every flag and path is checked before the slow
    classification; nothing existing is ever overwritten. The model's own training tree (the
    same folder, one inside it or one holding it) is refused unless `allow_training_images`:
    thresholds chosen on images the model trained on promise more than new images give."""
    reporter = reporter or Reporter()
    specs = _specs(operating_points)
    graph, output, image_dir = Path(graph).expanduser(), Path(output).expanduser(), Path(image_dir).expanduser()
    kind = _check_paths(graph, image_dir, output)
    card = _read_card(graph, kind)
    labels = list(card.labels)
    specs, notes = distinct_specs(specs, labels)
    for note in notes:
        reporter.warn(note)
    training = _training_tree(card)
    overlap = _check_not_training_tree(image_dir, training, allow_training_images, reporter)
    _warn_of_missing_classes(image_dir, labels, reporter)
    if training is not None and not overlap:
        _warn_of_training_copies(image_dir, training, reporter)
    predicted = _classify(graph, labels, image_dir, reporter)
    points = choose_operating_points(specs, labels, predicted.probabilities, predicted.true, str(image_dir))
    for point in points:
        reporter.log(f"Operating point: {point.describe()}")
        _warn_if_few(point, reporter)
    replaced = card.points
    for point in replaced:
        reporter.log(f"Replaces: {point.describe()}")
    new_card = card.replace(operating_points=points)
    _write_copy(graph, kind, output, new_card)
    reporter.log(f"Wrote {output} and its sidecar {sidecar_path(output)}" if kind == "tflite" else f"Wrote {output}")
    markdown = _write_markdown(new_card, output, kind == "saved_model")
    reporter.log(f"Wrote {markdown}")
    return OperatingPointUpdate(graph, output, points, replaced, len(predicted.paths), markdown)


def _specs(operating_points: Sequence[str | OperatingPointSpec]) -> tuple[OperatingPointSpec, ...]:
    if isinstance(operating_points, (str, OperatingPointSpec)):
        operating_points = [operating_points]
    if not operating_points:
        raise UserError("give at least one --operating_point, e.g. melanoma:sensitivity=0.9")
    return tuple(spec if isinstance(spec, OperatingPointSpec) else parse_operating_point(spec)
                 for spec in operating_points)


def _check_paths(graph: Path, image_dir: Path, output: Path) -> str:
    """The model's format, once the model and tree exist and the copy can land at `output`
    without replacing anything."""
    from retrain.outputs import check_outputs

    if not graph.exists():
        raise UserError(f"--graph {graph}: no such file or directory")
    if not image_dir.is_dir():
        raise UserError(f"--image_dir {image_dir}: {'not a directory' if image_dir.exists() else 'no such directory'}")
    kind = model_kind(graph)
    if kind != "saved_model" and output.suffix.lower() != f".{kind}":
        raise UserError(f"--output {output}: the copy is a .{kind} like --graph; give it a name ending in .{kind}")
    if kind == "saved_model" and output.suffix.lower() in (".pb", ".tflite"):
        raise UserError(f"--output {output}: the copy is a SavedModel folder like --graph; give it a folder name, "
                        "without .pb or .tflite")
    written = _written(kind, output)
    for what, path in written.items():
        if path.exists() or path.is_symlink():
            raise UserError(f"--output {output}: {what + ' ' + str(path) + ' ' if what else ''}already exists; "
                            "set_operating_point never overwrites a model, so give --output a new name")
    files = {f"--output's {what}" if what else "--output": path for what, path in written.items()}
    folders = {"--output": files.pop("--output")} if kind == "saved_model" else None
    check_outputs({"--graph": graph, "--graph's sidecar": sidecar_path(graph) if kind == "tflite" else None,
                   "--image_dir": image_dir}, files, folders)
    return kind


def _written(kind: str, output: Path) -> dict[str, Path]:
    """Every path the copy writes, by what it is to --output ("": the model itself)."""
    written = {"": output}
    if kind == "tflite":
        written["sidecar"] = sidecar_path(output)
    if kind != "saved_model":  # a SavedModel's sits inside the new folder
        written["model card"] = model_card_markdown_path(output)
    return written


def _read_card(graph: Path, kind: str) -> ModelCard:
    """The model card `graph` carries; a model without one (not from retrain) has nowhere to keep a point."""
    if kind != "tflite":
        import_tensorflow()  # with its native log lines kept off the terminal
    card = read_model_card(graph, kind)
    if not card or not card.labels:
        where = {"tflite": f"no {sidecar_path(graph).name} beside it", "pb": "no model card node",
                 "saved_model": f"no assets.extra/{MODEL_CARD_FILE}"}[kind]
        raise UserError(f"--graph {graph}: not exported by retrain ({where}), so it has no model card to store an "
                        "operating point in; retrain a model to get one")
    return card


def _training_tree(card: ModelCard) -> Path | None:
    """The --image_dir the model was trained on, from its card (None for a model exported before
    the card recorded it); a relative path is taken from the current folder, the best guess left."""
    recorded = card.training_data.image_dir if card.training_data else None
    return None if not recorded else Path(os.path.abspath(Path(recorded).expanduser()))


def _check_not_training_tree(image_dir: Path, training: Path | None, allowed: bool, reporter: Reporter) -> bool:
    """Whether `image_dir` is, is inside or holds the training tree; refused unless `allowed`."""
    if training is None:
        return False
    tree, trained = image_dir.resolve(), training.resolve()
    relation = ("is" if tree == trained else "is inside" if trained in tree.parents
                else "holds" if tree in trained.parents else None)
    if relation is None:
        return False
    what = f"--image_dir {image_dir}: {relation} the model's training tree"
    if not allowed:
        raise UserError(f"{what} ({training}), so thresholds chosen there would promise more than new images give; "
                        "give a tree of images it did not train on, or pass --allow_training_images to choose on it "
                        "anyway")
    reporter.warn(f"{what} ({training}), chosen on anyway (--allow_training_images): the sensitivity and specificity "
                  "below overstate what new images give")
    return True


def _warn_of_missing_classes(image_dir: Path, labels: list[str], reporter: Reporter) -> None:
    """A class the tree lacks is never among the negatives, so the specificity says nothing of it."""
    from retrain.data.dataset import scan_image_tree

    try:
        present = set(scan_image_tree(image_dir, "--image_dir").labels)
    except UserError:
        return  # no class folders: _classify says so in its own line
    for label in labels:
        if present and label not in present:
            reporter.warn(f"--image_dir {image_dir}: no {label!r} folder; the thresholds are chosen without any "
                          f"{label} image")


def _warn_of_training_copies(image_dir: Path, training: Path, reporter: Reporter) -> None:
    """Copies of training images in the tree, warned of and listed (kept: the tree is the user's
    choice). Cheap beside classifying: each image is read once more, small."""
    from retrain.data.dataset import list_images
    from retrain.data.duplicates import count_line, find_copies

    if not training.is_dir():
        reporter.log(f"The model's training tree {training} is not here; no check for copies of its images")
        return
    copies = find_copies(list_images(training), list_images(image_dir))
    if not copies:
        return
    reporter.warn(count_line(copies, "--image_dir", f"the model's training images ({training})",
                             "kept, so the sensitivity and specificity chosen here overstate what new images give"))
    for copy in copies:
        reporter.log(copy.describe())


def _classify(graph: Path, labels: list[str], image_dir: Path, reporter: Reporter) -> evaluation.Predictions:
    """The tree's images classified by the model, in the model's label order, with their true classes."""
    if not is_tflite_file(graph):
        import_tensorflow()
    model = prediction.load_model(graph)
    predicted, _ = evaluation.evaluate_model(model, labels, image_dir, reporter.progress, None, reporter.log,
                                             reporter.warn)
    for failure in predicted.failures:
        reporter.warn(f"skipped {failure.path}: {failure.reason}")
    if predicted.true is None:
        raise UserError(f"--image_dir {image_dir}: needs class folders named like the model's labels "
                        f"({', '.join(labels)}) to choose a threshold")
    if not len(predicted.paths):
        raise UserError(f"--image_dir {image_dir}: no image could be read")
    reporter.log(f"Classified {len(predicted.paths)} images of {image_dir} with {graph}")
    return predicted


def _warn_if_few(point: OperatingPoint, reporter: Reporter) -> None:
    """A target reached on a handful of images says little about new ones: the interval says how little."""
    if point.target == "threshold":
        return
    count = point.positives if point.target == "sensitivity" else point.negatives
    value = point.sensitivity if point.target == "sensitivity" else point.specificity
    if count < FEW_POSITIVES:
        rate = Rate.of(round(value * count), count)
        reporter.warn(f"--operating_point {point.label}: {point.target} {rate} on only {count} images; on new "
                      f"images it may be anywhere in that interval (give at least {FEW_POSITIVES})")


def _write_copy(graph: Path, kind: str, output: Path, card: ModelCard) -> None:
    try:
        write_copy_with_card(graph, kind, output, card)
    except OSError as e:
        raise UserError(f"--output {output}: cannot write ({e.strerror or e})") from e


def _write_markdown(card: ModelCard, output: Path, saved_model: bool) -> Path:
    path = model_card_markdown_path(output, saved_model)
    write_model_card_markdown(card, path)
    return path
