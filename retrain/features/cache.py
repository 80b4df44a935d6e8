"""The bottleneck cache: backbone features computed once per image and kept on disk, with the
image's copy fingerprints (retrain.data.duplicates) beside them.

An entry is keyed by the backbone's identity, the preprocessing version and the SHA-1 of the
image file's bytes: renaming a file reuses its entry, replacing its contents does not, and
another backbone never sees these features. A distorted training copy
(retrain.data.augmentation) is keyed by the same content key plus its settings and index. The
fingerprints (SHA-1, perceptual hash, mean colour) are keyed by the same SHA-1.

Built for a few hundred thousand images: not one file per image but pack files
(`*.pack`) of records, each [magic, kind, key length, payload length] + key + payload +
CRC-32 of all of it. Every process appends to a pack of its own, created at its first
write and locked (flock) while open, so two processes never write one file; each record is
written whole and flushed before the next, so a kill -9 leaves at most a torn last record,
which fails its length or CRC check and is never read, and a damaged record anywhere is
skipped (the reader finds the next record by its magic) and its entry recomputed. A run
reads every pack in one sweep (memory-mapped), then copies only the rows it needs. Once
there are more than MAX_PACKS packs, a run merges those no process is writing into one
(written under a temporary name, renamed, then the old packs removed). The per-image files
of the caches before packs hold features of preprocessing version 1, in a folder of their own
that no run of this version reads.

A STAT record lets a warm run skip reading an image at all: it ties a file's path to its
SHA-1 with the file's size, mtime_ns, ctime_ns, inode and device. A file is taken to be
unchanged only when all five are equal. Writing a file, truncating it, or replacing it by
rename changes its ctime (which, unlike mtime, no program can set back) or its inode;
tools that keep the mtime (cp -p, rsync -t, touch -r) still change the ctime. The one
hole, a write in the same clock tick as the stat taken before hashing, is closed as git
closes it: a stat is recorded only when the file's mtime and ctime are at least
SETTLED_SECONDS old, so any later change lands on a visibly later ctime.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import secrets
import socket
import struct
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from retrain.data.images import PREPROCESSING_VERSION
from retrain.errors import UserError

try:
    import fcntl
except ImportError:  # Windows: no flock; packs are then never merged
    fcntl = None

MAX_PACKS = 16
SETTLED_SECONDS = 2.0
FEATURES, FINGERPRINT, STAT = 1, 2, 3
_MAGIC = b"RTPK"
_HEADER = struct.Struct("<4sBHI")  # magic, kind, key length, payload length
_CRC = struct.Struct("<I")  # CRC-32 of header, key and payload
_FINGERPRINT = struct.Struct("<Q3f?")  # pHash, mean colour, detailed enough to hash
_STAT = struct.Struct("<qqqQQ40s")  # size, mtime_ns, ctime_ns, inode, device, SHA-1 (hex)
_MAX_KEY = 1024


@dataclass(frozen=True)
class FileStat:
    """What says, without reading it, that a file is the one hashed before (module docstring)."""

    size: int
    mtime_ns: int
    ctime_ns: int
    inode: int
    device: int

    @classmethod
    def of(cls, stat: os.stat_result) -> FileStat:
        return cls(stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino, stat.st_dev)

    def settled(self) -> bool:
        return time.time_ns() - max(self.mtime_ns, self.ctime_ns) >= SETTLED_SECONDS * 1e9


@dataclass
class CacheIndex:
    """What one sweep over the packs found: where each entry's features are, every
    fingerprint and every file's recorded stat."""

    feature_size: int
    entries: dict[str, tuple[int, int]] = field(default_factory=dict)  # key -> (map, record offset)
    # SHA-1 -> pHash, mean colour, detailed enough
    fingerprints: dict[str, tuple[int, np.ndarray, bool]] = field(default_factory=dict)
    stats: dict[str, tuple[FileStat, str]] = field(default_factory=dict)  # absolute path -> stat, SHA-1
    maps: list = field(default_factory=list)

    def vector(self, key: str) -> np.ndarray | None:
        """The cached features, or None when absent or damaged."""
        where = self.entries.get(key)
        if where is None:
            return None
        record = _checked(self.maps[where[0]], where[1])
        if record is None:
            return None
        return np.frombuffer(record[2], dtype="<f4")

    def content_key(self, path: str, stat: FileStat) -> str | None:
        """The SHA-1 recorded for this path, if the file is still the one hashed."""
        known = self.stats.get(path)
        return known[1] if known is not None and known[0] == stat else None


class BottleneckCache:
    """One backbone's cache folder: `index()` reads it, `write*` append to this process's pack."""

    def __init__(self, root: Path, feature_size: int):
        self.root = root
        self.feature_size = feature_size
        self._pack: Path | None = None
        self._file = None
        self._size = 0  # bytes of whole records in this process's pack
        self._pending: list[bytes] = []
        self._pending_features = False  # among the pending records: one the run cannot do without

    def index(self) -> CacheIndex:
        """Every pack read in one sweep."""
        if self.root.is_dir():
            _merge_packs(self)
        found = CacheIndex(self.feature_size)
        for pack in sorted(self.root.glob("*.pack")) if self.root.is_dir() else []:
            _sweep(pack, found)
        return found

    def read(self, key: str) -> np.ndarray | None:
        """One entry's features (a whole sweep: for checks, not for runs)."""
        return self.index().vector(key)

    def keys(self) -> set[str]:
        """The keys of every sound features entry."""
        found = self.index()
        return {key for key in found.entries if found.vector(key) is not None}

    def write(self, key: str, vector: np.ndarray) -> None:
        """A features entry, written (with anything pending) and flushed before this returns."""
        payload = np.ascontiguousarray(vector, dtype="<f4").tobytes()
        self._pending.append(_record(FEATURES, key, payload))
        self._pending_features = True
        self.flush()

    def write_fingerprint(self, sha1: str, phash: int, colour: np.ndarray, detailed: bool) -> None:
        self._pending.append(_record(FINGERPRINT, sha1, _FINGERPRINT.pack(phash, *map(float, colour), detailed)))

    def write_stat(self, path: str, stat: FileStat, sha1: str) -> None:
        self._pending.append(_record(STAT, path, _STAT.pack(stat.size, stat.mtime_ns, stat.ctime_ns, stat.inode,
                                                            stat.device, sha1.encode())))

    def flush(self) -> None:
        """The pending records appended to this process's pack; on a failing disk, the pack is
        cut back to its last whole record (removed when that leaves it empty). Only features
        must be written: stats and fingerprints save later runs work, so a run that computed
        nothing goes on without them on a read-only cache."""
        if not self._pending:
            return
        data, self._pending = b"".join(self._pending), []
        needed, self._pending_features = self._pending_features, False
        try:
            self._append(data)
        except UserError:
            if needed:
                raise

    def _append(self, data: bytes) -> None:
        file = self._file or self._open_pack()
        try:
            file.write(data)
            file.flush()
            self._size += len(data)
        except OSError as e:
            self._cut_back(self._size)
            raise UserError(f"cannot write bottleneck cache entry {self._pack}: {e.strerror or e} "
                            "(free some space, or pass a writable FeatureConfig.bottleneck_dir)") from e

    def close(self) -> None:
        self.flush()
        if self._file is not None:
            self._file.close()
            self._file = None

    def _open_pack(self):
        name = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}.pack"
        self._pack = self.root / name
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            file = open(self._pack, "ab")
            self._size = 0
        except (NotADirectoryError, FileExistsError) as e:
            raise UserError(f"cannot write bottleneck cache entry {self._pack}: {_file_in_the_way(self._pack)} is a "
                            "file, not a folder; pass a folder as FeatureConfig.bottleneck_dir") from e
        except OSError as e:
            raise UserError(f"cannot write bottleneck cache entry {self._pack}: {e.strerror or e} "
                            "(free some space, or pass a writable FeatureConfig.bottleneck_dir)") from e
        if fcntl is not None and hasattr(file, "fileno"):
            fcntl.flock(file.fileno(), fcntl.LOCK_EX)
        self._file = file
        return file

    def _cut_back(self, length: int) -> None:
        file, self._file = self._file, None
        try:
            file.close()
        except OSError:
            pass
        try:
            if length == 0:
                self._pack.unlink()
            else:
                os.truncate(self._pack, length)
        except OSError:
            pass  # a torn record is skipped by every reader


def open_cache(bottleneck_dir: Path, backbone) -> BottleneckCache:
    namespace = f"{backbone.identity}-p{PREPROCESSING_VERSION}"
    return BottleneckCache(Path(bottleneck_dir).expanduser() / namespace, backbone.feature_size)


def cached_fingerprints(paths: list[Path], bottleneck_dir: Path | None = None) -> dict[Path, tuple]:
    """The copy fingerprints (retrain.data.duplicates) that retrain kept for these files, by
    path, where a file's stat still holds; from every backbone's cache under `bottleneck_dir`
    (the default one when None). Only reads: the packs are neither merged nor written."""
    from retrain import paths as default_paths

    root = Path(bottleneck_dir or default_paths.default_bottleneck_dir()).expanduser()
    found = CacheIndex(0)
    for pack in sorted(root.glob("*/*.pack")):
        _sweep(pack, found)
    known = {}
    for path in paths:
        try:
            stat = FileStat.of(os.stat(path))
        except OSError:
            continue
        sha1 = found.content_key(os.path.abspath(path), stat)
        if sha1 in found.fingerprints:
            known[path] = (sha1, *found.fingerprints[sha1])
    for buffer in found.maps:
        buffer.close()
    return known


def content_key(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def _record(kind: int, key: str, payload: bytes) -> bytes:
    encoded = key.encode("utf-8", "surrogateescape")
    head = _HEADER.pack(_MAGIC, kind, len(encoded), len(payload)) + encoded + payload
    return head + _CRC.pack(zlib.crc32(head))


def _checked(buffer, offset: int) -> tuple[int, str, bytes] | None:
    """(kind, key, payload) of the record at `offset`, or None when its CRC fails."""
    _, kind, key_length, payload_length = _HEADER.unpack_from(buffer, offset)
    end = offset + _HEADER.size + key_length + payload_length
    (crc,) = _CRC.unpack_from(buffer, end)
    view = memoryview(buffer)[offset:end]
    if zlib.crc32(view) != crc:
        return None
    key = bytes(view[_HEADER.size:_HEADER.size + key_length]).decode("utf-8", "surrogateescape")
    payload = bytes(view[_HEADER.size + key_length:])
    view.release()
    return kind, key, payload


def _records(buffer, feature_size: int):
    """(kind, key, offset, payload) of each record whose header is sound; a torn or damaged
    stretch is skipped to the next magic. Features payloads are checked (and given) only when
    read, the rest here."""
    sizes = {FEATURES: 4 * feature_size if feature_size else None, FINGERPRINT: _FINGERPRINT.size, STAT: _STAT.size}
    unpack, head, tail = _HEADER.unpack_from, _HEADER.size, _CRC.size
    offset, size = 0, len(buffer)
    while offset + head + tail <= size:
        magic, kind, key_length, payload_length = unpack(buffer, offset)
        end = offset + head + key_length + payload_length + tail
        expected = sizes.get(kind, -1)  # None: features of a size not known here
        if (magic != _MAGIC or payload_length != (payload_length if expected is None else expected)
                or key_length > _MAX_KEY or end > size):
            found = buffer.find(_MAGIC, offset + 1)
            if found < 0:
                return
            offset = found
            continue
        if kind == FEATURES:
            key = buffer[offset + head:offset + head + key_length].decode("utf-8", "surrogateescape")
            yield kind, key, offset, None
        else:
            record = _checked(buffer, offset)
            if record is not None:
                yield kind, record[1], offset, record[2]
        offset = end


def _sweep(pack: Path, found: CacheIndex) -> None:
    try:
        with open(pack, "rb") as file:
            if os.fstat(file.fileno()).st_size == 0:
                return
            buffer = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError):
        return  # merged away by another process meanwhile: its entries are in the merged pack
    _index_buffer(buffer, found)


def _index_buffer(buffer, found: CacheIndex) -> None:
    """One mapped pack's records added to `found` (the first of each key; a path's newest stat)."""
    number = len(found.maps)
    found.maps.append(buffer)
    for kind, key, offset, payload in _records(buffer, found.feature_size):
        if kind == FEATURES:
            found.entries.setdefault(key, (number, offset))
        elif kind == FINGERPRINT:
            phash, r, g, b, detailed = _FINGERPRINT.unpack(payload)
            found.fingerprints.setdefault(key, (phash, np.array([r, g, b], np.float32), detailed))
        else:
            size, mtime, ctime, inode, device, sha1 = _STAT.unpack(payload)
            stat = FileStat(size, mtime, ctime, inode, device)
            known = found.stats.get(key)
            if known is None or known[0].ctime_ns <= stat.ctime_ns:
                found.stats[key] = (stat, sha1.decode())


def _merge_packs(cache: BottleneckCache) -> None:
    """Packs no process is writing, merged into one once there are more than MAX_PACKS: each
    key once (a path's newest stat), the merged pack renamed into place before the old ones go."""
    packs = sorted(cache.root.glob("*.pack"))
    if fcntl is None or len(packs) <= MAX_PACKS:
        return
    locked = []
    try:
        for pack in packs:
            try:
                file = open(pack, "rb")
            except OSError:
                continue
            if os.fstat(file.fileno()).st_size == 0 or not _try_lock(file):
                file.close()  # empty: its writer is about to lock it; locked: being written
                continue
            locked.append((pack, file))
        if len(locked) > 1:
            _write_merged(cache, [file for _, file in locked])
            for pack, _ in locked:
                pack.unlink(missing_ok=True)
    except OSError:
        pass  # merging is housekeeping: the packs stay as they were
    finally:
        for _, file in locked:
            file.close()


def _try_lock(file) -> bool:
    try:
        fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False


def _write_merged(cache: BottleneckCache, files: list) -> None:
    """The sound records of `files`, each key once, written to a new pack under a temporary name, then renamed."""
    found = CacheIndex(cache.feature_size)
    for file in files:
        _index_buffer(mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ), found)
    tmp = cache.root / f".merge-{os.getpid()}-{secrets.token_hex(4)}.tmp"
    try:
        with open(tmp, "wb") as out:
            for key, (number, offset) in found.entries.items():
                record = _checked(found.maps[number], offset)
                if record is not None:
                    out.write(_record(FEATURES, key, record[2]))
            for sha1, (phash, colour, detailed) in found.fingerprints.items():
                out.write(_record(FINGERPRINT, sha1, _FINGERPRINT.pack(phash, *map(float, colour), detailed)))
            for path, (stat, sha1) in found.stats.items():
                out.write(_record(STAT, path, _STAT.pack(stat.size, stat.mtime_ns, stat.ctime_ns, stat.inode,
                                                         stat.device, sha1.encode())))
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, cache.root / f"merged-{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}.pack")
    finally:
        tmp.unlink(missing_ok=True)
        for buffer in found.maps:
            buffer.close()


def _file_in_the_way(path: Path) -> Path:
    """The file that stands where one of `path`'s folders should be."""
    for parent in reversed(path.parents):
        if parent.exists() and not parent.is_dir():
            return parent
    return path.parent
