"""Reading back a SavedModel retrain wrote: its backbone with the weights it holds (pretrained or
fine-tuned), its top layer, its out-of-distribution detector and its model card. The int8 weight
preparation (retrain.export.int8) and `ensemble` (retrain.api.ensemble) start from here.

Only backbones whose family can be rebuilt from its weights (retrain.backbones.staged_network:
EfficientNet-Lite) are read back; lite_config says which."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from retrain.backbones import Backbone, BackboneConfig, get_config, staged_network, supports_int8_preparation
from retrain.card.model_card import ModelCard
from retrain.decisions.ood import OodDetector
from retrain.errors import UserError
from retrain.train.top_layer import TopLayer


@dataclass(frozen=True)
class Retrained:
    backbone: Backbone
    top_layer: TopLayer  # as exported: calibrated where the model was
    ood: OodDetector | None
    card: ModelCard


def lite_config(card: ModelCard) -> BackboneConfig | None:
    """The registry entry of a model's backbone when it can be rebuilt from its weights, else None."""
    try:
        config = get_config(card.architecture or "")
    except UserError:
        return None
    return config if supports_int8_preparation(config) else None


def read_retrained(saved_model_dir: Path, card: ModelCard) -> Retrained:
    """The model in `saved_model_dir`, whose card is `card` and whose backbone lite_config accepts."""
    import tensorflow as tf

    config = dataclasses.replace(lite_config(card), input_size=card.input_size,
                                 colour_constancy=card.colour_constancy is not None)
    loaded = tf.saved_model.load(str(saved_model_dir))
    module = staged_network(config, {name: v.numpy() for name, v in loaded.backbone.layers.items()})
    patient_weights = getattr(loaded, "metadata_weights", None)  # the SavedModel's attribute names
    top_layer = TopLayer(loaded.head_weights.numpy(), loaded.head_bias.numpy(),
                         patient_weights=None if patient_weights is None else patient_weights.numpy())
    ood = None
    if getattr(loaded, "ood_projection", None) is not None:
        ood = OodDetector(loaded.ood_projection.numpy(), loaded.ood_means.numpy())
    return Retrained(Backbone(config, card.backbone_identity, module), top_layer, ood, card)
