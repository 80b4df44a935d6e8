"""What runs a backbone's forward pass when bottlenecks are extracted.

The backbone is defined once, in TensorFlow; for extraction its `features` function is
converted in memory to a float32 LiteRT model and run by LiteRT's XNNPACK kernels, one
image per call, one single-threaded interpreter per worker thread. Measured on a 2-core
CPU (`python -m benchmarks.bench`), that spends about 2.5x less CPU per image than
TensorFlow's own graph at any batch size; each worker decodes its image and then runs
the network on it, so decoding and the network never compete for cores with a separate
thread pool; and one image per call makes an image's features independent of which
images happen to share its batch, so a resumed run caches exactly the numbers an
uninterrupted run would. When LiteRT is not installed or a backbone does not convert,
TensorFlow runs batches on the main thread instead.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from typing import Callable

import numpy as np

from retrain.native_logs import native_logs_silenced

ENGINES = ("auto", "litert", "tensorflow")
TENSORFLOW_BATCH_SIZE = 32  # TF's throughput stops growing here on 2 cores
PROBE_TOLERANCE = 1e-3  # float32 LiteRT vs TensorFlow differ by ~1e-6 relative on EfficientNet-Lite0


class EngineUnavailable(RuntimeError):
    """The engine cannot run this backbone here; the message says why."""


@dataclass
class FeatureEngine:
    name: str  # "litert" or "tensorflow"
    run: Callable[[np.ndarray], np.ndarray]  # [N, size, size, 3] uint8 pixels -> [N, features] float32
    per_image: bool = False  # thread-safe and fastest one image per call: run it in the decoding workers
    note: str = ""  # why this engine was chosen, when it was not the first choice


def tensorflow_engine(backbone, batch_size: int = TENSORFLOW_BATCH_SIZE) -> FeatureEngine:
    import tensorflow as tf

    size = backbone.input_size
    features = tf.function(backbone.module.features, input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32)])

    def run(pixels: np.ndarray) -> np.ndarray:
        pixels = np.asarray(pixels, np.float32)
        out = np.zeros((len(pixels), backbone.feature_size), np.float32)
        for start in range(0, len(pixels), batch_size):
            out[start : start + batch_size] = features(pixels[start : start + batch_size]).numpy()
        return out

    return FeatureEngine("tensorflow", run)


_converted: dict[str, bytes] = {}  # backbone identity -> .tflite; identity names the weights exactly


def litert_model(backbone) -> bytes:
    """The backbone's `features` as a float32 .tflite flatbuffer for one uint8 image,
    converted once per process (a conversion costs seconds). Taking uint8 moves a quarter
    of the bytes into the interpreter and casts inside it, instead of in NumPy."""
    if backbone.identity not in _converted:
        _converted[backbone.identity] = _convert(backbone)
    return _converted[backbone.identity]


def _convert(backbone) -> bytes:
    import tensorflow as tf

    size = backbone.input_size
    function = tf.function(
        lambda images: backbone.module.features(tf.cast(images, tf.float32)),
        input_signature=[tf.TensorSpec([1, size, size, 3], tf.uint8)],
    )
    from tensorflow.lite.python.convert_phase import ConverterError

    trackable = backbone.module if isinstance(backbone.module, tf.Module) else None
    try:
        converter = tf.lite.TFLiteConverter.from_concrete_functions([function.get_concrete_function()], trackable)
        with native_logs_silenced():
            return converter.convert()
    except (ConverterError, ValueError, TypeError, tf.errors.OpError) as e:  # what an unconvertible model raises
        raise EngineUnavailable(f"{backbone.identity} does not convert to LiteRT ({_reason(e)})") from e


def _reason(error: Exception) -> str:
    """The error's type and the gist of its message, on one short line: the converter's own
    message leads with source locations, so its first `error: ...` is kept."""
    text = str(error)
    found = re.search(r"error: ([^\n]+)", text)
    gist = (found.group(1) if found else text.strip().split("\n")[0]).strip()
    return f"{type(error).__name__}: {gist[:160]}" if gist else type(error).__name__


def litert_engine(backbone, threads_per_interpreter: int = 1) -> FeatureEngine:
    """XNNPACK through LiteRT, one image per invoke, one interpreter per calling thread.
    One thread per interpreter: parallel images scale better than one image split over
    cores, and the CPU count of workers then fills the machine exactly."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as e:
        raise EngineUnavailable("the ai-edge-litert package is not installed") from e
    model = litert_model(backbone)
    local = threading.local()

    def interpreter():
        if not hasattr(local, "interpreter"):
            local.interpreter = Interpreter(model_content=model, num_threads=threads_per_interpreter)
            local.interpreter.allocate_tensors()
            local.input = local.interpreter.get_input_details()[0]["index"]
            local.output = local.interpreter.get_output_details()[0]["index"]
        return local

    try:
        with native_logs_silenced():  # the first interpreter announces its XNNPACK delegate
            interpreter()  # fail here, not in a worker, if the model does not load
    except (ValueError, RuntimeError) as e:
        raise EngineUnavailable(f"LiteRT cannot load the converted {backbone.identity} ({e})") from e

    def run(pixels: np.ndarray) -> np.ndarray:
        mine = interpreter()
        out = np.zeros((len(pixels), backbone.feature_size), np.float32)
        for row, image in enumerate(np.asarray(pixels, np.uint8)):
            mine.interpreter.set_tensor(mine.input, image[None])
            mine.interpreter.invoke()
            out[row] = mine.interpreter.get_tensor(mine.output)[0]
        return out

    engine = FeatureEngine("litert", run, per_image=True)
    _check_against_tensorflow(backbone, engine)
    return engine


def _check_against_tensorflow(backbone, engine: FeatureEngine) -> None:
    """A conversion can go wrong silently (NaN from some Keras models), and wrong features
    would be cached for good: compare one probe image with TensorFlow before any use."""
    size = backbone.input_size
    probe = np.random.default_rng(0).integers(0, 256, (1, size, size, 3), dtype=np.uint8)
    expected = np.asarray(backbone.module.features(probe.astype(np.float32)), np.float32)
    got = engine.run(probe)
    scale = max(1.0, float(np.abs(expected).max()))
    if not np.isfinite(got).all() or np.abs(got - expected).max() > PROBE_TOLERANCE * scale:
        raise EngineUnavailable(f"LiteRT features of {backbone.identity} differ from TensorFlow's")


def create_engine(backbone, engine: str = "auto") -> FeatureEngine:
    """`auto` is LiteRT when it can run the backbone, else TensorFlow."""
    if engine not in ENGINES:
        raise ValueError(f"unknown feature engine {engine!r}; one of {', '.join(ENGINES)}")
    if engine == "tensorflow":
        return tensorflow_engine(backbone)
    if engine == "litert":
        return litert_engine(backbone)
    try:
        return litert_engine(backbone)
    except EngineUnavailable as e:
        chosen = tensorflow_engine(backbone)
        chosen.note = f"LiteRT unavailable: {e}"
        return chosen
