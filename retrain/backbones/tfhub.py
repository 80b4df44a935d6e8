"""Any TF Hub image feature-vector module (TF2 SavedModel) as a backbone.

The handle is a TF Hub URL, downloaded and cached by tensorflow_hub (which honours
$TFHUB_CACHE_DIR), or a local folder holding the SavedModel. TF Hub's image
convention is float pixels in [0, 1], so the module divides by 255 inside; the
input size comes from the module's signature, or from BackboneChoice.image_size when the module
accepts any size.
"""

from __future__ import annotations

import hashlib
import re
import tarfile
from pathlib import Path

import tensorflow as tf
from google.protobuf.message import DecodeError

from retrain.backbones.colour import IDENTITY_SUFFIX, shades_of_gray
from retrain.backbones.config import Backbone, BackboneConfig
from retrain.errors import UserError

FIELD = "BackboneChoice.tfhub_module"
# What a bad handle or module raises; anything else is a bug and keeps its traceback.
DOWNLOAD_ERRORS = (OSError, ValueError, tarfile.TarError, tf.errors.OpError)  # urllib/HTTP are OSErrors
LOAD_ERRORS = (OSError, ValueError, KeyError, DecodeError, tf.errors.OpError)  # a damaged SavedModel
CALL_ERRORS = (ValueError, TypeError, tf.errors.OpError)  # another calling convention or input shape


def is_url(handle: str) -> bool:
    return re.match(r"^[a-z][a-z0-9+.-]*://", handle, re.IGNORECASE) is not None


def resolve(handle: str) -> Path:
    """The local SavedModel folder for the handle, downloading it first for a URL."""
    if is_url(handle):
        import tensorflow_hub as hub

        try:
            return Path(hub.resolve(handle))
        except DOWNLOAD_ERRORS as e:
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise UserError(f"{FIELD} {handle}: cannot download the module ({reason}); it needs the network") from e
    folder = Path(handle).expanduser()
    if not folder.is_dir():
        raise UserError(f"{FIELD} {handle}: no such folder, and not a URL")
    if not (folder / "saved_model.pb").is_file():
        raise UserError(f"{FIELD} {handle}: not a TF2 SavedModel folder (no saved_model.pb)")
    return folder.resolve()


def module_digest(folder: Path) -> str:
    """Digest of the graph and the variables index: changes whenever the module's weights do."""
    h = hashlib.sha256()
    for name in ("saved_model.pb", "variables/variables.index"):
        path = folder / name
        if path.is_file():
            h.update(path.read_bytes())
    return h.hexdigest()[:12]


def cache_identity(handle: str, folder: Path, input_size: int) -> str:
    """Readable, filesystem-safe identity naming the resolved handle (by hash), its contents and
    the input size: a module that takes any size gives other features at another BackboneChoice.image_size."""
    resolved = handle.rstrip("/") if is_url(handle) else str(folder)
    tail = "/".join(resolved.split("/")[-3:]) if is_url(handle) else folder.name
    readable = re.sub(r"[^A-Za-z0-9]+", "_", tail).strip("_")[:60]
    handle_hash = hashlib.sha256(resolved.encode()).hexdigest()[:8]
    return f"tfhub-{readable}-{handle_hash}-{module_digest(folder)}-{input_size}px"


def declared_input_size(loaded, handle: str) -> int | None:
    """The square image size fixed by the module's call signature, or None when it takes any size."""
    functions = getattr(getattr(loaded, "__call__", None), "concrete_functions", None) or []
    for function in functions:
        args = function.structured_input_signature[0]
        if args and isinstance(args[0], tf.TensorSpec) and args[0].shape.rank == 4:
            height, width = args[0].shape[1], args[0].shape[2]
            if height is None or width is None:
                return None
            if height != width:
                raise UserError(f"{FIELD} {handle}: input is {height}x{width}; only square inputs are supported")
            return int(height)
    return None


class HubFeatureVector(tf.Module):
    def __init__(self, loaded, name: str = "tfhub_module", colour_constancy: bool = False):
        super().__init__(name=name)
        self.loaded = loaded
        self.colour_constancy = colour_constancy

    def features(self, images):
        return self.loaded((shades_of_gray(images) if self.colour_constancy else images) / 255.0)

    def unfreeze(self, layers: int | str) -> list:
        """A module is tuned whole: its layers are not addressable one by one."""
        if layers != "all":
            raise UserError(f"FineTuneConfig.layers {layers}: a TF Hub module can only be fine-tuned whole; "
                            "use FineTuneConfig.layers all")
        variables = list(getattr(self.loaded, "trainable_variables", []))
        if not variables:
            raise UserError(f"{FIELD}: the module has no trainable variables, so it cannot be fine-tuned")
        return variables

    def tuning_features(self, images):
        return self.features(images)


def build(handle: str, image_size: int | None = None, colour_constancy: bool = False) -> Backbone:
    folder = resolve(handle)
    try:
        loaded = tf.saved_model.load(str(folder))
    except LOAD_ERRORS as e:
        raise UserError(f"{FIELD} {handle}: cannot load the SavedModel ({type(e).__name__})") from e
    if not callable(loaded):
        raise UserError(f"{FIELD} {handle}: not a TF2 image feature-vector module (the SavedModel is not callable)")
    declared = declared_input_size(loaded, handle)
    if declared and image_size and declared != image_size:
        raise UserError(f"BackboneChoice.image_size {image_size}: the module {handle} takes {declared}x{declared} images")
    size = declared or image_size
    if not size:
        raise UserError(f"{FIELD} {handle}: the module accepts any image size; choose one with BackboneChoice.image_size")
    module = HubFeatureVector(loaded, colour_constancy=colour_constancy)
    try:
        probe = module.features(tf.zeros([1, size, size, 3]))
    except CALL_ERRORS as e:
        raise UserError(f"{FIELD} {handle}: calling it on a [1, {size}, {size}, 3] image failed ({type(e).__name__})") from e
    if not isinstance(probe, tf.Tensor) or probe.shape.rank != 2:
        raise UserError(f"{FIELD} {handle}: not an image feature-vector module (output is not [batch, features])")
    config = BackboneConfig(
        name="tfhub_module",
        family="tfhub",
        input_size=size,
        feature_size=int(probe.shape[1]),
        preprocessing="x / 255 (TF Hub image convention)",
        weights=handle,
        colour_constancy=colour_constancy,
    )
    identity = cache_identity(handle, folder, size) + (IDENTITY_SUFFIX if colour_constancy else "")
    return Backbone(config=config, identity=identity, module=module)
