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
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from retrain.data.images import PREPROCESSING_VERSION
from retrain.errors import UserError

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
        except (NotADirectoryError, FileExistsError) as e:
            raise UserError(f"cannot write bottleneck cache entry {path}: {_file_in_the_way(path)} is a file, "
                            "not a folder; pass a folder as FeatureConfig.bottleneck_dir") from e
        except OSError as e:
            raise UserError(
                f"cannot write bottleneck cache entry {path}: {e.strerror or e} "
                "(free some space, or pass a writable FeatureConfig.bottleneck_dir)"
            ) from e
        finally:
            if tmp.exists():
                tmp.unlink()


def _file_in_the_way(path: Path) -> Path:
    """The file that stands where one of `path`'s folders should be."""
    for parent in reversed(path.parents):
        if parent.exists() and not parent.is_dir():
            return parent
    return path.parent


def open_cache(bottleneck_dir: Path, backbone) -> BottleneckCache:
    namespace = f"{backbone.identity}-p{PREPROCESSING_VERSION}"
    return BottleneckCache(Path(bottleneck_dir).expanduser() / namespace, backbone.feature_size)


def content_key(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()
