"""Reading a SavedModel retrain wrote back into the parts it was made from: the backbone with
its (possibly fine-tuned) weights, the calibrated top layer, the out-of-distribution detector
and the model card. The int8 weight preparation and `ensemble` both start from these parts.

Only backbones that run stage by stage from their weights (EfficientNet-Lite) can be rebuilt
this way; the others are written as a traced graph that keeps no separate layers."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from retrain.backbones import Backbone, BackboneConfig, get_config, staged_network, supports_int8_preparation
from retrain.card.formats import MODEL_CARD_FILE, read_saved_model_card
from retrain.card.model_card import ModelCard
from retrain.decisions.ood import OodDetector
from retrain.errors import UserError
from retrain.train.top_layer import TopLayer


@dataclass(frozen=True)
class SavedParts:
    backbone: Backbone  # identity: the card's backbone_identity
    top_layer: TopLayer  # as exported: its logits already divided by the temperature
    ood: OodDetector | None
    card: ModelCard


def lite_config(card: ModelCard) -> BackboneConfig | None:
    """The registry entry of a model's backbone when it can be rebuilt from its weights here, else None."""
    try:
        config = get_config(card.architecture or "")
    except UserError:
        return None
    return config if supports_int8_preparation(config) else None


def saved_model_card(directory: Path, name: str) -> ModelCard:
    """The card of a SavedModel folder retrain wrote; `name` says where the path came from in errors."""
    directory = Path(directory).expanduser()
    if directory.is_file() and directory.suffix.lower() in (".pb", ".tflite"):
        raise UserError(f"{name} {directory}: a {directory.suffix} file; give the model's SavedModel folder "
                        "(the one retrain wrote with ExportConfig.saved_model_dir)")
    if not (directory / "saved_model.pb").is_file():
        raise UserError(f"{name} {directory}: not a SavedModel (no saved_model.pb)")
    card = read_saved_model_card(directory)
    if card is None:
        raise UserError(f"{name} {directory}: not written by retrain (no assets.extra/{MODEL_CARD_FILE})")
    return card


def read_saved_model(directory: Path, card: ModelCard, name: str = "saved_model_dir") -> SavedParts:
    """The parts of the SavedModel at `directory`, whose card is `card` (saved_model_model_card)."""
    import tensorflow as tf

    config = lite_config(card)
    if config is None:
        raise UserError(f"{name} {directory}: its backbone {card.architecture} cannot be rebuilt from its "
                        "weights (only EfficientNet-Lite backbones can)")
    config = dataclasses.replace(config, input_size=card.input_size, colour_constancy=card.colour_constancy is not None)
    try:
        loaded = tf.saved_model.load(str(Path(directory).expanduser()))
    except (ValueError, OSError, tf.errors.OpError) as e:
        raise UserError(f"{name} {directory}: cannot be read as a SavedModel ({str(e).splitlines()[0] if str(e) else e})") from e
    layers = getattr(getattr(loaded, "backbone", None), "layers", None)
    if layers is None or getattr(loaded, "head_weights", None) is None:
        raise UserError(f"{name} {directory}: a SavedModel without retrain's backbone layers and top layer")
    module = staged_network(config, {key: value.numpy() for key, value in layers.items()})
    patient_weights = getattr(loaded, "metadata_weights", None)  # the SavedModel's attribute names
    top_layer = TopLayer(loaded.head_weights.numpy(), loaded.head_bias.numpy(),
                         patient_weights=None if patient_weights is None else patient_weights.numpy())
    ood = None
    if getattr(loaded, "ood_projection", None) is not None:
        ood = OodDetector(loaded.ood_projection.numpy(), loaded.ood_means.numpy())
    return SavedParts(Backbone(config, card.backbone_identity, module), top_layer, ood, card)
