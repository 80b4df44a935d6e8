"""Running an exported .tflite classifier with the LiteRT interpreter, without TensorFlow.

label_image on a phone-sized model should start like a phone app does: this module
imports only ai_edge_litert and NumPy, never tensorflow. The labels, input size and
preprocessing travel in a sidecar JSON next to the model (`model.tflite.json`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from retrain.errors import UserError
from retrain.native_logs import native_logs_silenced
from retrain.predict.loaded_model import FeedOverrides, LoadedModel
from retrain.data.patient_metadata import fed_rows, model_encoding

TFLITE_IDENTIFIER = b"TFL3"  # the flatbuffer file identifier, bytes 4..8 of every .tflite
SIDECAR_SUFFIX = ".json"
# none = float32, dynamic = dynamic-range int8 weights, float16 weights, int8 = full integer with uint8 input/output.
QUANTIZATIONS = ("none", "dynamic", "float16", "int8")


def sidecar_path(model_path: Path) -> Path:
    """model.tflite -> model.tflite.json"""
    return model_path.with_name(model_path.name + SIDECAR_SUFFIX)


def is_tflite_file(path: Path) -> bool:
    if path.suffix.lower() == ".tflite":
        return True
    try:
        with open(path, "rb") as f:
            return f.read(8)[4:8] == TFLITE_IDENTIFIER
    except OSError:
        return False


def read_sidecar(model_path: Path) -> dict | None:
    path = sidecar_path(model_path)
    if not path.exists():
        return None
    try:
        metadata = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: not a readable retrain metadata file ({e})") from e
    if not isinstance(metadata, dict) or metadata.get("format") != "retrain":
        raise UserError(f"{path}: not a retrain metadata file (no \"format\": \"retrain\")")
    return metadata


def _shape_error(path: Path, detail: str) -> UserError:
    return UserError(
        f"--graph {path}: not an image classifier of the shape retrain makes "
        f"(input [1, height, width, 3] float32 or uint8, and [1, M] patient metadata when trained with it; "
        f"output [1, classes]); {detail}"
    )


def classifier_inputs(path: Path, inputs: list[dict], outputs: list[dict]) -> tuple[dict, dict | None]:
    """The image input's details and the metadata input's (None for a model without one),
    after checking the model has the shape retrain exports."""
    images = [d for d in inputs if len(d["shape"]) == 4]
    rows = [d for d in inputs if len(d["shape"]) == 2]
    if len(inputs) == 1 and not images:
        raise _shape_error(path, f"its input is {[int(d) for d in inputs[0]['shape']]}")
    if len(images) != 1 or len(rows) > 1 or len(images) + len(rows) != len(inputs) or len(outputs) != 1:
        raise _shape_error(path, f"it has {len(inputs)} inputs and {len(outputs)} outputs")
    input_shape, output_shape = [int(d) for d in images[0]["shape"]], [int(d) for d in outputs[0]["shape"]]
    if input_shape[0] != 1 or input_shape[3] != 3:
        raise _shape_error(path, f"its input is {input_shape}")
    if rows and int(rows[0]["shape"][0]) != 1:
        raise _shape_error(path, f"its metadata input is {[int(d) for d in rows[0]['shape']]}")
    if len(output_shape) != 2 or output_shape[0] != 1 or output_shape[1] < 2:
        raise _shape_error(path, f"its output is {output_shape}")
    for kind, detail in (("input", images[0]), *(("metadata input", r) for r in rows), ("output", outputs[0])):
        if detail["dtype"] not in (np.float32, np.uint8):
            raise _shape_error(path, f"its {kind} is {np.dtype(detail['dtype']).name}")
        if detail["dtype"] == np.uint8 and not detail["quantization"][0] > 0:
            raise _shape_error(path, f"its uint8 {kind} has no quantization scale")
    return images[0], rows[0] if rows else None


def load_tflite_model(path: Path, overrides: FeedOverrides = FeedOverrides(), notes: list[str] | None = None) -> LoadedModel:
    """Load a .tflite classifier; `predict` takes float32 pixels in [0, 255] like every other model."""
    from ai_edge_litert.interpreter import Interpreter

    notes = notes if notes is not None else []
    path = Path(path).expanduser()
    try:
        with native_logs_silenced():
            interpreter = Interpreter(model_path=str(path))
            interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        raise UserError(f"--graph {path}: not a TFLite model, or one the LiteRT interpreter cannot run") from e
    outputs = interpreter.get_output_details()
    input_detail, metadata_detail = classifier_inputs(path, interpreter.get_input_details(), outputs)
    output_detail = outputs[0]
    height, width = int(input_detail["shape"][1]), int(input_detail["shape"][2])
    class_count = int(output_detail["shape"][1])

    metadata = read_sidecar(path)
    labels = None
    if metadata is not None:
        labels = metadata.get("labels")
        if labels is not None and len(labels) != class_count:
            raise UserError(f"{sidecar_path(path)}: {len(labels)} labels but {path} has {class_count} outputs")
        if metadata.get("input_size") not in (None, height) or height != width:
            raise UserError(f"{sidecar_path(path)}: input size {metadata.get('input_size')} but {path} takes {height}x{width}")
    encoding = None
    if metadata_detail is not None:
        encoding = model_encoding(metadata, sidecar_path(path))
        if encoding is None:
            raise UserError(f"{path}: takes patient metadata, but {sidecar_path(path)} (which says how to encode it) "
                            "is missing or has no \"patient_metadata\"")
        if encoding.width != int(metadata_detail["shape"][1]):
            raise UserError(f"{sidecar_path(path)}: encodes {encoding.width} metadata values but {path} takes "
                            f"{int(metadata_detail['shape'][1])}")

    ignored = [f"--{name}" for name in ("input_layer", "output_layer", "input_height", "input_width")
               if getattr(overrides, name) is not None]
    if ignored:
        notes.append(f"{', '.join(ignored)} ignored: a .tflite model has one input and output of fixed size")
    mean, std = 0.0, 1.0
    if overrides.input_mean is not None or overrides.input_std is not None:
        if metadata is not None:
            notes.append("--input_mean/--input_std ignored: this model normalises its own input")
        else:
            mean = overrides.input_mean if overrides.input_mean is not None else 0.0
            std = overrides.input_std if overrides.input_std is not None else 1.0

    def predict(pixels: np.ndarray, metadata_rows: np.ndarray | None = None) -> np.ndarray:
        pixels = np.asarray(pixels, np.float32)
        if encoding is not None:
            metadata_rows = fed_rows(encoding, metadata_rows, len(pixels))
        results = []
        for i, image in enumerate(pixels):
            interpreter.set_tensor(input_detail["index"], _to_input(((image - mean) / std)[None], input_detail))
            if encoding is not None:
                interpreter.set_tensor(metadata_detail["index"], _to_input(np.asarray(metadata_rows[i:i + 1]), metadata_detail))
            interpreter.invoke()
            results.append(_from_output(interpreter.get_tensor(output_detail["index"]), output_detail))
        return np.concatenate(results) if results else np.zeros((0, class_count), np.float32)

    return LoadedModel(predict, height, width, labels, str(path), None,
                       "a .tflite model has no class activation maps; use the .pb or SavedModel retrain exported beside it",
                       metadata, encoding)


def _to_input(values: np.ndarray, detail: dict) -> np.ndarray:
    if detail["dtype"] == np.float32:
        return values.astype(np.float32)
    scale, zero_point = detail["quantization"]
    return np.clip(np.round(values / scale + zero_point), 0, 255).astype(np.uint8)


def _from_output(values: np.ndarray, detail: dict) -> np.ndarray:
    if detail["dtype"] == np.float32:
        return values.astype(np.float32)
    scale, zero_point = detail["quantization"]
    return (values.astype(np.float32) - zero_point) * scale
