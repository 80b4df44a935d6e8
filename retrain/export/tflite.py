"""Converting a retrained SavedModel to TFLite (retrain.predict.parity measures the result).

Conversion always starts from a SavedModel (TFLiteConverter.from_saved_model): a Keras
model converted through from_concrete_functions gave NaN outputs here, while the
SavedModel route matched to ~1e-6. int8 calibration feeds training images through
`retrain.data.images.load_image`, the same preprocessing as training and label_image.
"""

from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import tensorflow as tf

from retrain.card.formats import card_bytes, sidecar_path
from retrain.card.markdown import (
    model_card_markdown_path,
    write_model_card_markdown,
)
from retrain.card.model_card import Int8Weights, ModelCard, TensorDetail
from retrain.data.images import load_batches
from retrain.errors import UserError
from retrain.export.graph import (
    INPUT_NAME,
    PATIENT_INPUT,
    TFLITE_SIGNATURE,
    ServingModel,
    export_saved_model,
)
from retrain.export.tflite_format import (
    QUANTIZATIONS,
    classifier_inputs,
    classifier_outputs,
    megabytes,
    open_tflite_classifier,
)
from retrain.export.saved_model_reading import lite_config, saved_model_card
from retrain.export.tflite_metadata import with_metadata
from retrain.native_logs import native_logs_silenced
from retrain.paths import write_atomically


@dataclass(frozen=True)
class TFLiteExport:
    path: Path
    sidecar: Path
    quantization: str
    size_bytes: int
    int8_weights_prepared_on: int | None = None  # calibration images, when retrain.export.int8 prepared them
    patient_input: bool = False  # a second input, which app frameworks' image classifiers refuse


def training_and_held_back(image_dir: Path, validation_percentage: float, testing_percentage: float) -> tuple[list[Path], list[Path]]:
    """retrain's stable split of an image tree: the training images (for calibration) and the
    validation and test set images (for parity), so export_tflite never calibrates on what it measures."""
    from retrain.data.dataset import scan_image_tree, split_images

    tree = scan_image_tree(image_dir)
    split = split_images([c.images for c in tree.classes], tree.labels, validation_percentage, testing_percentage)
    return [path for path, _ in split.training], [path for path, _ in split.validation + split.test]


def representative_sample(paths: list[Path], count: int, seed: int = 0) -> list[Path]:
    """A repeatable random sample, so the same training set always calibrates the same way."""
    if count < 1:
        raise UserError(f"the representative set for int8 calibration is empty (asked for {count} images)")
    if not paths:
        raise UserError("the representative set for int8 calibration is empty (no training images)")
    chosen = np.random.default_rng(seed).choice(len(paths), size=min(count, len(paths)), replace=False)
    return [paths[i] for i in sorted(chosen)]


def load_representative(paths: list[Path], size: int) -> list[np.ndarray]:
    """The sample's pixels through the shared preprocessing; unreadable images were already
    reported where the image set was read, so they are skipped here."""
    pixels = [batch[0] for _, batch, _ in load_batches(paths, size, batch_size=1) if batch is not None]
    if not pixels:
        raise UserError(f"the representative set for int8 calibration is empty (none of {len(paths)} images could be read)")
    return pixels


def _calibration_batches(pixels: list[np.ndarray]) -> list[np.ndarray]:
    # Calibration takes the input's range from the samples; one black and one white pixel make
    # it exactly [0, 255], so the uint8 input is scale 1, zero point 0: an app feeds its RGB bytes as they are.
    batches = [image[None].copy() for image in pixels]
    batches[0][0, 0, 0, :] = 0.0
    batches[0][0, 0, 1, :] = 255.0
    return batches


def calibration_patient_rows(encoding, count: int) -> np.ndarray:
    """Encoded patient metadata rows to calibrate int8 with: standardised numbers across [-4, 4] (the
    first two rows are the ends, so the range is exactly that), missing flags and one-hot
    slots 0 or 1. The real rows are not at hand when a SavedModel is converted alone."""
    rng = np.random.default_rng(0)
    rows = np.zeros((count, encoding.width), np.float32)
    start = 0
    for column in encoding.columns:
        if column.kind == "numeric":
            rows[:, start] = np.clip(rng.normal(0, 1.5, count), -4, 4)
            rows[:, start + 1] = rng.integers(0, 2, count)
        else:
            rows[np.arange(count), start + rng.integers(0, column.width, count)] = 1.0
        start += column.width
    rows[0, :] = np.minimum(rows[0], -4.0)
    rows[min(1, count - 1), :] = np.maximum(rows[min(1, count - 1)], 4.0)
    return rows


# Full-integer conversion sizes every tensor's range by the (lesion) calibration images, so the
# distance of an image unlike them is clipped to a lesion's: measured on the fine-tuned ISIC
# model, its int8 score flagged no noise or blank frame. The output stays; its threshold does not.
INT8_OOD = ("int8 quantization clips the out-of-distribution score to the range of the training images, so it "
            "cannot flag images unlike them; use the none, float16 or dynamic .tflite for that check")


def convert_saved_model(saved_model_dir: Path, quantization: str, representative: list[np.ndarray],
                        encoding=None) -> bytes:
    """The .tflite bytes for one quantization mode; int8 takes uint8 pixels and gives uint8
    probabilities. `encoding` (patient_metadata.MetadataEncoding) for a model with a patient metadata input."""
    if quantization not in QUANTIZATIONS:
        raise UserError(f"unknown quantization {quantization!r}; choose one of {', '.join(QUANTIZATIONS)}")
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir), signature_keys=[_signature(saved_model_dir)])
    if quantization != "none":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if quantization == "int8":
        if not representative:
            raise UserError("the representative set for int8 calibration is empty")
        batches = _calibration_batches(representative)
        if encoding is None:
            converter.representative_dataset = lambda: ([batch] for batch in batches)
        else:
            rows = calibration_patient_rows(encoding, len(batches))
            converter.representative_dataset = lambda: (
                {INPUT_NAME: batch, PATIENT_INPUT: rows[i:i + 1]} for i, batch in enumerate(batches))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.uint8
    try:
        with native_logs_silenced():
            return converter.convert()
    except Exception as e:  # the converter raises ConverterError and others for a model it cannot take
        raise UserError(f"export_tflite.saved_model_dir {saved_model_dir}: TFLite conversion failed ({type(e).__name__}: {e})") from e


def _signature(saved_model_dir: Path) -> str:
    """TFLITE_SIGNATURE, or serving_default for a SavedModel written before it existed."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel.FromString((Path(saved_model_dir) / "saved_model.pb").read_bytes())
    return TFLITE_SIGNATURE if TFLITE_SIGNATURE in saved.meta_graphs[0].signature_def else "serving_default"


def _tensor(detail: dict) -> TensorDetail:
    scale, zero_point = detail["quantization"]
    quantized = detail["dtype"] == np.uint8
    return TensorDetail(detail["name"], tuple(int(d) for d in detail["shape"]), np.dtype(detail["dtype"]).name,
                        float(scale) if quantized else None, int(zero_point) if quantized else None)


def tflite_model_card(card: ModelCard, quantization: str, model_bytes: bytes) -> ModelCard:
    """The SavedModel's model card plus what an app needs to feed and read this .tflite: the sidecar."""
    from ai_edge_litert.interpreter import Interpreter

    with native_logs_silenced():
        interpreter = Interpreter(model_content=model_bytes)
    outputs = interpreter.get_output_details()
    input_detail, patient_detail = classifier_inputs(Path("model.tflite"), interpreter.get_input_details(), outputs)
    output_detail, ood_detail = classifier_outputs(outputs)
    # The SavedModel's tensor names are not the .tflite's, and a .tflite has no class activation maps:
    # the sidecar names what LiteRT's get_input_details / get_output_details list.
    card = card.replace(class_activation_maps=None, has_maps_entry=False, input_name=input_detail["name"],
                        output_name=output_detail["name"], quantization=quantization,
                        input_tensor=_tensor(input_detail), output_tensor=_tensor(output_detail))
    if patient_detail is not None:
        card = card.replace(metadata_tensor=_tensor(patient_detail))
        if card.patient_metadata is not None:
            card = card.replace(patient_metadata=dataclasses.replace(card.patient_metadata,
                                                                     input_name=patient_detail["name"]))
    if ood_detail is not None:
        card = card.replace(ood_tensor=_tensor(ood_detail))
        if card.ood is not None:
            card = card.replace(ood=dataclasses.replace(card.ood, output_name=ood_detail["name"]))
    if quantization == "int8" and card.ood is not None:
        card = card.replace(ood=dataclasses.replace(card.ood, unavailable=INT8_OOD))
    return card


def _convert(saved_model_dir: Path, model_card: ModelCard, quantization: str, representative: list[Path],
             log: Callable[[str], None], warn: Callable[[str], None]) -> tuple[bytes, int | None]:
    """The .tflite bytes, and how many calibration images prepared the int8 weights (None if not prepared)."""
    from retrain.export.int8 import PREPARED_QUANTIZATIONS, write_int8_ready_saved_model

    preparable = quantization in PREPARED_QUANTIZATIONS and lite_config(model_card) is not None
    if preparable and not representative:
        # Said from retrain too: the other command, export_tflite, and its flag are the way to calibrate.
        warn("the int8 weights are rounded without calibration images, which costs agreement with the original "
             "model; give training images (export_tflite: --image_dir) and a representative count above 0")
    prepare = preparable and bool(representative)
    pixels = load_representative(representative, model_card.input_size) if prepare or quantization == "int8" else []
    encoding = model_card.patient_metadata.encoding if model_card.patient_metadata else None
    if not prepare:
        return convert_saved_model(saved_model_dir, quantization, pixels, encoding), None
    log(f"Rounding the backbone's weights to int8 on {len(pixels)} training images (GPTQ + bias correction)")
    with tempfile.TemporaryDirectory(prefix="retrain-int8-") as scratch:
        ready_dir = Path(scratch) / "int8_ready"
        ready = write_int8_ready_saved_model(saved_model_dir, model_card, pixels, quantization, ready_dir)
        return convert_saved_model(ready_dir, quantization, pixels, encoding), ready.images


def export_tflite(
    saved_model_dir: Path, output: Path, quantization: str, representative: list[Path], flag: str = "export_tflite.output",
    log: Callable[[str], None] = lambda line: None, warn: Callable[[str], None] = lambda line: None,
) -> TFLiteExport:
    """Write output (.tflite) and its sidecar output.json from a SavedModel written by retrain.
    `representative` calibrates int8 and, for EfficientNet-Lite, prepares the int8 weights of
    dynamic and int8 (see retrain.export.int8); without it dynamic rounds as the converter does."""
    output = Path(output).expanduser()
    if output.suffix.lower() != ".tflite":
        raise UserError(f"{flag} {output}: must end in .tflite (label_image recognises the model by it)")
    saved_model_dir = Path(saved_model_dir).expanduser()
    model_card = saved_model_card(saved_model_dir, "export_tflite.saved_model_dir")
    model_bytes, prepared_on = _convert(saved_model_dir, model_card, quantization, representative, log, warn)
    description = tflite_model_card(model_card, quantization, model_bytes)
    if prepared_on is not None:
        description = description.replace(int8_weights=Int8Weights("GPTQ rounding + empirical bias correction",
                                                                   prepared_on))
    model_bytes = with_metadata(model_bytes, description)
    sidecar = sidecar_path(output)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(output, model_bytes)
        write_atomically(sidecar, card_bytes(description))
    except OSError as e:
        raise UserError(f"{flag} {output}: cannot write ({e.strerror or e})") from e
    write_model_card_markdown(description, model_card_markdown_path(output))
    open_tflite_classifier(output)  # what we ship must load as a classifier, its sidecar agreeing
    return TFLiteExport(output, sidecar, quantization, len(model_bytes), prepared_on,
                        description.patient_metadata is not None)


def export_classifier_tflite(
    classifier: ServingModel, model_card: ModelCard, saved_model_dir: Path | None, output: Path, quantization: str,
    representative: list[Path], log: Callable[[str], None] = lambda line: None,
    warn: Callable[[str], None] = lambda line: None,
) -> TFLiteExport:
    """retrain's path: convert from the SavedModel just written, or from a temporary one."""
    if saved_model_dir is not None:
        return export_tflite(saved_model_dir, output, quantization, representative, "TFLiteConfig.output", log, warn)
    with tempfile.TemporaryDirectory(prefix="retrain-tflite-") as scratch:
        export_saved_model(classifier, model_card, Path(scratch) / "saved_model")
        return export_tflite(Path(scratch) / "saved_model", output, quantization, representative, "TFLiteConfig.output", log, warn)


def describe_export(export: TFLiteExport) -> str:
    described = f"{export.quantization}, {megabytes(export.size_bytes)}"
    if export.int8_weights_prepared_on is not None:
        described += f", int8 weights rounded on {export.int8_weights_prepared_on} training images"
    return described


def representative_images(quantization: str, training: list[Path] | None, count: int, seed: int | None) -> list[Path]:
    """The training images that calibrate int8 and round the int8 weights of dynamic: for int8
    always (an empty sample is an error), for dynamic when there is a training tree (`training`
    not None) and `count` asks for any."""
    if quantization == "int8" or (quantization == "dynamic" and training is not None and count > 0):
        return representative_sample(training or [], count, seed or 0)
    return []


def write_tflite(output: Path, quantization: str, training: list[Path] | None, count: int, seed: int | None,
                 log: Callable[[str], None], warn: Callable[[str], None], saved_model_dir: Path | None = None,
                 serving: tuple[ServingModel, ModelCard] | None = None) -> TFLiteExport:
    """The one way both commands write a .tflite: `count` representative images sampled from
    `training` with `seed`, the conversion from `saved_model_dir` (or, with `serving`, the model
    just trained and its card), and the line naming what was written. Parity is the caller's."""
    representative = representative_images(quantization, training, count, seed)
    if serving is None:
        export = export_tflite(saved_model_dir, output, quantization, representative, log=log, warn=warn)
    else:
        export = export_classifier_tflite(*serving, saved_model_dir, output, quantization, representative, log, warn)
    log(f"Wrote {export.path} ({describe_export(export)}), {export.sidecar} and {model_card_markdown_path(export.path)}")
    if export.patient_input:
        log(f"note: {export.path} takes patient metadata as a second input: the LiteRT interpreter reads it, "
            "but MediaPipe's ImageClassifier, the TFLite Task Library and ML Kit load single-input models only")
    return export
