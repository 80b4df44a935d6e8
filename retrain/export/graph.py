"""Writing the retrained model: frozen GraphDef, SavedModel and labels file.

Every export maps RGB pixels in [0, 255], already resized to the backbone's input
size, to class probabilities; normalisation is inside the model. A model card (input
size, tensor names, labels, backbone, recipe) travels with each export so label_image
never has to be told how to feed it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import tensorflow as tf

from retrain.backbones.colour import DESCRIPTION as COLOUR_CONSTANCY
from retrain.card.formats import write_graph_card, write_saved_model_card
from retrain.card.model_card import ModelCard
from retrain.data.images import PREPROCESSING_VERSION
from retrain.errors import UserError
from retrain.paths import write_atomically
from retrain.decisions.ood import (
    OUTPUT_NAME as OOD_NAME,  # an output of every format when the model has one
)
from retrain.decisions.ood import OodDetector
from retrain.train.top_layer import TopLayer

INPUT_NAME = "input"
# The second input of a model trained with patient metadata: [N, M] encoded values. The tensor
# name is part of every exported model's interface, so it keeps the word it was first given.
PATIENT_INPUT = "metadata"
MAPS_NAME = "class_activation_maps"  # second output of the frozen graph; SavedModel signature of that name
# The SavedModel signature the .tflite is converted from: serving_default with the out-of-distribution
# score shaped [batch, 1], as the TFLite Task Library and ML Kit require of every output.
TFLITE_SIGNATURE = "tflite"


class ServingModel(tf.Module):
    """Backbone features followed by the trained fully connected + softmax layer.

    Where the backbone exposes its last feature map, `serve_with_maps` also returns the
    class activation maps (Zhou et al. 2016): the top layer's weights applied at every place
    of that map. The top layer is linear over the map's spatial mean, so each class's map
    averages exactly to its logit minus the bias: the heatmap needs no gradients.

    With an `ood` detector every signature also returns the out-of-distribution score of the
    pooled features (retrain.decisions.ood), so an app needs no code of ours to use it."""

    def __init__(self, backbone, top_layer: TopLayer, final_tensor_name: str, ood: OodDetector | None = None):
        super().__init__(name="retrained_classifier")
        self.backbone = backbone.module
        # Attribute names are part of the SavedModel's object graph: kept as first exported.
        self.head_weights = tf.Variable(top_layer.weights, name="final_weights")
        self.head_bias = tf.Variable(top_layer.bias, name="final_biases")
        self.metadata_weights = None if top_layer.patient_weights is None else tf.Variable(
            top_layer.patient_weights, name="metadata_weights")
        self.ood_projection = None if ood is None else tf.Variable(ood.projection, name="ood_projection")
        self.ood_means = None if ood is None else tf.Variable(ood.means, name="ood_means")
        self.final_tensor_name = final_tensor_name
        size = backbone.input_size
        signature = [tf.TensorSpec([None, size, size, 3], tf.float32, name=INPUT_NAME)]
        if self.metadata_weights is not None:
            width = top_layer.patient_weights.shape[0]
            signature.append(tf.TensorSpec([None, width], tf.float32, name=PATIENT_INPUT))
        self.serve = tf.function(self._serve, input_signature=signature)
        self.serve_with_maps = tf.function(self._serve_with_maps, input_signature=signature) if backbone.has_feature_map else None
        self.serve_for_tflite = tf.function(self._serve_for_tflite, input_signature=signature)

    def _probabilities(self, features, metadata):
        logits = tf.matmul(features, self.head_weights) + self.head_bias
        if self.metadata_weights is not None:
            logits += tf.matmul(metadata, self.metadata_weights)
        return tf.nn.softmax(logits, name=self.final_tensor_name)

    def _outputs(self, features, metadata) -> dict:
        outputs = {self.final_tensor_name: self._probabilities(features, metadata)}
        if self.ood_projection is not None:
            projected = tf.matmul(tf.math.l2_normalize(features, axis=1, epsilon=1e-12), self.ood_projection)
            distances = tf.reduce_sum(tf.square(projected[:, None, :] - self.ood_means[None]), axis=2)
            size = float(self.ood_projection.shape[0])
            outputs[OOD_NAME] = tf.identity(tf.reduce_min(distances, axis=1) / size, name=OOD_NAME)
        return outputs

    def _serve(self, images, metadata=None):
        return self._outputs(self.backbone.features(images), metadata)

    def _serve_for_tflite(self, images, metadata=None):
        outputs = self._serve(images, metadata)
        if OOD_NAME in outputs:
            outputs[OOD_NAME] = tf.reshape(outputs[OOD_NAME], [-1, 1], name=OOD_NAME)
        return outputs

    def _serve_with_maps(self, images, metadata=None):
        """The patient metadata's share of each logit is the same at every place, so the maps are the
        image's evidence alone."""
        feature_map = self.backbone.feature_map(images)
        maps = tf.einsum("nhwf,fc->nhwc", feature_map, self.head_weights)
        return {**self._outputs(tf.reduce_mean(feature_map, axis=[1, 2]), metadata),
                MAPS_NAME: tf.identity(maps, name=MAPS_NAME)}


def model_card(backbone, labels: list[str], final_tensor_name: str) -> ModelCard:
    """The card's description of the model itself: how to feed it and read it."""
    return ModelCard(tuple(labels), INPUT_NAME, final_tensor_name, backbone.input_size,
                     architecture=backbone.config.name, backbone_identity=backbone.identity,
                     normalisation_in_model=backbone.config.preprocessing,
                     preprocessing_version=PREPROCESSING_VERSION,
                     class_activation_maps=MAPS_NAME if backbone.has_feature_map else None,
                     colour_constancy=COLOUR_CONSTANCY if backbone.config.colour_constancy else None)


def frozen_graph_def(classifier: ServingModel, card: ModelCard):
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    frozen = convert_variables_to_constants_v2((classifier.serve_with_maps or classifier.serve).get_concrete_function())
    graph_def = frozen.graph.as_graph_def()
    write_graph_card(graph_def, card)
    return graph_def


def _check_writable(path: Path, what: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"{what} {path}: cannot create its folder ({e.strerror or e})") from e


def export_frozen_graph(classifier: ServingModel, card: ModelCard, path: Path, flag: str = "ExportConfig.output_graph") -> None:
    """`flag` names the path in errors: intermediate graphs come from MonitorConfig.intermediate_graphs_dir."""
    path = Path(path).expanduser()
    _check_writable(path, flag)
    try:
        write_atomically(path, frozen_graph_def(classifier, card).SerializeToString())
    except OSError as e:
        raise UserError(f"{flag} {path}: cannot write ({e.strerror or e})") from e


def check_saved_model_dir(directory: Path) -> bool:
    """Whether `directory` holds an earlier SavedModel to replace; a non-empty folder that is
    not one is refused, so nothing the user keeps there is deleted."""
    if directory.is_dir() and any(directory.iterdir()):
        if not (directory / "saved_model.pb").exists():
            raise UserError(f"ExportConfig.saved_model_dir {directory}: exists and is not a SavedModel; choose an empty folder")
        return True
    return False


def export_saved_model(classifier: ServingModel, card: ModelCard, directory: Path) -> None:
    directory = Path(directory).expanduser()
    if check_saved_model_dir(directory):
        shutil.rmtree(directory)
    _check_writable(directory, "ExportConfig.saved_model_dir")
    signatures = {"serving_default": classifier.serve, TFLITE_SIGNATURE: classifier.serve_for_tflite}
    if classifier.serve_with_maps is not None:
        signatures[MAPS_NAME] = classifier.serve_with_maps
    tf.saved_model.save(classifier, str(directory), signatures=signatures)
    write_saved_model_card(directory, card)


def write_labels(path: Path, labels: list[str]) -> None:
    path = Path(path).expanduser()
    _check_writable(path, "ExportConfig.output_labels")
    try:
        write_atomically(path, "".join(f"{label}\n" for label in labels).encode())
    except OSError as e:
        raise UserError(f"ExportConfig.output_labels {path}: cannot write ({e.strerror or e})") from e

