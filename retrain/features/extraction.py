"""Extraction scheduling: which images need the backbone, and who runs it.

The cache is read in one sweep first. Worker threads then look each image up: a file whose
recorded stat still holds is not read at all; otherwise it is read once, and its bytes give
the content key, the copy fingerprints (retrain.data.duplicates) and, when not cached, the
pixels (and, with a per-image engine, the features too). The main thread batches the rest
for TensorFlow and writes every cache record, in order, so an interrupted run leaves only
whole entries behind.
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
from retrain.data.duplicates import fingerprint_of
from retrain.data.images import ImageError, load_image
from retrain.features.cache import BottleneckCache, CacheIndex, FileStat, content_key
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
    fingerprints: dict = field(default_factory=dict)  # path -> copy fingerprint, for plain images read or cached
    files_read: int = 0  # image files opened (a current cache entry needs none)


@dataclass
class _Prepared:
    index: int
    key: str
    vector: np.ndarray | None = None
    pixels: np.ndarray | None = None
    computed: bool = False  # `vector` is new, not read from the cache
    fingerprint: tuple | None = None  # (SHA-1, pHash, colour, detailed) of a plain image
    new_fingerprint: bool = False  # to be cached
    stat: tuple[str, FileStat, str] | None = None  # a settled file's path and stat, to be cached with its SHA-1
    read: bool = False


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
    index = cache.index()
    prepare = functools.partial(_prepare, index=index, size=backbone.input_size, current_engine=current_engine)
    items = ((i, path, distortions[i] if distortions else None) for i, path in enumerate(paths))
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
            cache.flush()
    result.fingerprints = {paths[i]: print_ for i, print_ in result.fingerprints.items()}
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
    item: tuple[int, Path, DistortedCopy | None], index: CacheIndex, size: int,
    current_engine: Callable[[], FeatureEngine],
) -> _Prepared | ImageError:
    """In a worker: the cached vector, else the vector from a per-image engine, else the
    pixels for the main thread's next batch; or why the image cannot be used. The file is
    read only when its stat no longer matches, or something it gives is not cached."""
    position, path, copy = item
    try:
        where, stat = os.path.abspath(path), FileStat.of(os.stat(path))
        content = index.content_key(where, stat)
        data = None if content else path.read_bytes()
    except OSError as e:
        return ImageError(path, f"cannot read file ({e.strerror or e})")
    prepared = _Prepared(position, "", read=data is not None)
    if content is None:
        content = content_key(data)
        prepared.stat = (where, stat, content) if stat.settled() else None
    prepared.key = copy.cache_key(content) if copy else content
    prepared.vector = index.vector(prepared.key)
    if copy is None:
        prepared.fingerprint = _cached_fingerprint(index, content)
        if prepared.fingerprint is None:
            data, prepared.read = data or _read(path), True
            if isinstance(data, ImageError):
                return data
            prepared.fingerprint, prepared.new_fingerprint = fingerprint_of(path, content, data), True
    if prepared.vector is not None:
        return prepared
    data, prepared.read = data or _read(path), True
    if isinstance(data, ImageError):
        return data
    try:
        pixels = load_image(path, size, data, copy.draw_for(content) if copy else None)
    except ImageError as e:
        return e
    features = current_engine()
    if features.per_image:
        prepared.vector, prepared.computed = features.run(pixels[None])[0], True
    else:
        prepared.pixels = pixels
    return prepared


def _read(path: Path) -> bytes | ImageError:
    try:
        return path.read_bytes()
    except OSError as e:
        return ImageError(path, f"cannot read file ({e.strerror or e})")


def _cached_fingerprint(index: CacheIndex, sha1: str) -> tuple | None:
    known = index.fingerprints.get(sha1)
    return None if known is None else (sha1, *known)


def _record(prepared: _Prepared | ImageError, cache: BottleneckCache, result: Extraction, progress) -> None:
    """One image that needs no batch: a failure, a vector a worker computed (cached here), or a cache hit."""
    if isinstance(prepared, ImageError):
        result.failures.append(prepared)
    else:
        _remember(prepared, cache, result)
        if prepared.computed:
            cache.write(prepared.key, prepared.vector)
            result.computed += 1
        else:
            result.reused += 1
        result.features[prepared.index] = prepared.vector
        result.ok[prepared.index] = True
    if progress:
        progress(1)


def _remember(prepared: _Prepared, cache: BottleneckCache, result: Extraction) -> None:
    """What a worker learnt of an image besides its features, cached (with the next entry
    written, or at the end) and kept for the copy check."""
    result.files_read += prepared.read
    if prepared.stat is not None:
        cache.write_stat(*prepared.stat)
    if prepared.fingerprint is not None:
        if prepared.new_fingerprint:
            cache.write_fingerprint(*prepared.fingerprint)
        result.fingerprints[prepared.index] = prepared.fingerprint


def _run_batch(batch: list[_Prepared], engine: FeatureEngine, cache: BottleneckCache, result: Extraction, progress) -> None:
    """The backbone on one batch of decoded images, each vector cached as it is stored."""
    vectors = engine.run(np.stack([item.pixels for item in batch]))
    for item, vector in zip(batch, vectors):
        _remember(item, cache, result)
        cache.write(item.key, vector)
        result.features[item.index] = vector
        result.ok[item.index] = True
    result.computed += len(batch)
    if progress:
        progress(len(batch))
