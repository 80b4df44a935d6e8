"""What a backbone is: its registry entry and, once built, the module that computes its features.
Kept apart from the registry so the family modules import it without importing the registry."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class BackboneConfig:
    name: str
    family: str  # module in retrain.backbones that builds it
    input_size: int
    feature_size: int
    preprocessing: str  # how pixels in [0, 255] are normalised, inside the model
    weights: str  # where the pretrained weights come from
    options: tuple[tuple[str, Any], ...] = ()  # family-specific settings
    colour_constancy: bool = False  # Shades of Gray first, before `preprocessing` (retrain.backbones.colour)


@dataclass
class Backbone:
    """A built backbone: `module.features(images)` maps [N, size, size, 3] float32 pixels
    in [0, 255] to [N, feature_size] (the config's colour constancy first, where set);
    `module.imagenet_logits` gives the stock 1000-class scores where the weights include that head.
    `module.feature_map(images)`, where the family has it, is the [N, h, w, feature_size] map whose
    spatial mean is `features`: what class activation maps (heatmaps) are made of."""

    config: BackboneConfig
    identity: str  # names architecture + weights exactly; part of every bottleneck cache key
    module: Any  # a tf.Module

    @property
    def input_size(self) -> int:
        return self.config.input_size

    @property
    def feature_size(self) -> int:
        return self.config.feature_size

    @property
    def has_feature_map(self) -> bool:
        return callable(getattr(self.module, "feature_map", None))
