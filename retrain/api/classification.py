"""Loading a model once and classifying images with it: what label_image prints, as a value a
script can use."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from retrain.card.formats import is_tflite_file, sidecar_path
from retrain.errors import UserError
from retrain.outputs import check_outputs
from retrain.predict.classification import Classification
from retrain.predict.classifier import Classifier, PatientMetadata, StockModel, load_classifier
from retrain.predict.heatmaps import HeatmapRequest, write_heatmap
from retrain.predict.loaded_model import FeedOverrides
from retrain.reporter import Reporter


def load(path: Path | None = None, labels: Path | None = None, tta: bool = False, feed: FeedOverrides = FeedOverrides(),
         stock: StockModel = StockModel(), reporter: Reporter | None = None) -> Classifier:
    """The model at `path` (.pb, SavedModel folder or .tflite; None: the `stock` ImageNet model)
    and its model card, read once: call the result for each image or batch. `labels`: a labels
    file in place of the model's own; `tta`: average over the four flips; `feed`:
    tensorflow-for-poets' overrides. Notes on the overrides go to `reporter.warn`, as do the
    patient metadata lines of each call."""
    return load_classifier(path, labels, tta, feed, stock, (reporter or Reporter()).warn)


def check_request(image: Path, top_k: int = 5, heatmap: HeatmapRequest | None = None,
                  model: Path | Classifier | None = None, labels: Path | None = None) -> None:
    """What classify checks before the (slow) loading: the image, top_k, and that the heatmap
    is not drawn over the photo, the model or its labels."""
    if top_k < 1:
        raise UserError(f"classify.top_k must be at least 1, got {top_k}")
    if Path(image).expanduser().is_dir():
        raise UserError(f"classify.image {image}: is a folder; give one image file "
                        "(to score a folder of images, use evaluate evaluate.image_dir)")
    if not Path(image).expanduser().exists():
        raise UserError(f"classify.image {image}: no such file")
    if not Path(image).expanduser().is_file():
        raise UserError(f"classify.image {image}: not a regular file (a device, pipe or socket); give an image file "
                        "(.jpg, .jpeg, .png)")
    if heatmap is None:
        return
    if isinstance(model, Classifier):
        model = None if model.stock else Path(model.model.source)
    model = None if model is None else Path(model).expanduser()
    tflite = model is not None and is_tflite_file(model)
    check_outputs({"classify.image": image, "load.path": model,
                   "load.path's sidecar": sidecar_path(model) if tflite else None, "load.labels": labels},
                  {"HeatmapRequest.file": heatmap.file})
    if Path(heatmap.file).suffix.lower() != ".png":
        raise UserError(f"HeatmapRequest.file {heatmap.file}: the heatmap is a PNG image; give a name ending in .png")


def classify(image: Path, model: Path | Classifier | None = None, top_k: int = 5,
             heatmap: HeatmapRequest | None = None, patient_metadata: PatientMetadata = None,
             reporter: Reporter | None = None) -> Classification:
    """Classify `image` with `model`: a Classifier from load, or a model path loaded here (None:
    the stock ImageNet model). `patient_metadata` is "age_approximate=55,sex=female" for a model
    trained with it. A heatmap that cannot be drawn is reported in the result, not raised, so the
    predictions still reach the user."""
    check_request(image, top_k, heatmap, model)
    classifier = model if isinstance(model, Classifier) else load(model, reporter=reporter)
    result = classifier(image, patient_metadata, top_k)
    if heatmap is None:
        return result
    try:
        drawn = classifier.heatmap(image, heatmap.label, patient_metadata)
        write_heatmap(heatmap.file, image, drawn)
    except UserError as e:
        return dataclasses.replace(result, heatmap_file=heatmap.file, heatmap_error=str(e))
    return dataclasses.replace(result, heatmap=drawn, heatmap_file=heatmap.file)
