"""Read a legacy (pre-zip) PyTorch state dict into NumPy arrays without importing torch.

The legacy file is a run of pickles: a magic number, a protocol version, system
info, the state dict (whose tensors point at storages by persistent id), the list
of storage keys, and then each storage's raw bytes prefixed by its element count.
Only the handful of globals a state dict needs are allowed, so a hostile file
cannot run code.
"""

from __future__ import annotations

import collections
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C

_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class TorchFileError(ValueError):
    pass


@dataclass(frozen=True)
class _StorageType:
    dtype: type


@dataclass(frozen=True)
class _StorageRef:
    key: str
    dtype: type
    numel: int


@dataclass(frozen=True)
class _TensorRef:
    storage: _StorageRef
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor(storage, storage_offset, size, stride, *_ignored):
    return _TensorRef(storage, int(storage_offset), tuple(size), tuple(stride))


class _StateDictUnpickler(pickle.Unpickler):
    def __init__(self, file):
        super().__init__(file)
        self.storages: dict[str, _StorageRef] = {}

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) in {("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_tensor")}:
            return _rebuild_tensor
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        raise TorchFileError(f"refusing to load {module}.{name} from a weights file")

    def persistent_load(self, pid):
        kind = pid[0].decode("ascii") if isinstance(pid[0], bytes) else pid[0]
        if kind != "storage":
            raise TorchFileError(f"unsupported persistent object {kind!r}")
        storage_type, key, _location, numel, view_metadata = pid[1:]
        if view_metadata is not None:
            raise TorchFileError("storage views are not supported")
        return self.storages.setdefault(key, _StorageRef(key, storage_type.dtype, int(numel)))


def load_state_dict(path: Path) -> dict[str, np.ndarray]:
    """Return the tensors of a legacy PyTorch state dict as name -> array."""
    with open(path, "rb") as f:
        try:
            magic = pickle.load(f)
            if magic != LEGACY_MAGIC:
                raise TorchFileError("not a legacy PyTorch file (bad magic number)")
            pickle.load(f)  # protocol version
            pickle.load(f)  # system info
            unpickler = _StateDictUnpickler(f)
            state = unpickler.load()
            storage_keys = pickle.load(f)
        except (pickle.UnpicklingError, EOFError, AttributeError, ValueError, TypeError) as e:
            if isinstance(e, TorchFileError):
                raise
            raise TorchFileError(f"unreadable PyTorch file: {e}") from e
        buffers = {}
        for key in storage_keys:
            ref = unpickler.storages[key]
            (numel,) = struct.unpack("<q", f.read(8))
            if numel != ref.numel:
                raise TorchFileError(f"storage {key} has {numel} elements, expected {ref.numel}")
            nbytes = numel * np.dtype(ref.dtype).itemsize
            raw = f.read(nbytes)
            if len(raw) != nbytes:
                raise TorchFileError("file is truncated")
            buffers[key] = np.frombuffer(raw, dtype=ref.dtype)
    return {name: _materialise(tensor, buffers) for name, tensor in state.items() if isinstance(tensor, _TensorRef)}


def _materialise(tensor: _TensorRef, buffers: dict[str, np.ndarray]) -> np.ndarray:
    flat = buffers[tensor.storage.key]
    last = tensor.offset + sum((n - 1) * s for n, s in zip(tensor.shape, tensor.stride) if n > 0)
    if any(n == 0 for n in tensor.shape):
        return np.zeros(tensor.shape, flat.dtype)
    if last >= flat.size:
        raise TorchFileError("tensor reaches past the end of its storage")
    itemsize = flat.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
        flat[tensor.offset :], shape=tensor.shape, strides=[s * itemsize for s in tensor.stride]
    )
    return np.array(view)
