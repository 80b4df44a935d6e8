"""Inception V3, MobileNet v1/v2/v3 and ResNet-50 from Keras applications (Keras 3).

Each is built without its classifier and average-pooled, and its own preprocessing
runs inside the module, so the bottleneck cache and every export see pixels in
[0, 255] like the other backbones. ImageNet weights are Keras' no-top .h5 files:
one already in BackboneChoice.model_dir is used as is (offline users put it there); otherwise
Keras' normal download-and-cache (~/.keras/models, or $KERAS_HOME/models) is tried.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import secrets
from pathlib import Path

import tensorflow as tf

from retrain.backbones.colour import shades_of_gray
from retrain.backbones.config import Backbone, BackboneConfig
from retrain.errors import UserError
from retrain.paths import file_digest

# Keras' caffe-mode ImageNet channel means, in BGR order.
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


def preprocess(images, mode: str):
    """Keras' preprocess_input for each mode, written in TF ops for [0, 255] RGB input."""
    if mode == "tf":
        return images / 127.5 - 1.0
    if mode == "caffe":
        return images[..., ::-1] - tf.constant(CAFFE_MEAN_BGR, images.dtype)
    if mode == "in_model":
        return images
    raise ValueError(f"unknown preprocessing mode {mode!r}")


class KerasBackbone(tf.Module):
    def __init__(self, model, mode: str, name: str, colour_constancy: bool = False):
        import keras

        super().__init__(name=re.sub(r"\W", "_", name))
        self.model = model
        self.mode = mode
        self.colour_constancy = colour_constancy
        # A Keras 3 model is invisible to tf.Module's variable tracking; without this list a
        # SavedModel-based conversion (LiteRT, TFLite) would lose the weights and give NaN.
        self.keras_variables = [weight.value for weight in model.weights]
        # The same layers up to the global average pooling (build_model's last layer), for heatmaps.
        self.map_model = keras.Model(model.inputs, model.layers[-1].input)

    def preprocess(self, images):
        return preprocess(shades_of_gray(images) if self.colour_constancy else images, self.mode)

    def features(self, images):
        return self.model(self.preprocess(images), training=False)

    def feature_map(self, images):
        return self.map_model(self.preprocess(images), training=False)

    def unfreeze(self, layers: int | str) -> list:
        """Make the last `layers` layers that have weights ("all": every one) trainable, batch
        norm excepted: it stays frozen, in inference mode, as `features` always calls it."""
        import keras

        weighted = [layer for layer in self.model.layers
                    if layer.weights and not isinstance(layer, keras.layers.BatchNormalization)]
        if layers != "all" and int(layers) > len(weighted):
            raise UserError(f"FineTuneConfig.layers {layers}: {self.name} has {len(weighted)} layers with weights "
                            "(batch norm not counted)")
        chosen = weighted if layers == "all" else weighted[len(weighted) - int(layers):]
        for layer in self.model.layers:
            layer.trainable = any(layer is c for c in chosen)
        return [weight.value for layer in chosen for weight in layer.trainable_weights]

    def tuning_features(self, images):
        return self.features(images)


def keras_home() -> Path:
    """Keras' cache root, read when needed (Keras itself reads $KERAS_HOME once, at import)."""
    return Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras").expanduser()


def keras_cache_file(weights_file: str) -> Path:
    """Where Keras' get_file keeps a downloaded application weights file."""
    return keras_home() / "models" / weights_file


def weights_available(config: BackboneConfig, model_dir: Path) -> bool:
    weights_file = dict(config.options)["weights_file"]
    return (model_dir / weights_file).is_file() or keras_cache_file(weights_file).is_file()


def find_weights_file(config: BackboneConfig, model_dir: Path) -> Path:
    """The weights file in model_dir, else Keras' cached or freshly downloaded copy."""
    import keras

    options = dict(config.options)
    weights_file, url = options["weights_file"], options["weights_url"]
    local = model_dir / weights_file
    if local.is_file():
        return local
    try:
        # Keras prints download chatter on stdout, which belongs to retrain's own report.
        with contextlib.redirect_stdout(io.StringIO()):
            return Path(keras.utils.get_file(weights_file, url, cache_subdir="models", cache_dir=str(keras_home())))
    except Exception as e:  # get_file raises bare Exception for network failures
        # Keras' message repeats the URL, then " -- " and the reason.
        reason = str(e).splitlines()[0].rsplit(" -- ", 1)[-1] if str(e) else type(e).__name__
        raise UserError(
            f"{config.name} needs its ImageNet weights file {weights_file}: not in BackboneChoice.model_dir {model_dir} "
            f"and the download from {url} failed ({reason}); put the file in {model_dir}"
        ) from e


def build_model(config: BackboneConfig):
    """The Keras application without top and with global average pooling, random weights."""
    import keras

    options = dict(config.options)
    application = getattr(keras.applications, options["application"])
    settings = {"alpha": options["alpha"]} if "alpha" in options else {}
    size = config.input_size
    return application(input_shape=(size, size, 3), include_top=False, weights=None, pooling="avg", **settings)


def build(config: BackboneConfig, model_dir: Path, random_weights: bool = False) -> Backbone:
    mode = dict(config.options)["mode"]
    if random_weights:
        module = KerasBackbone(build_model(config), mode, config.name, config.colour_constancy)
        return Backbone(config=config, identity=f"{config.name}-random-{secrets.token_hex(6)}", module=module)
    weights_path = find_weights_file(config, model_dir)
    model = build_model(config)
    try:
        model.load_weights(str(weights_path))
    except Exception as e:  # h5py and Keras raise many types for a wrong or damaged file
        raise UserError(f"{weights_path}: not the no-top ImageNet weights of {config.name} ({type(e).__name__})") from e
    module = KerasBackbone(model, mode, config.name, config.colour_constancy)
    return Backbone(config=config, identity=f"{config.name}-{file_digest(weights_path)}", module=module)
