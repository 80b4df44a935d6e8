"""Several backbones side by side as one: the features of an ensemble of retrain models.

`retrain.api.ensemble` puts its members' backbones here, so the ensemble is an ordinary retrain
model (a linear top layer over these features) and every export, reader and heatmap works on
it unchanged. The ensemble is fed at the largest member's input size; a member with a smaller
one sees the image bilinearly resized inside the graph (what label_image would have done to it,
up to the resize of an already resized image)."""

from __future__ import annotations

import hashlib

import tensorflow as tf

from retrain.backbones.config import Backbone, BackboneConfig
from retrain.errors import UserError

NAME = "ensemble"


class EnsembleNetwork(tf.Module):
    """`features` is the members' features concatenated, in member order."""

    def __init__(self, members: list, sizes: list[int], input_size: int):
        super().__init__(name=NAME)
        self.members = members  # the members' modules
        self.sizes = sizes
        self.input_size = input_size

    def _member_images(self, images, size: int):
        if size == self.input_size:
            return images
        return tf.image.resize(images, [size, size], "bilinear")

    def features(self, images):
        return tf.concat([member.features(self._member_images(images, size))
                          for member, size in zip(self.members, self.sizes)], axis=1)


class EnsembleNetworkWithMaps(EnsembleNetwork):
    """Members of one input size: their last feature maps line up, concatenated along channels."""

    def feature_map(self, images):
        return tf.concat([member.feature_map(images) for member in self.members], axis=3)


def ensemble_backbone(members: list[Backbone]) -> Backbone:
    """One backbone computing every member's features; its identity names the members' exactly."""
    preprocessing = {member.config.preprocessing for member in members}
    if len(preprocessing) != 1:
        raise UserError(f"the ensemble's members normalise their pixels differently: {', '.join(sorted(preprocessing))}")
    sizes = [member.input_size for member in members]
    size = max(sizes)
    with_maps = len(set(sizes)) == 1 and all(member.has_feature_map for member in members)
    network = EnsembleNetworkWithMaps if with_maps else EnsembleNetwork
    module = network([member.module for member in members], sizes, size)
    config = BackboneConfig(name=NAME, family=NAME, input_size=size,
                            feature_size=sum(member.feature_size for member in members),
                            preprocessing=preprocessing.pop(), weights="the members' SavedModels")
    described = "|".join(f"{member.identity}@{member.input_size}" for member in members)
    return Backbone(config, f"{NAME}-{hashlib.sha256(described.encode()).hexdigest()[:12]}", module)
