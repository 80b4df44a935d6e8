"""Running an exported .tflite classifier with the LiteRT interpreter, without TensorFlow.

label_image on a phone-sized model should start like a phone app does: this module
imports only ai_edge_litert and NumPy, never tensorflow. The labels, input size and
preprocessing travel in a sidecar JSON next to the model (`model.tflite.json`) and in the
model's TFLite metadata (read when there is no sidecar; another tool's gives labels and normalisation).
"""

from __future__ import annotations

import numpy as np

from retrain.patient.table import fed_rows
from retrain.export.tflite_format import TFLiteClassifier, open_tflite_classifier
from retrain.predict.loaded_model import FeedOverrides, LoadedModel

NO_MAPS = "a .tflite model has no class activation maps; use the .pb or SavedModel retrain exported beside it"


def load_tflite_model(path, overrides: FeedOverrides = FeedOverrides(), notes: list[str] | None = None) -> LoadedModel:
    """Load a .tflite classifier; `predict` takes float32 pixels in [0, 255] like every other model."""
    notes = notes if notes is not None else []
    opened = open_tflite_classifier(path)
    mean, std = _normalisation(opened, overrides, notes)
    both = _predictor(opened, mean, std)
    return LoadedModel.of(lambda *fed: both(*fed)[0], (opened.height, opened.width), str(opened.path),
                          opened.model_card, labels=list(opened.labels) if opened.labels else None, no_maps_reason=NO_MAPS, ood=both if opened.ood_output is not None else None,
                          encoding=opened.patient_encoding)


def _normalisation(opened: TFLiteClassifier, overrides: FeedOverrides, notes: list[str]) -> tuple[float, float]:
    """The mean and std to feed pixels with: the overrides', only for a .tflite without a model card
    (one from retrain normalises its own input), else its TFLite metadata's; a note for every flag ignored."""
    ignored = [f"FeedOverrides.{name}" for name in ("input_layer", "output_layer", "input_height", "input_width")
               if getattr(overrides, name) is not None]
    if ignored:
        notes.append(f"{', '.join(ignored)} ignored: a .tflite model has one input and output of fixed size")
    if overrides.input_mean is None and overrides.input_std is None:
        return opened.normalisation if opened.model_card is None and opened.normalisation else (0.0, 1.0)
    if opened.model_card is not None:
        notes.append("FeedOverrides.input_mean/FeedOverrides.input_std ignored: this model normalises its own input")
        return 0.0, 1.0
    return (overrides.input_mean if overrides.input_mean is not None else 0.0,
            overrides.input_std if overrides.input_std is not None else 1.0)


def _predictor(opened: TFLiteClassifier, mean: float, std: float):
    """The interpreter as LoadedModel.ood: one image at a time, as the model takes [1, ...];
    the scores are zeros for a model without an out-of-distribution output."""
    interpreter, encoding = opened.interpreter, opened.patient_encoding

    def predict(pixels: np.ndarray, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        pixels = np.asarray(pixels, np.float32)
        if encoding is not None:
            rows = fed_rows(encoding, rows, len(pixels))
        results, scores = [], []
        for i, image in enumerate(pixels):
            interpreter.set_tensor(opened.image_input["index"], _to_input(((image - mean) / std)[None], opened.image_input))
            if encoding is not None:
                interpreter.set_tensor(opened.patient_input["index"],
                                       _to_input(np.asarray(rows[i:i + 1]), opened.patient_input))
            interpreter.invoke()
            results.append(_from_output(interpreter.get_tensor(opened.output["index"]), opened.output))
            if opened.ood_output is not None:
                scores.append(_from_output(interpreter.get_tensor(opened.ood_output["index"]), opened.ood_output).reshape(-1))
        if not results:
            return np.zeros((0, opened.class_count), np.float32), np.zeros(0, np.float32)
        return np.concatenate(results), np.concatenate(scores) if scores else np.zeros(len(results), np.float32)

    return predict


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
