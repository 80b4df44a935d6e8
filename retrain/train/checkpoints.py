"""Fine-tuning checkpoints: one file per run folder, rewritten atomically after every epoch.

A checkpoint holds what the next epoch needs to continue exactly where the last
finished one left off (tuned weights, optimizer state, the best epoch so far and its
weights, the epoch results, the seed) and a fingerprint of the run's settings and
images, so a changed command line starts afresh instead of resuming something else.
The file is a NumPy .npz (a zip with a CRC per array): a truncated or altered file
fails to load and is reported as damaged, never half-read.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from retrain.paths import write_atomically

CHECKPOINT_FILE = "checkpoint.npz"
FORMAT_VERSION = 1


class DamagedCheckpoint(Exception):
    """The checkpoint file exists but cannot be used; the message says why."""


@dataclass
class Checkpoint:
    fingerprint: str
    seed: int
    epoch: int  # epochs finished
    weights: list[np.ndarray]  # the tuned variables, in training order
    optimizer: list[np.ndarray]  # the optimizer's variables, in its order
    best_epoch: int | None = None
    best_score: float | None = None
    best_weights: list[np.ndarray] = field(default_factory=list)
    history: list[dict] = field(default_factory=list)  # one EpochResult as a dict per finished epoch
    averaged: list[np.ndarray] = field(default_factory=list)  # the weights' moving average, where kept


def save_checkpoint(run_dir: Path, checkpoint: Checkpoint) -> Path:
    meta = {
        "format": FORMAT_VERSION,
        "fingerprint": checkpoint.fingerprint,
        "seed": checkpoint.seed,
        "epoch": checkpoint.epoch,
        "best_epoch": checkpoint.best_epoch,
        "best_score": checkpoint.best_score,
        "history": checkpoint.history,
        "counts": [len(checkpoint.weights), len(checkpoint.optimizer), len(checkpoint.best_weights),
                   len(checkpoint.averaged)],
    }
    arrays = {"meta": np.array(json.dumps(meta))}
    for prefix, values in (("w", checkpoint.weights), ("o", checkpoint.optimizer), ("b", checkpoint.best_weights),
                           ("a", checkpoint.averaged)):
        arrays.update({f"{prefix}{i:05d}": np.asarray(value) for i, value in enumerate(values)})
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    path = Path(run_dir) / CHECKPOINT_FILE
    write_atomically(path, buffer.getvalue())
    return path


def load_checkpoint(run_dir: Path) -> Checkpoint | None:
    """The run folder's checkpoint, None when there is none; DamagedCheckpoint when unreadable."""
    path = Path(run_dir) / CHECKPOINT_FILE
    if not path.exists():
        return None
    if not zipfile.is_zipfile(path):
        raise DamagedCheckpoint("not an .npz archive: truncated or overwritten")
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            if meta.get("format") != FORMAT_VERSION:
                raise DamagedCheckpoint(f"written by another version (format {meta.get('format')})")
            counts = meta["counts"] + [0] * (4 - len(meta["counts"]))  # no averaged weights before they existed
            weights, optimizer, best, averaged = (
                [data[f"{prefix}{i:05d}"] for i in range(count)] for prefix, count in zip("woba", counts)
            )
    except DamagedCheckpoint:
        raise
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, json.JSONDecodeError) as e:
        raise DamagedCheckpoint(f"{type(e).__name__}: {e}") from None
    return Checkpoint(
        fingerprint=meta["fingerprint"], seed=int(meta["seed"]), epoch=int(meta["epoch"]), weights=weights,
        optimizer=optimizer, best_epoch=meta["best_epoch"], best_score=meta["best_score"], best_weights=best,
        history=meta["history"], averaged=averaged,
    )
