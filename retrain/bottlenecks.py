"""The bottleneck cache: backbone features computed once per image and kept on disk.

An entry is keyed by the backbone's identity, the preprocessing version and the
SHA-1 of the image file's bytes: renaming a file reuses its entry, replacing its
contents does not, and another backbone never sees these features. Entries are
written atomically and carry a CRC, so an interrupted run leaves nothing half
written and a damaged entry is recomputed, not read.
"""

from __future__ import annotations

import hashlib
import os
import struct
import zlib
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from retrain.errors import UserError
from retrain.images import PREPROCESSING_VERSION, ImageError, load_image

_MAGIC = b"RTBN"
_HEADER = struct.Struct("<4sI")  # magic, feature count
_TRAILER = struct.Struct("<I")  # CRC-32 of the float32 payload


@dataclass(frozen=True)
class BottleneckCache:
    root: Path  # one folder per backbone identity + preprocessing version
    feature_size: int

    def path_for(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.bn"

    def read(self, key: str) -> np.ndarray | None:
        """The cached vector, or None when absent, truncated or altered."""
        try:
            raw = self.path_for(key).read_bytes()
        except OSError:
            return None
        payload_size = 4 * self.feature_size
        if len(raw) != _HEADER.size + payload_size + _TRAILER.size:
            return None
        magic, count = _HEADER.unpack_from(raw)
        payload = raw[_HEADER.size : _HEADER.size + payload_size]
        (crc,) = _TRAILER.unpack_from(raw, _HEADER.size + payload_size)
        if magic != _MAGIC or count != self.feature_size or crc != zlib.crc32(payload):
            return None
        return np.frombuffer(payload, dtype="<f4").copy()

    def write(self, key: str, vector: np.ndarray) -> None:
        payload = np.ascontiguousarray(vector, dtype="<f4").tobytes()
        data = _HEADER.pack(_MAGIC, self.feature_size) + payload + _TRAILER.pack(zlib.crc32(payload))
        path = self.path_for(key)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except OSError as e:
            raise UserError(f"cannot write bottleneck cache entry {path}: {e.strerror or e}") from e
        finally:
            if tmp.exists():
                tmp.unlink()


def open_cache(bottleneck_dir: Path, backbone) -> BottleneckCache:
    namespace = f"{backbone.identity}-p{PREPROCESSING_VERSION}"
    return BottleneckCache(Path(bottleneck_dir).expanduser() / namespace, backbone.feature_size)


def content_key(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


@dataclass
class Extraction:
    """Features aligned with the paths asked for; rows of failed images are zero and not `ok`."""

    features: np.ndarray
    ok: np.ndarray
    failures: list[ImageError] = field(default_factory=list)
    computed: int = 0
    reused: int = 0


@dataclass
class _Prepared:
    index: int
    key: str
    vector: np.ndarray | None = None
    pixels: np.ndarray | None = None


def _prefetch(fn: Callable, items: Iterable, executor: ThreadPoolExecutor, ahead: int) -> Iterator:
    """Like executor.map, but never more than `ahead` items in flight, so memory stays flat."""
    pending: deque = deque()
    for item in items:
        pending.append(executor.submit(fn, item))
        if len(pending) >= ahead:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def compute_bottlenecks(
    paths: list[Path],
    backbone,
    cache: BottleneckCache,
    batch_size: int = 32,
    progress: Callable[[int], None] | None = None,
    workers: int = 2,
) -> Extraction:
    """Features for every path: from the cache where possible, else computed in batches
    while worker threads read, hash and decode the next images."""
    import tensorflow as tf

    size = backbone.input_size
    features_fn = tf.function(
        backbone.module.features, input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32)]
    )
    result = Extraction(np.zeros((len(paths), backbone.feature_size), np.float32), np.zeros(len(paths), bool))

    def prepare(index: int) -> _Prepared | ImageError:
        path = paths[index]
        try:
            data = path.read_bytes()
        except OSError as e:
            return ImageError(path, f"cannot read file ({e.strerror or e})")
        key = content_key(data)
        vector = cache.read(key)
        if vector is not None:
            return _Prepared(index, key, vector=vector)
        try:
            return _Prepared(index, key, pixels=load_image(path, size, data))
        except ImageError as e:
            return e

    batch: list[_Prepared] = []

    def run_batch():
        pixels = np.stack([item.pixels for item in batch]).astype(np.float32)
        vectors = features_fn(pixels).numpy()
        for item, vector in zip(batch, vectors):
            cache.write(item.key, vector)
            result.features[item.index] = vector
            result.ok[item.index] = True
        result.computed += len(batch)
        if progress:
            progress(len(batch))
        batch.clear()

    with ThreadPoolExecutor(max_workers=workers) as executor:
        try:
            for prepared in _prefetch(prepare, range(len(paths)), executor, ahead=2 * batch_size):
                if isinstance(prepared, ImageError):
                    result.failures.append(prepared)
                    if progress:
                        progress(1)
                elif prepared.vector is not None:
                    result.features[prepared.index] = prepared.vector
                    result.ok[prepared.index] = True
                    result.reused += 1
                    if progress:
                        progress(1)
                else:
                    batch.append(prepared)
                    if len(batch) == batch_size:
                        run_batch()
            if batch:
                run_batch()
        finally:
            executor.shutdown(wait=True, cancel_futures=True)
    return result
