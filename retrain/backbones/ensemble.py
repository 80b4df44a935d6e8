"""Several backbones side by side as one, for an ensemble (retrain.api.ensemble): its features are
the members' features concatenated, each member computing its own from the same images with its
own weights, colour constancy and normalisation.

The ensemble is fed at its largest member's input size; a member made for a smaller size sees a
bilinear resize inside the graph, so every export and reader does the same. Where all members take
the same size, their feature maps are concatenated too, so the ensemble has heatmaps."""

from __future__ import annotations

import hashlib

import tensorflow as tf

from retrain.backbones.config import Backbone, BackboneConfig


class EnsembleModule(tf.Module):
    def __init__(self, members: list, sizes: list[int], input_size: int, with_maps: bool):
        super().__init__(name="ensemble")
        self.members = list(members)
        self.sizes = list(sizes)
        self.input_size = input_size
        if not with_maps:
            self.feature_map = None  # Backbone.has_feature_map: no heatmaps

    def _at(self, images, size: int):
        return images if size == self.input_size else tf.image.resize(images, [size, size], "bilinear")

    def features(self, images):
        return tf.concat([m.features(self._at(images, s)) for m, s in zip(self.members, self.sizes)], axis=1)

    def feature_map(self, images):
        return tf.concat([m.feature_map(images) for m in self.members], axis=3)


def ensemble_backbone(members: list[Backbone]) -> Backbone:
    """One backbone computing every member's features; its identity names the members exactly."""
    size = max(m.input_size for m in members)
    with_maps = len({m.input_size for m in members}) == 1 and all(m.has_feature_map for m in members)
    preprocessing = {m.config.preprocessing for m in members}
    config = BackboneConfig(
        name="ensemble", family="ensemble", input_size=size, feature_size=sum(m.feature_size for m in members),
        preprocessing=preprocessing.pop() if len(preprocessing) == 1 else "each member's own",
        weights="its members'", options=(("members", tuple(m.config.name for m in members)),))
    digest = hashlib.sha256("|".join(f"{m.identity}@{m.input_size}" for m in members).encode()).hexdigest()[:16]
    module = EnsembleModule([m.module for m in members], [m.input_size for m in members], size, with_maps)
    return Backbone(config, f"ensemble-{digest}", module)
