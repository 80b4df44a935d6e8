"""The .tflite file retrain writes: its quantization modes, the sidecar JSON beside it
(`model.tflite.json`, the model card plus the tensors' details; the same card is attached inside
the model's TFLite metadata, read when the sidecar is missing) and the classifier shape the
file must have.

Export writes and checks the file with it, predict runs it; so it sits with export, and it
imports only ai_edge_litert, flatbuffers and NumPy, never TensorFlow: label_image on a phone-sized
model should start like a phone app does.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from retrain.card.formats import EMBEDDED_CARD_FILE, LABELS_FILE, attached_files, parse_card, read_sidecar, sidecar_path
from retrain.card.model_card import ModelCard
from retrain.errors import UserError
from retrain.export.tflite_metadata import is_score, read_standard_metadata
from retrain.native_logs import native_logs_silenced

# none = float32, dynamic = dynamic-range int8 weights, float16 weights, int8 = full integer with uint8 input/output.
QUANTIZATIONS = ("none", "dynamic", "float16", "int8")


def _shape_error(path: Path, detail: str) -> UserError:
    return UserError(
        f"load.path {path}: not an image classifier of the shape retrain makes "
        f"(input [1, height, width, 3] float32 or uint8, and [1, M] patient metadata when trained with it; "
        f"output [1, classes], and [1] out-of-distribution score when exported with one); {detail}"
    )


def classifier_outputs(outputs: list[dict]) -> tuple[dict, dict | None]:
    """The probabilities' details and the out-of-distribution score's (the one output of one value,
    shaped [1, 1], or [1] in a .tflite written before; None for a model without one)."""
    scores = [d for d in outputs if is_score(d["shape"])]
    probabilities = [d for d in outputs if not is_score(d["shape"])]
    return (probabilities or outputs)[0], scores[0] if scores and probabilities else None


def classifier_inputs(path: Path, inputs: list[dict], outputs: list[dict]) -> tuple[dict, dict | None]:
    """The image input's details and the patient metadata input's (None for a model without
    one), after checking the model has the shape retrain exports."""
    images = [d for d in inputs if len(d["shape"]) == 4]
    rows = [d for d in inputs if len(d["shape"]) == 2]
    if len(inputs) == 1 and not images:
        raise _shape_error(path, f"its input is {[int(d) for d in inputs[0]['shape']]}")
    output, ood = classifier_outputs(outputs)
    if len(images) != 1 or len(rows) > 1 or len(images) + len(rows) != len(inputs) or len(outputs) != 1 + (ood is not None):
        raise _shape_error(path, f"it has {len(inputs)} inputs and {len(outputs)} outputs")
    input_shape, output_shape = [int(d) for d in images[0]["shape"]], [int(d) for d in output["shape"]]
    if input_shape[0] != 1 or input_shape[3] != 3:
        raise _shape_error(path, f"its input is {input_shape}")
    if rows and int(rows[0]["shape"][0]) != 1:
        raise _shape_error(path, f"its metadata input is {[int(d) for d in rows[0]['shape']]}")
    if len(output_shape) != 2 or output_shape[0] != 1 or output_shape[1] < 2:
        raise _shape_error(path, f"its output is {output_shape}")
    for kind, detail in (("input", images[0]), *(("metadata input", r) for r in rows), ("output", output),
                         *((("out-of-distribution output", ood),) if ood is not None else ())):
        if detail["dtype"] not in (np.float32, np.uint8):
            raise _shape_error(path, f"its {kind} is {np.dtype(detail['dtype']).name}")
        if detail["dtype"] == np.uint8 and not detail["quantization"][0] > 0:
            raise _shape_error(path, f"its uint8 {kind} has no quantization scale")
    return images[0], rows[0] if rows else None


@dataclass(frozen=True)
class TFLiteClassifier:
    """An opened .tflite of the shape retrain exports, its sidecar checked against it."""

    path: Path
    interpreter: Any  # ai_edge_litert.interpreter.Interpreter, tensors allocated
    image_input: dict  # the interpreter's tensor details
    patient_input: dict | None
    output: dict
    model_card: ModelCard | None  # the sidecar, else the card attached to the metadata; None for neither
    patient_encoding: Any  # a patient_metadata.MetadataEncoding when the model takes patient metadata
    ood_output: dict | None = None  # the out-of-distribution score, for a model exported with one
    labels: tuple[str, ...] | None = None  # from the TFLite metadata of a model without a card (another tool's)
    normalisation: tuple[float, float] | None = None  # the mean and std its metadata asks the client to apply

    @property
    def height(self) -> int:
        return int(self.image_input["shape"][1])

    @property
    def width(self) -> int:
        return int(self.image_input["shape"][2])

    @property
    def class_count(self) -> int:
        return int(self.output["shape"][1])


def open_tflite_classifier(path: Path) -> TFLiteClassifier:
    """Open a .tflite and check it is a classifier retrain could have written, with a sidecar
    (if any) that agrees with it."""
    from ai_edge_litert.interpreter import Interpreter

    path = Path(path).expanduser()
    try:
        with native_logs_silenced():
            interpreter = Interpreter(model_path=str(path))
            interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        raise UserError(f"load.path {path}: not a TFLite model, or one the LiteRT interpreter cannot run") from e
    outputs = interpreter.get_output_details()
    image_input, patient_input = classifier_inputs(path, interpreter.get_input_details(), outputs)
    model_card, (labels_file, labels, normalisation) = _card(path), _metadata(path)
    output, ood_output = classifier_outputs(outputs)
    opened = TFLiteClassifier(path, interpreter, image_input, patient_input, output, model_card, None, ood_output,
                              labels, normalisation)
    _check_attached_labels(opened, labels_file)
    _check_sidecar(opened)
    if patient_input is None:
        return opened
    return dataclasses.replace(opened, patient_encoding=_patient_encoding(opened))


def _card(path: Path) -> ModelCard | None:
    """The sidecar's model card, else the one attached to the model's metadata; None for neither."""
    model_card = read_sidecar(path)
    if model_card is not None:
        return model_card
    attached = attached_files(path).get(EMBEDDED_CARD_FILE)
    return None if attached is None else parse_card(attached, card_source(path))


def _metadata(path: Path) -> tuple[str, tuple[str, ...] | None, tuple[float, float] | None]:
    """What any tool's TFLite metadata gives: the labels file's name and its labels (None when
    none is attached), and the mean and std the client must apply (None when it names none)."""
    standard = read_standard_metadata(path.read_bytes(), str(path))
    labels_file = standard.labels_file if standard and standard.labels_file else LABELS_FILE
    labels = _attached_labels(path, labels_file, attached_files(path).get(labels_file))
    return labels_file, labels, (standard.mean, standard.std) if standard and standard.mean is not None else None


def card_source(path: Path) -> str:
    """Where the card of the .tflite at `path` comes from: its sidecar, else the one attached inside."""
    sidecar = sidecar_path(path)
    return str(sidecar) if sidecar.exists() else f"{path} (its attached {EMBEDDED_CARD_FILE})"


def _attached_labels(path: Path, name: str, data: bytes | None) -> tuple[str, ...] | None:
    if data is None:
        return None
    try:
        return tuple(line.strip() for line in data.decode("utf-8").splitlines() if line.strip())
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: its attached {name} is not UTF-8 text ({e})") from e


def _check_attached_labels(opened: TFLiteClassifier, name: str) -> None:
    if opened.labels is not None and len(opened.labels) != opened.class_count:
        raise UserError(f"{opened.path}: its attached {name} lists {len(opened.labels)} labels but the model has "
                        f"{opened.class_count} outputs")


def _check_sidecar(opened: TFLiteClassifier) -> None:
    if opened.model_card is None:
        return
    path, sidecar = opened.path, card_source(opened.path)
    labels = opened.model_card.labels
    if len(labels) != opened.class_count:
        raise UserError(f"{sidecar}: {len(labels)} labels but {path} has {opened.class_count} outputs")
    input_size = opened.model_card.input_size
    if input_size != opened.height or opened.height != opened.width:
        raise UserError(f"{sidecar}: input size {input_size} but {path} takes {opened.height}x{opened.width}")


def _patient_encoding(opened: TFLiteClassifier):
    """How to encode the patient metadata the model takes, from its sidecar."""
    path = opened.path
    sidecar = card_source(path) if opened.model_card is not None else sidecar_path(path)
    patient = opened.model_card.patient_metadata if opened.model_card else None
    encoding = patient.encoding if patient else None
    if encoding is None:
        raise UserError(f"{path}: takes patient metadata, but {sidecar} (which says how to encode it) "
                        "is missing or has no \"patient_metadata\"")
    width = int(opened.patient_input["shape"][1])
    if encoding.width != width:
        raise UserError(f"{sidecar}: encodes {encoding.width} metadata values but {path} takes {width}")
    return encoding


def megabytes(size_bytes: int) -> str:
    """A file's size as export_tflite and retrain print it."""
    return f"{size_bytes / 1e6:.2f} MB"
