"""Extraction scheduling: which images need the backbone, and who runs it.

Worker threads read, hash and decode images (and, with a per-image engine, run the
network too); the main thread batches the rest for TensorFlow and writes every cache
entry, in order, so an interrupted run leaves only whole entries behind.
"""

from __future__ import annotations

import functools
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from retrain.data.augmentation import DistortedCopy
from retrain.data.images import ImageError, load_image
from retrain.features.cache import BottleneckCache, content_key
from retrain.features.engines import FeatureEngine, create_engine
from retrain.workers import prefetch


@dataclass
class Extraction:
    """Features aligned with the paths asked for; rows of failed images are zero and not `ok`."""

    features: np.ndarray
    ok: np.ndarray
    failures: list[ImageError] = field(default_factory=list)
    computed: int = 0
    reused: int = 0
    engine: str = ""  # what ran the backbone; empty when nothing needed computing
    engine_note: str = ""


@dataclass
class _Prepared:
    index: int
    key: str
    vector: np.ndarray | None = None
    pixels: np.ndarray | None = None
    computed: bool = False  # `vector` is new, not read from the cache


def compute_bottlenecks(
    paths: list[Path],
    backbone,
    cache: BottleneckCache,
    batch_size: int = 32,
    progress: Callable[[int], None] | None = None,
    workers: int | None = None,
    engine="auto",
    distortions: list | None = None,
) -> Extraction:
    """Features for every path: from the cache where possible, else computed.

    Worker threads (one per CPU by default) read, hash and decode images; a per-image
    engine (LiteRT) then runs the network in the same worker, otherwise the main thread
    runs TensorFlow on batches. Either way the main thread writes the cache entries, in
    order. `engine` is a name from retrain.features.engines.ENGINES, built only when the
    first image needs computing (so a fully cached run never pays for it), or a FeatureEngine.
    `distortions`, aligned with `paths`, gives a DistortedCopy (or None) per item: its
    own cache key and pixels; a path may then appear once per copy."""
    result = Extraction(np.zeros((len(paths), backbone.feature_size), np.float32), np.zeros(len(paths), bool))
    current_engine = _engine_on_first_use(backbone, engine, result)
    prepare = functools.partial(_prepare, cache=cache, size=backbone.input_size, current_engine=current_engine)
    items = ((index, path, distortions[index] if distortions else None) for index, path in enumerate(paths))
    batch: list[_Prepared] = []
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 2) as executor:
        try:
            for prepared in prefetch(prepare, items, executor, ahead=2 * batch_size):
                if isinstance(prepared, ImageError) or prepared.vector is not None:
                    _record(prepared, cache, result, progress)
                    continue
                batch.append(prepared)
                if len(batch) == batch_size:
                    _run_batch(batch, current_engine(), cache, result, progress)
                    batch = []
            if batch:
                _run_batch(batch, current_engine(), cache, result, progress)
        finally:
            executor.shutdown(wait=True, cancel_futures=True)
    return result


def _engine_on_first_use(backbone, engine, result: Extraction) -> Callable[[], FeatureEngine]:
    """The engine, built by whichever thread first needs it (a lock, as workers ask at once);
    the result then names it."""
    built: list[FeatureEngine] = []
    lock = threading.Lock()

    def current_engine() -> FeatureEngine:
        with lock:
            if not built:
                built.append(create_engine(backbone, engine) if isinstance(engine, str) else engine)
                result.engine, result.engine_note = built[0].name, built[0].note
            return built[0]

    return current_engine


def _prepare(
    item: tuple[int, Path, DistortedCopy | None], cache: BottleneckCache, size: int,
    current_engine: Callable[[], FeatureEngine],
) -> _Prepared | ImageError:
    """In a worker: the cached vector, else the vector from a per-image engine, else the
    pixels for the main thread's next batch; or why the image cannot be used."""
    index, path, copy = item
    try:
        data = path.read_bytes()
    except OSError as e:
        return ImageError(path, f"cannot read file ({e.strerror or e})")
    content = content_key(data)
    key = copy.cache_key(content) if copy else content
    vector = cache.read(key)
    if vector is not None:
        return _Prepared(index, key, vector=vector)
    try:
        pixels = load_image(path, size, data, copy.draw_for(content) if copy else None)
    except ImageError as e:
        return e
    features = current_engine()
    if features.per_image:
        return _Prepared(index, key, vector=features.run(pixels[None])[0], computed=True)
    return _Prepared(index, key, pixels=pixels)


def _record(prepared: _Prepared | ImageError, cache: BottleneckCache, result: Extraction, progress) -> None:
    """One image that needs no batch: a failure, a vector a worker computed (cached here), or a cache hit."""
    if isinstance(prepared, ImageError):
        result.failures.append(prepared)
    else:
        if prepared.computed:
            cache.write(prepared.key, prepared.vector)
            result.computed += 1
        else:
            result.reused += 1
        result.features[prepared.index] = prepared.vector
        result.ok[prepared.index] = True
    if progress:
        progress(1)


def _run_batch(batch: list[_Prepared], engine: FeatureEngine, cache: BottleneckCache, result: Extraction, progress) -> None:
    """The backbone on one batch of decoded images, each vector cached as it is stored."""
    vectors = engine.run(np.stack([item.pixels for item in batch]))
    for item, vector in zip(batch, vectors):
        cache.write(item.key, vector)
        result.features[item.index] = vector
        result.ok[item.index] = True
    result.computed += len(batch)
    if progress:
        progress(len(batch))
