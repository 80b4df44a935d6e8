"""A model loaded once and called for each image or batch: what label_image, evaluate,
set_operating_point and a web server share. It classifies and checks; drawing heatmaps and
writing files is its caller's job."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from retrain.backbones import DEFAULT_ARCHITECTURE
from retrain.card.formats import is_tflite_file
from retrain.data.images import ImageBytes, ImageSource
from retrain.errors import UserError
from retrain.native_logs import import_tensorflow
from retrain.patient.table import fed_rows
from retrain.predict import heatmaps, prediction
from retrain.predict.classification import Classification, checked
from retrain.predict.heatmaps import Heatmap
from retrain.predict.loaded_model import FeedOverrides, LoadedModel, with_rows

PatientMetadata = str | None  # "age_approximate=55,sex=female"; None: every value missing


@dataclass(frozen=True)
class StockModel:
    """The stock ImageNet classifier load gives for no path: a backbone and its converted weights."""

    architecture: str = DEFAULT_ARCHITECTURE
    model_dir: Path | None = None  # None: the user cache folder's models


@dataclass(frozen=True)
class Classifier:
    """An exported model (or the stock ImageNet one) with its model card and labels, read once.
    Call it with one image path for a Classification, or a list of paths for a list of them."""

    model: LoadedModel  # with load.tta, the probabilities averaged over the four flips
    labels: tuple[str, ...]  # in the model's output order
    stock: bool = False  # the stock ImageNet classifier, which has no model card
    tta: bool = False
    warn: Callable[[str], None] = lambda _: None

    @property
    def model_card(self):
        return self.model.model_card

    def __call__(self, images: ImageSource | Sequence[ImageSource],
                 patient_metadata: PatientMetadata | Sequence[PatientMetadata] = None,
                 top_k: int = 5) -> Classification | list[Classification]:
        """One image (a path, or an ImageBytes held in memory) or a batch (a list of them, with a
        list of one patient metadata text each, or one text or None for all), classified in one
        pass of the model."""
        one = isinstance(images, (str, os.PathLike, ImageBytes))
        paths = [_source(images)] if one else [_source(image) for image in images]
        shared = one or isinstance(patient_metadata, str) or patient_metadata is None
        texts = [patient_metadata] * len(paths) if shared else list(patient_metadata)
        if len(texts) != len(paths):
            raise UserError(f"Classifier.patient_metadata: {len(texts)} rows for {len(paths)} images")
        pixels, rows = self._inputs(paths, texts, self.warn)
        probabilities, scores = self._scores(pixels, rows)
        results = [Classification(path, self.model, prediction.top_k(p, list(self.labels), top_k),
                                  **checked(self.model, self.stock, p, score, self.tta))
                   for path, p, score in zip(paths, probabilities, scores)]
        return results[0] if one else results

    def heatmap(self, image: ImageSource, label: str | None = None, patient_metadata: PatientMetadata = None) -> Heatmap:
        """Where the evidence for `label` (None: the top class) lies in `image`; raises UserError
        when the model has no class activation maps. Its patient metadata lines were said by the call."""
        pixels, rows = self._inputs([_source(image)], [patient_metadata], lambda _: None)
        return heatmaps.heatmaps_for(self.model, pixels, list(self.labels), label, rows)[0]

    def _inputs(self, paths: list[Path | ImageBytes], texts: list[PatientMetadata],
                warn) -> tuple[np.ndarray, np.ndarray | None]:
        rows = [prediction.patient_row(self.model, text, warn) for text in _said_once(texts)]
        pixels = np.stack([prediction.load_image_for(self.model, path) for path in paths])
        if all(row is None for row in rows):
            return pixels, None
        missing = fed_rows(self.model.patient_encoding, None, 1)[0]
        return pixels, np.stack([missing if row is None else row for row in rows] * (len(paths) // len(rows)))

    def _scores(self, pixels: np.ndarray, rows: np.ndarray | None) -> tuple[np.ndarray, list[float | None]]:
        """The images' probabilities and, for a model with one, their out-of-distribution scores: one pass."""
        if self.model.ood is None:
            probabilities, scores = with_rows(self.model.predict, pixels, rows), [None] * len(pixels)
        else:
            probabilities, ood = with_rows(self.model.ood, pixels, rows)
            scores = [float(score) for score in np.asarray(ood).reshape(-1)]
        if probabilities.shape[-1] != len(self.labels):
            raise UserError(f"labels: {len(self.labels)} labels but the model has {probabilities.shape[-1]} outputs")
        return probabilities, scores


def _source(image: ImageSource) -> Path | ImageBytes:
    return image if isinstance(image, ImageBytes) else Path(image)


def _said_once(texts: list[PatientMetadata]) -> list[PatientMetadata]:
    """One text for a batch that shares it (its lines said once), else one per image."""
    return texts[:1] if all(text is texts[0] for text in texts) else texts


def load_classifier(path: Path | None, labels: Path | None = None, tta: bool = False,
                    feed: FeedOverrides = FeedOverrides(), stock: StockModel = StockModel(),
                    warn: Callable[[str], None] = lambda _: None) -> Classifier:
    """The model at `path` (.pb, SavedModel or .tflite; None: the `stock` ImageNet model), read
    once with its model card. `labels`: a labels file in place of the model's own; `feed`:
    tensorflow-for-poets' overrides. TensorFlow only when the model needs it."""
    from retrain import paths

    if path is None or not is_tflite_file(Path(path).expanduser()):
        import_tensorflow()
    if path is None:
        model = prediction.stock_imagenet_model(stock.architecture, stock.model_dir or paths.default_model_dir())
    else:
        notes: list[str] = []
        model = prediction.load_model(path, feed, notes)
        for note in notes:
            warn(note)
    if tta:
        model = prediction.with_flip_tta(model)
    label_list = prediction.model_labels(model, prediction.read_labels(labels) if labels else None)
    return Classifier(model, tuple(label_list), stock=path is None, tta=tta, warn=warn)
