"""The bottleneck cache: backbone features computed once per image and kept on disk.

An entry is keyed by the backbone's identity, the preprocessing version and the
SHA-1 of the image file's bytes: renaming a file reuses its entry, replacing its
contents does not, and another backbone never sees these features. Entries are
written atomically and carry a CRC, so an interrupted run leaves nothing half
written and a damaged entry is recomputed, not read. A distorted training copy
(retrain.data.augmentation) is keyed by the same content key plus its settings and index.
"""

from __future__ import annotations

import hashlib
import os
import struct
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from retrain.data.augmentation import CopyAugmentation, DistortedCopy
from retrain.errors import UserError
from retrain.data.images import PREPROCESSING_VERSION, ImageError, load_image
from retrain.workers import prefetch

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
            try:
                file = open(tmp, "wb")
            except FileNotFoundError:  # first entry in this folder; mkdir on every write costs more than the write
                path.parent.mkdir(parents=True, exist_ok=True)
                file = open(tmp, "wb")
            with file:
                file.write(data)
            os.replace(tmp, path)
        except OSError as e:
            raise UserError(
                f"cannot write bottleneck cache entry {path}: {e.strerror or e} "
                "(free some space, or pass a writable --bottleneck_dir)"
            ) from e
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
    order. `engine` is a name from feature_engines.ENGINES, built only when the first
    image needs computing (so a fully cached run never pays for it), or a FeatureEngine.
    `distortions`, aligned with `paths`, gives a DistortedCopy (or None) per item: its
    own cache key and pixels; a path may then appear once per copy."""
    from retrain.features.engines import create_engine

    size = backbone.input_size
    result = Extraction(np.zeros((len(paths), backbone.feature_size), np.float32), np.zeros(len(paths), bool))
    built: list = []
    build_lock = threading.Lock()

    def current_engine():
        with build_lock:
            if not built:
                built.append(create_engine(backbone, engine) if isinstance(engine, str) else engine)
                result.engine, result.engine_note = built[0].name, built[0].note
            return built[0]

    def prepare(index: int) -> _Prepared | ImageError:
        path = paths[index]
        try:
            data = path.read_bytes()
        except OSError as e:
            return ImageError(path, f"cannot read file ({e.strerror or e})")
        content = content_key(data)
        copy = distortions[index] if distortions else None
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

    batch: list[_Prepared] = []

    def run_batch():
        vectors = current_engine().run(np.stack([item.pixels for item in batch]))
        for item, vector in zip(batch, vectors):
            cache.write(item.key, vector)
            result.features[item.index] = vector
            result.ok[item.index] = True
        result.computed += len(batch)
        if progress:
            progress(len(batch))
        batch.clear()

    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 2) as executor:
        try:
            for prepared in prefetch(prepare, range(len(paths)), executor, ahead=2 * batch_size):
                if isinstance(prepared, ImageError):
                    result.failures.append(prepared)
                    if progress:
                        progress(1)
                elif prepared.computed:
                    cache.write(prepared.key, prepared.vector)
                    result.features[prepared.index] = prepared.vector
                    result.ok[prepared.index] = True
                    result.computed += 1
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


@dataclass
class DistortedTraining:
    """Training rows with the copies added, and what extracting the copies did."""

    features: np.ndarray
    labels: np.ndarray
    computed: int
    reused: int
    failures: list


def add_distorted_copies(
    training_paths: list[Path],
    train_x: np.ndarray,
    train_y: np.ndarray,
    distortion: CopyAugmentation,
    copies: int,
    backbone,
    cache: BottleneckCache,
    progress: Callable[[int], None] | None = None,
) -> DistortedTraining:
    """The training rows followed by `copies` distorted rows per training image.

    Every image then has K + 1 rows (the original counts as one more copy), so drawing
    training batches uniformly from the rows picks an image as before and one of its
    versions at random. Only training images are passed in: validation and test images
    are never distorted, and no copy of them is ever trained on."""
    paths = [path for path in training_paths for _ in range(copies)]
    variants = [DistortedCopy(distortion, index) for _ in training_paths for index in range(copies)]
    labels = np.repeat(train_y, copies)
    extraction = compute_bottlenecks(paths, backbone, cache, progress=progress, distortions=variants)
    return DistortedTraining(
        features=np.concatenate([train_x, extraction.features[extraction.ok]]),
        labels=np.concatenate([train_y, labels[extraction.ok]]),
        computed=extraction.computed,
        reused=extraction.reused,
        failures=extraction.failures,
    )
