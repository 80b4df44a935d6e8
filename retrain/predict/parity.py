"""How closely an exported .tflite follows the model it was converted from: both run on the
same held-back images, so this sits with prediction, after export."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from retrain.data.images import load_batches
from retrain.errors import UserError
from retrain.export.tflite_format import megabytes
from retrain.predict.loaded_model import LoadedModel
from retrain.predict.prediction import load_model
from retrain.predict.tflite_model import load_tflite_model

if TYPE_CHECKING:
    from retrain.export.tflite import TFLiteExport

# The top-1 agreement with the frozen graph each mode is expected to keep (tested in tests/export/test_tflite.py).
PARITY_THRESHOLDS = {"none": 0.995, "float16": 0.995, "dynamic": 0.99, "int8": 0.97}


@dataclass(frozen=True)
class Parity:
    """How a candidate model's outputs compare with the reference's on the same images."""

    name: str
    size_bytes: int
    images: int
    top1_agreement: float
    max_probability_difference: float
    ood_agreement: float | None = None  # images whose out-of-distribution flag both models agree on
    ood_images: int = 0  # the held-back images and two generated frames (noise, blank) nothing like them
    frames_agree: bool = True  # whether the candidate flags the generated frames as the reference does


def _frames(height: int, width: int) -> np.ndarray:
    """A noise frame and a blank one: every model with an out-of-distribution check must flag them."""
    noise = np.random.default_rng(0).integers(0, 256, (height, width, 3)).astype(np.float32)
    return np.stack([noise, np.full((height, width, 3), 255.0, np.float32)])


def _outputs(model: LoadedModel, pixels: np.ndarray, ood: bool) -> tuple[np.ndarray, np.ndarray | None]:
    return model.ood(pixels) if ood else (model.predict(pixels), None)


def _ood_threshold(card) -> float | None:
    """The soft out-of-distribution threshold the model card stores; None where it stores none (int8's)."""
    thresholds = card.ood.thresholds if card is not None and card.ood is not None else None
    return None if thresholds is None else thresholds.unlike


def measure_parity(
    candidate: LoadedModel, reference: LoadedModel, images: list[Path], name: str, size_bytes: int,
    batch_size: int = 32,
) -> Parity:
    """Top-1 agreement and the largest probability difference over the readable images; where
    both have an out-of-distribution output, how often their flags agree, two generated frames
    included (an int8 score that cannot reach the threshold shows there)."""
    threshold = _ood_threshold(reference.model_card)
    usable = _ood_threshold(candidate.model_card) is not None  # not int8's
    ood = reference.ood is not None and candidate.ood is not None and threshold is not None and usable
    agreements, max_difference, count, flags = 0, 0.0, 0, []
    for _, batch, _ in load_batches(images, (reference.input_width, reference.input_height), batch_size):
        if batch is None:
            continue
        expected, expected_scores = _outputs(reference, batch, ood)
        actual, actual_scores = _outputs(candidate, batch, ood)
        if expected.shape != actual.shape:
            raise UserError(f"{candidate.source}: gives {actual.shape[1]} outputs but {reference.source} gives {expected.shape[1]}")
        agreements += int(np.sum(expected.argmax(axis=1) == actual.argmax(axis=1)))
        max_difference = max(max_difference, float(np.abs(expected - actual).max()))
        count += len(batch)
        if ood:
            flags += list((expected_scores > threshold) == (actual_scores > threshold))
    if count == 0:
        raise UserError("no readable held-back images to measure parity on")
    if not ood:
        return Parity(name, size_bytes, count, agreements / count, max_difference)
    frames = _frames(reference.input_height, reference.input_width)
    on_frames = list((reference.ood(frames)[1] > threshold) == (candidate.ood(frames)[1] > threshold))
    flags += on_frames
    return Parity(name, size_bytes, count, agreements / count, max_difference, float(np.mean(flags)), len(flags),
                  all(on_frames))


def format_parity_table(reference_name: str, reference_size: int, rows: list[Parity]) -> str:
    ood = any(row.ood_agreement is not None for row in rows)
    header = ("model", "size", "top-1 agreement", "max |prob diff|") + (("ood flags agree",) if ood else ())
    lines = [header, (reference_name, megabytes(reference_size), "(reference)", "") + (("",) if ood else ())]
    for row in rows:
        agreement = f"{100 * row.top1_agreement:.1f}% ({round(row.top1_agreement * row.images)}/{row.images})"
        flags = () if not ood else ("n/a",) if row.ood_agreement is None else (
            f"{100 * row.ood_agreement:.1f}% ({round(row.ood_agreement * row.ood_images)}/{row.ood_images})",)
        lines.append((row.name, megabytes(row.size_bytes), agreement, f"{row.max_probability_difference:.4f}") + flags)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in lines)


def _size_on_disk(path: Path) -> int:
    """A file's size, or a SavedModel folder's total."""
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def report_parity(
    export: TFLiteExport, reference_path: Path, images: list[Path], log: Callable[[str], None],
    warn: Callable[[str], None],
) -> Parity | None:
    """Print the parity table of one export against the model at reference_path, on held-back images."""
    if not images:
        warn(f"no held-back images, so the parity of {export.path} with {reference_path} was not measured")
        return None
    reference = load_model(reference_path)
    row = measure_parity(load_tflite_model(export.path), reference, images, f"{export.path.name} ({export.quantization})",
                         export.size_bytes)
    reference_path = Path(reference_path).expanduser()
    log(f"TFLite parity on {row.images} held-back images:")
    log(format_parity_table(reference_path.name, _size_on_disk(reference_path), [row]))
    threshold = PARITY_THRESHOLDS[export.quantization]
    if row.top1_agreement < threshold:
        warn(f"{export.path}: top-1 agreement {100 * row.top1_agreement:.1f}% is below the {100 * threshold:.1f}% "
             f"expected for {export.quantization}; check it on your own images before shipping")
    if not row.frames_agree:
        warn(f"{export.path}: does not flag a noise or a blank frame as out-of-distribution as "
             f"{reference_path.name} does; its out-of-distribution score cannot be relied on")
    return row
