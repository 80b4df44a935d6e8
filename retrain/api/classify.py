"""Classifying one image with an exported model (or the stock ImageNet one): what label_image
prints, as a value a script can use."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from retrain.backbones import DEFAULT_ARCHITECTURE
from retrain.errors import UserError
from retrain.export.tflite_format import is_tflite_file
from retrain.native_logs import import_tensorflow
from retrain.predict import heatmaps, prediction
from retrain.predict.heatmaps import Heatmap
from retrain.predict.loaded_model import FeedOverrides, LoadedModel
from retrain.predict.prediction import Prediction
from retrain.reporter import Reporter


@dataclass(frozen=True)
class Classification:
    """One image's top classes, best first, and the heatmap drawn (or why it could not be)."""

    image: Path
    model: LoadedModel
    predictions: list[Prediction]
    heatmap: Heatmap | None = None
    heatmap_file: Path | None = None  # where the heatmap was asked to be drawn
    heatmap_error: str | None = None  # the heatmap's failure; the predictions are complete regardless

    def as_json(self) -> dict:
        """label_image --json."""
        return prediction.prediction_json(self.model, self.image, self.predictions, self.heatmap, self.heatmap_file,
                                          self.heatmap_error)


def classify(
    image: Path, graph: Path | None = None, labels: Path | None = None, top_k: int = 5, tta: bool = False,
    heatmap: Path | None = None, heatmap_class: str | None = None, patient_metadata: str | None = None,
    architecture: str = DEFAULT_ARCHITECTURE, model_dir: Path | None = None, feed: FeedOverrides = FeedOverrides(),
    reporter: Reporter = Reporter(),
) -> Classification:
    """Classify `image` with the model at `graph` (.pb, SavedModel or .tflite; None: the stock
    ImageNet `architecture`). `labels` is a labels file (default: the model's own);
    `patient_metadata` is "age_approximate=55,sex=female" for a model trained with it; `feed`
    holds tensorflow-for-poets' overrides. A heatmap that cannot be drawn is reported in the
    result, not raised, so the predictions still reach the user."""
    if heatmap_class is not None and heatmap is None:
        raise UserError("--heatmap_class needs --heatmap FILE.png to draw it to")
    if top_k < 1:
        raise UserError(f"--top_k must be at least 1, got {top_k}")
    if Path(image).expanduser().is_dir():
        raise UserError(f"--image {image}: is a folder; give one image file "
                        "(to score a folder of images, use evaluate --image_dir)")
    if not Path(image).expanduser().is_file():
        raise UserError(f"--image {image}: no such file")
    if heatmap is not None:
        _check_heatmap_path(heatmap, image, graph, labels)
    model = _model(graph, architecture, model_dir, feed, reporter.warn)
    if tta:
        model = prediction.with_flip_tta(model)
    label_list = prediction.model_labels(model, prediction.read_labels(labels) if labels else None)
    row = prediction.patient_row(model, patient_metadata, reporter.warn)
    pixels = prediction.load_image_for(model, image)
    predictions = prediction.classify_pixels(model, pixels, label_list, top_k, row)
    if heatmap is None:
        return Classification(image, model, predictions)
    try:
        drawn = heatmaps.heatmaps_for(model, pixels[None], label_list, heatmap_class, None if row is None else row[None])[0]
        heatmaps.write_heatmap(heatmap, image, drawn)
    except UserError as e:
        return Classification(image, model, predictions, None, heatmap, str(e))
    return Classification(image, model, predictions, drawn, heatmap)


def _check_heatmap_path(heatmap: Path, image: Path, graph: Path | None, labels: Path | None) -> None:
    """Before the model is loaded: the heatmap must not be drawn over the photo, the model or the labels."""
    from retrain.export.tflite_format import sidecar_path
    from retrain.outputs import check_outputs

    tflite = graph is not None and is_tflite_file(Path(graph).expanduser())
    check_outputs({"--image": image, "--graph": graph, "--graph's sidecar": sidecar_path(Path(graph).expanduser())
                   if tflite else None, "--labels": labels}, {"--heatmap": heatmap})


def _model(graph: Path | None, architecture: str, model_dir: Path | None, feed: FeedOverrides,
           warn: Callable[[str], None]) -> LoadedModel:
    """The model at `graph`, or the stock ImageNet one; TensorFlow only when it needs it."""
    from retrain import paths

    if graph is None or not is_tflite_file(Path(graph).expanduser()):
        import_tensorflow()
    if graph is None:
        return prediction.stock_imagenet_model(architecture, model_dir or paths.default_model_dir())
    notes: list[str] = []
    model = prediction.load_model(graph, feed, notes)
    for note in notes:
        warn(note)
    return model
