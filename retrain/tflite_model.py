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
from retrain.loaded_model import FeedOverrides, LoadedModel

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
        f"(input [1, height, width, 3] float32 or uint8, output [1, classes]); {detail}"
    )


def _check_classifier_shape(path: Path, inputs: list[dict], outputs: list[dict]) -> None:
    if len(inputs) != 1 or len(outputs) != 1:
        raise _shape_error(path, f"it has {len(inputs)} inputs and {len(outputs)} outputs")
    input_shape, output_shape = [int(d) for d in inputs[0]["shape"]], [int(d) for d in outputs[0]["shape"]]
    if len(input_shape) != 4 or input_shape[0] != 1 or input_shape[3] != 3:
        raise _shape_error(path, f"its input is {input_shape}")
    if len(output_shape) != 2 or output_shape[0] != 1 or output_shape[1] < 2:
        raise _shape_error(path, f"its output is {output_shape}")
    for kind, detail in (("input", inputs[0]), ("output", outputs[0])):
        if detail["dtype"] not in (np.float32, np.uint8):
            raise _shape_error(path, f"its {kind} is {np.dtype(detail['dtype']).name}")
        if detail["dtype"] == np.uint8 and not detail["quantization"][0] > 0:
            raise _shape_error(path, f"its uint8 {kind} has no quantization scale")


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
    inputs, outputs = interpreter.get_input_details(), interpreter.get_output_details()
    _check_classifier_shape(path, inputs, outputs)
    input_detail, output_detail = inputs[0], outputs[0]
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

    def predict(pixels: np.ndarray) -> np.ndarray:
        rows = []
        for image in np.asarray(pixels, np.float32):
            interpreter.set_tensor(input_detail["index"], _to_input(((image - mean) / std)[None], input_detail))
            interpreter.invoke()
            rows.append(_from_output(interpreter.get_tensor(output_detail["index"]), output_detail))
        return np.concatenate(rows) if rows else np.zeros((0, class_count), np.float32)

    return LoadedModel(predict, height, width, labels, str(path), None,
                       "a .tflite model has no class activation maps; use the .pb or SavedModel retrain exported beside it",
                       metadata)


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
