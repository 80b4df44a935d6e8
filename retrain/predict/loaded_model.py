"""What every loader (frozen graph, SavedModel, .tflite, stock ImageNet) returns, kept
apart from the loaders so they can import it without importing one another."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

FROM_CARD = object()  # LoadedModel.of: the patient metadata encoding the model card holds


@dataclass
class LoadedModel:
    # float32 [N, H, W, 3] pixels in [0, 255] (and, for a model that takes patient metadata, its
    # encoded [N, M] rows; None = every value missing) -> probabilities
    predict: Callable[..., np.ndarray]
    input_height: int
    input_width: int
    labels: list[str] | None
    source: str
    # pixels (and patient metadata rows) -> (probabilities, class activation maps [N, h, w, classes]), when the model has them
    class_activation_maps: Callable[..., tuple[np.ndarray, np.ndarray]] | None = None
    no_maps_reason: str = ""  # why class_activation_maps is None, for the user
    model_card: Any = None  # the ModelCard retrain recorded (architecture, recipe, ...); None for a foreign model
    patient_encoding: Any = None  # a patient_metadata.MetadataEncoding when the model takes patient metadata
    # pixels (and patient metadata rows) -> (probabilities, out-of-distribution scores [N]), when the model has them
    ood: Callable[..., tuple[np.ndarray, np.ndarray]] | None = None

    @classmethod
    def of(cls, predict: Callable[..., np.ndarray], size: tuple[int, int], source: str, model_card: Any = None, *,
           labels: list[str] | None = None, maps: Callable | None = None, no_maps_reason: str = "",
           ood: Callable | None = None, encoding: Any = FROM_CARD) -> LoadedModel:
        """The one way a loader builds a LoadedModel: the labels and patient metadata encoding come
        from the model card when there is one (`labels`: those of a model without a card; `encoding`:
        one a loader checked against the model's inputs)."""
        if model_card is not None:
            labels = list(model_card.labels)
        encoding = patient_encoding(model_card) if encoding is FROM_CARD else encoding
        return cls(predict, size[0], size[1], labels, source, class_activation_maps=maps, no_maps_reason=no_maps_reason,
                   model_card=model_card, patient_encoding=encoding, ood=ood)


def patient_encoding(model_card: Any):
    """How to encode the patient metadata the model takes; None for a model that takes none."""
    return model_card.patient_metadata.encoding if model_card and model_card.patient_metadata else None


@dataclass(frozen=True)
class FeedOverrides:
    """tensorflow-for-poets' overrides of how a graph is fed (label_image's flags); None means 'take it
    from the model'."""

    input_layer: str | None = None
    output_layer: str | None = None
    input_height: int | None = None
    input_width: int | None = None
    input_mean: float | None = None
    input_std: float | None = None


def with_rows(fn: Callable, pixels: np.ndarray, rows: np.ndarray | None):
    """`fn(pixels)`, or `fn(pixels, rows)` when patient-metadata rows are given: only models
    that take patient metadata are handed them."""
    return fn(pixels) if rows is None else fn(pixels, rows)
