"""Putting an EfficientNet-Lite classifier's weights on TFLite's int8 grid ourselves, with
calibration images, before the dynamic and int8 conversions. Any backbone family whose network
runs stage by stage (retrain.backbones.supports_int8_preparation) can be prepared this way.

Rounding this backbone's kernels to the nearest int8 step, as the converter does, moves its
1280 features by 10-13 % (relative L2, on ISIC images): enough to flip 3-4 % of a
low-margin lesion model's predictions. Two standard post-training fixes, done layer by
layer in network order with the quantized network running beside the float one:

- GPTQ rounding (Frantar et al., 2022): each weight is rounded in turn and its rounding
  error is pushed onto the weights not yet rounded, weighted by the layer's input second
  moments, so the layer's output moves as little as possible on the calibration images;
- empirical bias correction (Nagel et al., 2019): each bias absorbs the mean output shift
  that remains.

Every kernel stays on the symmetric per-channel grid the converter would use (scale =
max |w| / 127, with that largest weight kept), so the converter keeps our integers exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from retrain.card.model_card import ModelCard
from retrain.backbones import Backbone, staged_network
from retrain.export.saved_model_reading import read_saved_model

# The dynamic-range quantizer leaves weight tensors smaller than this in float
# (TFLite's weights_min_num_elements default).
DYNAMIC_RANGE_MIN_ELEMENTS = 1024
PREPARED_QUANTIZATIONS = ("dynamic", "int8")
HESSIAN_DAMPING = 0.01  # GPTQ's default: a fraction of the mean diagonal, for dead or collinear inputs


@dataclass(frozen=True)
class Int8Ready:
    layers: dict[str, np.ndarray]  # the module's layers: kernels on the int8 grid, biases corrected
    images: int  # calibration images the rounding and the corrections were measured on


def converter_quantizes(kernel: np.ndarray, quantization: str) -> bool:
    return quantization == "int8" or kernel.size >= DYNAMIC_RANGE_MIN_ELEMENTS


def _as_rows(kernel: np.ndarray, depthwise: bool) -> np.ndarray:
    """[output channels, weights feeding each]: (k, k, in, out) -> (out, k*k*in); depthwise (k, k, C, 1) -> (C, k*k)."""
    if depthwise:
        return kernel[:, :, :, 0].reshape(-1, kernel.shape[2]).T.astype(np.float64)
    return kernel.reshape(-1, kernel.shape[-1]).T.astype(np.float64)


def _from_rows(rows: np.ndarray, shape: tuple, depthwise: bool) -> np.ndarray:
    if depthwise:
        return rows.T.reshape(shape[0], shape[1], shape[2], 1).astype(np.float32)
    return rows.T.reshape(shape).astype(np.float32)


def _scales(rows: np.ndarray) -> np.ndarray:
    scale = np.abs(rows).max(axis=1) / 127.0
    scale[scale == 0] = 1.0
    return scale


def int8_grid(kernel: np.ndarray, depthwise: bool) -> np.ndarray:
    """Round to nearest on TFLite's per-channel grid: what the converter does by itself."""
    rows = _as_rows(kernel, depthwise)
    scale = _scales(rows)[:, None]
    return _from_rows(np.round(rows / scale) * scale, kernel.shape, depthwise)


def gptq_grid(kernel: np.ndarray, depthwise: bool, second_moments: np.ndarray) -> np.ndarray:
    """The kernel on int8_grid's grid, rounded weight by weight with GPTQ. `second_moments` is
    the inputs' X^T X: one [k*k*in, k*k*in] matrix, or for depthwise one [k*k, k*k] per channel."""
    rows = _as_rows(kernel, depthwise)
    count, width = rows.shape
    scale = _scales(rows)
    largest = np.abs(rows).argmax(axis=1)
    largest_sign = np.sign(rows[np.arange(count), largest])
    hessians = np.array(second_moments, dtype=np.float64).reshape(-1, width, width)
    diagonal = np.arange(width)
    hessians[:, diagonal, diagonal] += HESSIAN_DAMPING * hessians[:, diagonal, diagonal].mean(axis=1, keepdims=True) + 1e-12
    # Upper Cholesky factor of the inverse, as in the GPTQ paper; shared by all rows unless depthwise.
    upper = np.broadcast_to(np.linalg.cholesky(np.linalg.inv(hessians)).transpose(0, 2, 1), (count, width, width))
    steps = np.zeros_like(rows)
    row_index = np.arange(count)
    for i in range(width):
        step = np.clip(np.round(rows[:, i] / scale), -127, 127)
        # Each channel's largest weight stays at +/-127 steps so the converter derives the same scale.
        steps[:, i] = np.where(largest == i, 127 * largest_sign, step)
        error = (rows[:, i] - steps[:, i] * scale) / upper[row_index, i, i]
        rows[:, i + 1:] -= error[:, None] * upper[row_index, i, i + 1:]
    return _from_rows(steps * scale[:, None], kernel.shape, depthwise)


def _quantize_per_image(x):
    """What a dynamic-range kernel does to its input at run time: each image's activations
    are quantized to int8 over their own range (which always includes 0)."""
    low = tf.minimum(tf.reduce_min(x, axis=[1, 2, 3], keepdims=True), 0.0)
    high = tf.maximum(tf.reduce_max(x, axis=[1, 2, 3], keepdims=True), 0.0)
    scale = tf.maximum((high - low) / 255.0, 1e-12)
    zero_point = tf.round(-low / scale) - 128.0
    return (tf.clip_by_value(tf.round(x / scale) + zero_point, -128.0, 127.0) - zero_point) * scale


def _patches(x, kernel_size: int, stride: int, depthwise: bool):
    """The conv's input patches: [positions, k*k*in], or [positions, k*k, C] when depthwise."""
    if kernel_size != 1 or stride != 1:
        x = tf.image.extract_patches(x, [1, kernel_size, kernel_size, 1], [1, stride, stride, 1], [1, 1, 1, 1], "SAME")
    patches = tf.reshape(x, [-1, x.shape[-1]])
    if depthwise:
        patches = tf.reshape(patches, [tf.shape(patches)[0], kernel_size * kernel_size, -1])
    return patches


def _second_moments(x, kernel_size: int, stride: int, depthwise: bool) -> np.ndarray:
    """X^T X of the conv's input patches in this batch (per channel when depthwise)."""
    patches = _patches(x, kernel_size, stride, depthwise)
    if depthwise:
        return tf.einsum("pkc,plc->ckl", patches, patches).numpy().astype(np.float64)
    return tf.matmul(patches, patches, transpose_a=True).numpy().astype(np.float64)


class _Measured(Exception):
    """Stops a stage once the layer being measured has run: the layers after it are not needed."""


def int8_ready_layers(module, images: list[np.ndarray], quantization: str, chunk_size: int = 16) -> Int8Ready:
    """`module` is a staged network (retrain.backbones.staged_network).

    The quantized network and the float one run side by side, stacked in one batch
    (quantized half first), stage by stage. Within a stage each layer is rounded and then
    bias-corrected before the next is measured, so each sees the corrected layers before it."""
    if quantization not in PREPARED_QUANTIZATIONS:
        raise ValueError(f"int8 weight preparation is for {PREPARED_QUANTIZATIONS}, not {quantization!r}")
    reference = {name: variable.numpy() for name, variable in module.layers.items()}
    prepared = dict(reference)
    measuring: dict = {"layer": None}

    def side_by_side_conv(x, name, stride=1, depthwise=False):
        quantized, floating = tf.split(x, 2)
        kernel, bias = reference[f"{name}_kernel"], f"{name}_bias"
        if quantization == "dynamic" and converter_quantizes(kernel, quantization):
            quantized = _quantize_per_image(quantized)
        if name == measuring["layer"] and measuring["what"] == "second_moments":
            measuring["total"] = measuring["total"] + _second_moments(quantized, kernel.shape[0], stride, depthwise)
            raise _Measured
        quantized = module.conv_layer(quantized, prepared[f"{name}_kernel"], prepared[bias], stride, depthwise)
        floating = module.conv_layer(floating, kernel, reference[bias], stride, depthwise)
        if name == measuring["layer"]:
            measuring["total"] = measuring["total"] + tf.reduce_sum(quantized - floating, axis=[0, 1, 2]).numpy().astype(np.float64)
            measuring["count"] += int(np.prod(quantized.shape[:3]))
            raise _Measured
        return tf.concat([quantized, floating], axis=0)

    def measure(stage: int, activations: list, layer: str, what: str):
        measuring.update(layer=layer, what=what, total=0.0, count=0)
        for x in activations:
            try:
                module.stage(x, stage, side_by_side_conv)
            except _Measured:
                pass
        measuring["layer"] = None
        return measuring["total"], measuring["count"]

    batches = [np.stack(images[i:i + chunk_size]).astype(np.float32) for i in range(0, len(images), chunk_size)]
    activations = [tf.constant(np.concatenate([batch, batch])) for batch in batches]
    for stage in range(module.stage_count):
        for name, _, depthwise in module.stage_layers(stage):
            kernel = reference[f"{name}_kernel"]
            if converter_quantizes(kernel, quantization):
                moments, _ = measure(stage, activations, name, "second_moments")
                prepared[f"{name}_kernel"] = gptq_grid(kernel, depthwise, moments)
            shift, count = measure(stage, activations, name, "output_shift")
            prepared[f"{name}_bias"] = (reference[f"{name}_bias"] - shift / count).astype(np.float32)
        activations = [module.stage(x, stage, side_by_side_conv) for x in activations]
    return Int8Ready(layers=prepared, images=len(images))


def write_int8_ready_saved_model(
    saved_model_dir: Path, card: ModelCard, images: list[np.ndarray], quantization: str, destination: Path
) -> Int8Ready:
    """A copy of retrain's SavedModel (of a backbone lite_config accepts) with int8-ready weights.
    The layers are read from the SavedModel itself, so fine-tuned weights are kept."""
    from retrain.export.graph import ServingModel, export_saved_model

    parts = read_saved_model(saved_model_dir, card)
    config = parts.backbone.config
    ready = int8_ready_layers(parts.backbone.module, images, quantization)
    backbone = Backbone(config, card.backbone_identity, staged_network(config, ready.layers))
    export_saved_model(ServingModel(backbone, parts.top_layer, card.output_name, parts.ood), card, destination)
    return ready
