"""Where retrain keeps what it computes once per machine (converted models, bottlenecks)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def user_cache_dir() -> Path:
    """$RETRAIN_CACHE_DIR, else $XDG_CACHE_HOME/retrain, else ~/.cache/retrain."""
    if os.environ.get("RETRAIN_CACHE_DIR"):
        return Path(os.environ["RETRAIN_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "retrain"


def default_model_dir() -> Path:
    return user_cache_dir() / "models"


def default_bottleneck_dir() -> Path:
    return user_cache_dir() / "bottlenecks"


def write_atomically(path: Path, data: bytes) -> None:
    """Write via a temporary file and rename, so readers see the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def file_digest(path: Path) -> str:
    """Short SHA-256 of a file's contents: names a weights file in cache identities."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:12]
