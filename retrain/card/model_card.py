"""The model card: what retrain records about a model, typed.

Every exported model carries one (the `.pb` as a constant, the SavedModel as an asset, the
`.tflite` in its sidecar), and every reader after training (label_image, evaluate,
set_operating_point, the model card in words, an app) reads it through `ModelCard`, so
a key is spelled in one place: here. The layout on disk is unchanged since cards had no
version: those are version 1. `to_json` writes the keys in the order retrain has always
written them, and keys this version does not know are kept, so a card read and written
back by set_operating_point loses nothing. A recalibrated model's earlier calibrations are in a
key of their own, `recalibrated_from` beside `calibration`, so that a retrain older than
recalibration still reads the card (and keeps them).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from retrain.data.sets import TrainingData
from retrain.decisions.calibration import Calibration
from retrain.decisions.figures import Figures
from retrain.decisions.ood import OodRecord
from retrain.decisions.operating_points import OperatingPoint
from retrain.errors import UserError
from retrain.patient.subgroups import Subgroups
from retrain.patient.table import MetadataEncoding
from retrain.train.fitting import TopLayerRecord
from retrain.train.tuned_network import FineTuningRecord

CARD_FORMAT = "retrain"  # the value of "format" in every card
CARD_VERSION = 1  # cards without "card_version" are version 1; bump it, and write the key, when the layout changes


def _without_none(entries: dict) -> dict:
    return {key: value for key, value in entries.items() if value is not None}


@dataclass(frozen=True)
class PatientInput:
    """The model's second input: encoded patient metadata."""

    input_name: str
    fusion: str | None
    columns: tuple[str, ...]
    encoding: MetadataEncoding

    def to_json(self) -> dict:
        return {"input_name": self.input_name, "fusion": self.fusion, "columns": list(self.columns),
                "encoding": self.encoding.to_json()}

    @classmethod
    def from_json(cls, data: dict, source: str) -> PatientInput:
        encoding = MetadataEncoding.from_json(data.get("encoding"), source=source)
        return cls(data.get("input_name"), data.get("fusion"), tuple(data.get("columns", encoding.column_names)),
                   encoding)


@dataclass(frozen=True)
class TensorDetail:
    """A .tflite tensor as LiteRT lists it: what an app feeds or reads."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    scale: float | None = None  # uint8 tensors: real = scale * (stored - zero_point)
    zero_point: int | None = None

    def to_json(self) -> dict:
        return _without_none({"name": self.name, "shape": list(self.shape), "dtype": self.dtype, "scale": self.scale,
                              "zero_point": self.zero_point})

    @classmethod
    def from_json(cls, data: dict) -> TensorDetail:
        return cls(data["name"], tuple(data["shape"]), data["dtype"], data.get("scale"), data.get("zero_point"))


@dataclass(frozen=True)
class Int8Weights:
    """How retrain.export.int8 rounded a .tflite's weights."""

    method: str
    calibration_images: int

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class EnsembleMember:
    """One model of an ensemble (retrain.api.ensemble), as its own card described it."""

    path: str  # as given to the ensemble
    architecture: str | None
    input_size: int
    backbone_identity: Any
    recipe: str | None
    colour_constancy: str | None
    validation_auc: float | None  # its card's validation mean AUC, where it stored one

    def to_json(self) -> dict:
        return _without_none(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, data: dict) -> EnsembleMember:
        return cls(data["path"], data.get("architecture"), data["input_size"], data.get("backbone_identity"),
                   data.get("recipe"), data.get("colour_constancy"), data.get("validation_auc"))


@dataclass(frozen=True)
class ModelCard:
    labels: tuple[str, ...]
    input_name: str
    output_name: str
    input_size: int
    architecture: str | None = None
    backbone_identity: Any = None
    input_range: tuple = (0, 255)
    normalisation_in_model: Any = None
    preprocessing_version: int | None = None
    class_activation_maps: str | None = None  # the maps' output; None: the backbone has no feature map
    has_maps_entry: bool = True  # False: exported before retrain wrote class activation maps
    colour_constancy: str | None = None  # what the model does to the pixels before its normalisation; None: nothing
    recipe: str | None = None
    top_layer: TopLayerRecord | None = None
    fine_tuning: FineTuningRecord | None = None
    patient_metadata: PatientInput | None = None
    calibration: Calibration | None = None
    operating_points: tuple[OperatingPoint, ...] | None = None  # None: exported before they existed
    validation_figures: Figures | None = None
    ood: OodRecord | None = None
    subgroups: Subgroups | tuple[str, ...] | None = None  # the validation figures by group: measured, or as stored
    test_figures: Figures | None = None
    training_data: TrainingData | None = None
    quantization: str | None = None  # the .tflite's sidecar only, with the tensors below
    input_tensor: TensorDetail | None = None
    output_tensor: TensorDetail | None = None
    metadata_tensor: TensorDetail | None = None
    ood_tensor: TensorDetail | None = None
    int8_weights: Int8Weights | None = None
    members: tuple[EnsembleMember, ...] | None = None  # an ensemble's models, whose probabilities it averages
    version: int = CARD_VERSION
    unknown: dict = field(default_factory=dict)  # keys a newer retrain wrote, kept as they are

    @property
    def subgroup_lines(self) -> tuple[str, ...]:
        """The validation figures by group as evaluate prints them, the form a card stores them in."""
        if isinstance(self.subgroups, Subgroups):
            return tuple(self.subgroups.lines())
        return self.subgroups or ()

    @property
    def points(self) -> tuple[OperatingPoint, ...]:
        return self.operating_points or ()

    def replace(self, **changes) -> ModelCard:
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict:
        """The card as retrain writes it, keys in the order they have always been written."""
        entries = {"format": CARD_FORMAT, "architecture": self.architecture, "backbone_identity": self.backbone_identity,
                   "input_name": self.input_name, "output_name": self.output_name, "input_size": self.input_size,
                   "input_range": list(self.input_range), "normalisation_in_model": self.normalisation_in_model,
                   "preprocessing_version": self.preprocessing_version, "labels": list(self.labels)}
        if self.has_maps_entry:
            entries["class_activation_maps"] = self.class_activation_maps
        optional = {"colour_constancy": self.colour_constancy, "recipe": self.recipe, "top_layer": self.top_layer,
                    "fine_tuning": self.fine_tuning, "patient_metadata": self.patient_metadata,
                    "calibration": None if self.calibration is None else self.calibration.card(with_earlier=False),
                    "recalibrated_from": None if self.calibration is None or self.calibration.recalibrated_from is None
                    else self.calibration.recalibrated_from.card(),
                    "operating_points": None if self.operating_points is None else [p.card() for p in self.points],
                    "validation_figures": self.validation_figures, "ood": self.ood,
                    "subgroups": None if self.subgroups is None else list(self.subgroup_lines),
                    "test_figures": self.test_figures, "training_data": self.training_data,
                    "quantization": self.quantization, "input_tensor": self.input_tensor,
                    "output_tensor": self.output_tensor, "metadata_tensor": self.metadata_tensor,
                    "ood_tensor": self.ood_tensor, "int8_weights": self.int8_weights,
                    "members": None if self.members is None else [member.to_json() for member in self.members]}
        for key, value in optional.items():
            if value is not None:
                entries[key] = value.to_json() if hasattr(value, "to_json") else value
        if self.version != CARD_VERSION:
            entries["card_version"] = self.version
        return {**entries, **self.unknown}

    @classmethod
    def from_json(cls, data: object, source: str) -> ModelCard:
        """The card in `data`; a damaged one is one line naming `source` and what is wrong."""
        if not isinstance(data, dict):
            raise UserError(f"{source}: not a retrain model card (not a JSON object)")
        if data.get("format", CARD_FORMAT) != CARD_FORMAT:
            raise UserError(f"{source}: not a retrain model card (\"format\" is {data.get('format')!r})")
        version = data.get("card_version", CARD_VERSION)
        if not isinstance(version, int) or version > CARD_VERSION:
            raise UserError(f"{source}: a model card of version {version!r}, newer than this retrain reads "
                            f"({CARD_VERSION}); update retrain")
        try:
            return _card(data, source, version)
        except UserError:
            raise
        except KeyError as e:
            detail = f"no {e} entry"
        except (TypeError, ValueError, AttributeError) as e:
            detail = str(e) or type(e).__name__
        raise UserError(f"{source}: the model card is damaged ({detail})")


_KNOWN = {"format", "card_version", "recalibrated_from", *(f.name for f in dataclasses.fields(ModelCard))} - {
    "has_maps_entry", "version", "unknown"}


def _text(value, key: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ValueError(f"\"{key}\" is not text")
    return value


def _card(data: dict, source: str, version: int) -> ModelCard:
    def optional(key, read):
        return None if data.get(key) is None else read(data[key])

    labels = data["labels"]
    if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
        raise ValueError("\"labels\" is not a list of names")
    for key in ("input_name", "output_name"):
        if not isinstance(data[key], str):
            raise ValueError(f"\"{key}\" is not a name")
    if not isinstance(data["input_size"], int) or data["input_size"] < 1:
        raise ValueError(f"\"input_size\" is {data['input_size']!r}")
    return ModelCard(
        tuple(labels), data["input_name"], data["output_name"], data["input_size"], data.get("architecture"),
        data.get("backbone_identity"), tuple(data.get("input_range", (0, 255))), data.get("normalisation_in_model"),
        data.get("preprocessing_version"), data.get("class_activation_maps"), "class_activation_maps" in data,
        _text(data.get("colour_constancy"), "colour_constancy"), data.get("recipe"),
        optional("top_layer", lambda d: TopLayerRecord(**d)),
        optional("fine_tuning", lambda d: FineTuningRecord(**d)),
        optional("patient_metadata", lambda d: PatientInput.from_json(d, source)),
        optional("calibration", lambda d: Calibration.from_card({**d, "recalibrated_from": data.get(
            "recalibrated_from")})),
        optional("operating_points", lambda d: tuple(OperatingPoint.from_card(entry) for entry in d)),
        optional("validation_figures", Figures.from_json), optional("ood", OodRecord.from_json),
        optional("subgroups", tuple), optional("test_figures", Figures.from_json),
        optional("training_data", lambda d: TrainingData(**d)), data.get("quantization"),
        optional("input_tensor", TensorDetail.from_json), optional("output_tensor", TensorDetail.from_json),
        optional("metadata_tensor", TensorDetail.from_json), optional("ood_tensor", TensorDetail.from_json),
        optional("int8_weights", lambda d: Int8Weights(**d)),
        optional("members", lambda d: tuple(EnsembleMember.from_json(entry) for entry in d)), version,
        {key: value for key, value in data.items() if key not in _KNOWN})
