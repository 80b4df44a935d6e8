"""TFLite metadata in every .tflite retrain writes, so the app frameworks load it with no extra
file: MediaPipe Tasks' ImageClassifier, ML Kit's custom image labeling and the TFLite Task
Library read the input's normalisation, the labels and the outputs' meaning from it.

Written with the `flatbuffers` package and the metadata schema's generated code (vendored in
metadata_schema_py_generated.py), because tflite-support's writers are unmaintained and pin a
protobuf that conflicts with TensorFlow's, and mediapipe's copy of them does not import from its
wheel (it needs a native module the wheel lacks). The layout is the one tflite-support writes:
the metadata flatbuffer in a model buffer named TFLITE_METADATA, the associated files in a zip
appended to the model. Imports no TensorFlow, like the rest of what reads a .tflite.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema

from retrain.card.formats import EMBEDDED_CARD_FILE, LABELS_FILE, card_bytes
from retrain.card.model_card import ModelCard
from retrain.errors import UserError
from retrain.export import metadata_schema_py_generated as meta

METADATA_NAME = "TFLITE_METADATA"  # the model metadata entry clients look for
METADATA_IDENTIFIER = b"M001"
PARSER_VERSION = "1.0.0"  # every field written here is in the schema's first version
TOOL = "retrain"


def _feature(name: str, description: str, low: float, high: float, files=()) -> meta.TensorMetadataT:
    tensor = meta.TensorMetadataT()
    tensor.name, tensor.description = name, description
    tensor.content = meta.ContentT()
    tensor.content.contentPropertiesType = meta.ContentProperties.FeatureProperties
    tensor.content.contentProperties = meta.FeaturePropertiesT()
    tensor.stats = meta.StatsT()
    tensor.stats.min, tensor.stats.max = [low], [high]
    tensor.associatedFiles = list(files) or None
    return tensor


def _file(name: str, description: str, kind: int) -> meta.AssociatedFileT:
    attached = meta.AssociatedFileT()
    attached.name, attached.description, attached.type = name, description, kind
    return attached


def _image_input(size: int, uint8: bool) -> meta.TensorMetadataT:
    """RGB pixels in [0, 255]: the model normalises them itself, so the client's normalisation is
    mean 0, std 1 (MediaPipe requires one for a float input); uint8 pixels go in as they are
    (the int8 input's scale is 1, zero point 0)."""
    kind = "uint8" if uint8 else "float32"
    tensor = meta.TensorMetadataT()
    tensor.name = "image"
    tensor.description = (f"RGB image, {size}x{size}, {kind} pixel values in [0, 255]; "
                          "the model applies its own normalisation")
    tensor.content = meta.ContentT()
    tensor.content.contentPropertiesType = meta.ContentProperties.ImageProperties
    properties = meta.ImagePropertiesT()
    properties.colorSpace = meta.ColorSpaceType.RGB
    properties.defaultSize = meta.ImageSizeT()
    properties.defaultSize.width = properties.defaultSize.height = size
    tensor.content.contentProperties = properties
    normalisation = meta.ProcessUnitT()
    normalisation.optionsType = meta.ProcessUnitOptions.NormalizationOptions
    normalisation.options = meta.NormalizationOptionsT()
    normalisation.options.mean, normalisation.options.std = [0.0], [1.0]
    tensor.processUnits = [normalisation]
    tensor.stats = meta.StatsT()
    tensor.stats.min, tensor.stats.max = [0.0], [255.0]
    return tensor


def _ood_description(card: ModelCard) -> str:
    described = "out-of-distribution score (higher: less like the training images)"
    if card.ood is None:
        return described
    if card.ood.unavailable:
        return f"{described}; {card.ood.unavailable}"
    if card.ood.threshold is not None:
        described += f"; flag the image as unlike the training images when above {card.ood.threshold:.6g}"
    if card.ood.hard_threshold is not None:
        described += f", reject it above {card.ood.hard_threshold:.6g}"
    return described


def model_metadata(card: ModelCard, inputs: list[str], outputs: list[str]) -> meta.ModelMetadataT:
    """The metadata for a model whose subgraph inputs and outputs are, in order, of the kinds
    listed ("image", "uint8 image", "patient", "probability", "ood")."""
    labels = ", ".join(card.labels)
    model = meta.ModelMetadataT()
    model.name = f"retrain image classifier ({card.architecture or 'unknown backbone'}, {card.quantization or 'none'})"
    model.description = f"Classifies an RGB image into {len(card.labels)} classes: {labels}."
    model.version = f"model card version {card.version}"
    model.author = TOOL
    model.minParserVersion = PARSER_VERSION
    model.associatedFiles = [_file(EMBEDDED_CARD_FILE, "the retrain model card (JSON): labels, operating points, "
                                   "calibration, out-of-distribution threshold", meta.AssociatedFileType.DESCRIPTIONS)]
    width = card.patient_metadata.encoding.width if card.patient_metadata else 0
    described = {
        "image": lambda: _image_input(card.input_size, False),
        "uint8 image": lambda: _image_input(card.input_size, True),
        "patient": lambda: _feature("patient_metadata", f"encoded patient metadata, {width} values "
                                    "(see patient_metadata in the model card)", -4.0, 4.0),
        "probability": lambda: _feature("probability", f"class probabilities: {labels}", 0.0, 1.0, [
            _file(LABELS_FILE, "the class names, one a line", meta.AssociatedFileType.TENSOR_AXIS_LABELS)]),
        "ood": lambda: _feature("ood_score", _ood_description(card), 0.0, float(np.finfo(np.float32).max)),
    }
    subgraph = meta.SubGraphMetadataT()
    subgraph.inputTensorMetadata = [described[kind]() for kind in inputs]
    subgraph.outputTensorMetadata = [described[kind]() for kind in outputs]
    model.subgraphMetadata = [subgraph]
    return model


def is_score(shape) -> bool:
    """Whether an output of this shape is one value per image (probabilities have two classes or more)."""
    return [int(d) for d in shape] in ([1], [1, 1])


def _tensor_kinds(model: schema.Model) -> tuple[list[str], list[str]]:
    """The kinds of the subgraph's inputs and outputs, in order, as model_metadata takes them."""
    graph = model.Subgraphs(0)
    tensors = lambda indices: [graph.Tensors(int(i)) for i in indices]  # noqa: E731
    inputs = ["patient" if t.ShapeLength() != 4 else "uint8 image" if t.Type() == schema.TensorType.UINT8 else "image"
              for t in tensors(graph.InputsAsNumpy())]
    return inputs, ["ood" if is_score(t.ShapeAsNumpy()) else "probability" for t in tensors(graph.OutputsAsNumpy())]


def embed_metadata(model_bytes: bytes, metadata: meta.ModelMetadataT, files: dict[str, bytes]) -> bytes:
    """The .tflite bytes with `metadata` and `files` attached; metadata and files already in
    `model_bytes` are replaced."""
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(model_bytes, 0))
    builder = flatbuffers.Builder(0)
    builder.Finish(metadata.Pack(builder), METADATA_IDENTIFIER)
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(bytes(builder.Output()), np.uint8)
    entry = next((m for m in model.metadata or [] if m.name == METADATA_NAME.encode()), None)
    if entry is None:
        model.buffers.append(buffer)
        entry = schema.MetadataT()
        entry.name, entry.buffer = METADATA_NAME, len(model.buffers) - 1
        model.metadata = [*(model.metadata or []), entry]
    else:
        model.buffers[entry.buffer] = buffer
    builder = flatbuffers.Builder(len(model_bytes) + 1024)
    builder.Finish(model.Pack(builder), b"TFL3")
    written = io.BytesIO(bytes(builder.Output()))
    written.seek(0, io.SEEK_END)
    with zipfile.ZipFile(written, "a") as attached:  # stored, not compressed, as clients map them in place
        for name, data in files.items():
            attached.writestr(name, data)
    return written.getvalue()


def with_metadata(model_bytes: bytes, card: ModelCard) -> bytes:
    """The .tflite bytes with metadata describing `card`'s model, its labels file and model card
    attached; metadata and files already in `model_bytes` are replaced."""
    model = schema.Model.GetRootAsModel(model_bytes, 0)
    inputs, outputs = _tensor_kinds(model)
    labels = "".join(f"{label}\n" for label in card.labels).encode()
    return embed_metadata(model_bytes, model_metadata(card, inputs, outputs),
                          {LABELS_FILE: labels, EMBEDDED_CARD_FILE: card_bytes(card)})


@dataclass(frozen=True)
class StandardMetadata:
    """What a .tflite's TFLite metadata tells a client, whichever tool wrote it."""

    labels_file: str | None  # the TENSOR_AXIS_LABELS file of the first output that has one
    mean: float | None  # the image input's NormalizationOptions (one value for all channels)
    std: float | None


def read_standard_metadata(model_bytes: bytes, source: str) -> StandardMetadata | None:
    """The labels file and input normalisation a .tflite's metadata gives; None without metadata."""
    model = schema.Model.GetRootAsModel(model_bytes, 0)
    entries = [model.Metadata(i) for i in range(model.MetadataLength())]
    entry = next((e for e in entries if e.Name() == METADATA_NAME.encode()), None)
    if entry is None:
        return None
    try:
        data = model.Buffers(entry.Buffer()).DataAsNumpy().tobytes()
        metadata = meta.ModelMetadataT.InitFromObj(meta.ModelMetadata.GetRootAsModelMetadata(data, 0))
        graph = metadata.subgraphMetadata[0]
        labels = [f.name.decode() for t in graph.outputTensorMetadata or [] for f in t.associatedFiles or []
                  if f.type == meta.AssociatedFileType.TENSOR_AXIS_LABELS]
        units = [u.options for t in graph.inputTensorMetadata or [] for u in t.processUnits or []
                 if u.optionsType == meta.ProcessUnitOptions.NormalizationOptions]
    except Exception as e:  # a damaged flatbuffer fails anywhere inside the generated readers
        raise UserError(f"{source}: its TFLite metadata is damaged ({type(e).__name__}: {e})") from e
    mean, std = (float(units[0].mean[0]), float(units[0].std[0])) if units else (None, None)
    return StandardMetadata(labels[0] if labels else None, mean, std)
