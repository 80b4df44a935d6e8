"""Heatmaps: where in the image the evidence for a class lies, drawn over the image.

The model gives class activation maps, one [h, w] grid per class whose mean is that
class's logit (less the bias). Softmax only cares how a class's logit compares with the
others', so the heatmap of a class is its map minus the mean of all the classes' maps:
for two classes that is half the log-odds at each place, and evidence every class
shares (the plain background, say) cancels out. It is scaled to [0, 1] per image.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from retrain.data.images import ImageSource, load_upright
from retrain.errors import UserError
from retrain.paths import write_atomically
from retrain.predict.loaded_model import LoadedModel, with_rows

COLOUR_MAP = "jet"
OPACITY = 0.45
MAX_SIDE = 2048  # larger photos are drawn shrunk to this, at their own aspect


@dataclass(frozen=True)
class HeatmapRequest:
    """A heatmap to draw over the image: to `file` (PNG), of `label` (None: the top class)."""

    file: Path
    label: str | None = None


@dataclass(frozen=True)
class Heatmap:
    label: str
    class_index: int
    grid: np.ndarray  # [h, w] in [0, 1], at the network's own resolution
    probabilities: np.ndarray  # [classes]


def class_evidence(activation_maps: np.ndarray, class_index: int) -> np.ndarray:
    """[h, w, classes] maps -> the [h, w] evidence for one class over the average class, in [0, 1]."""
    evidence = activation_maps[..., class_index] - activation_maps.mean(axis=-1)
    low, high = float(evidence.min()), float(evidence.max())
    if high - low < 1e-12:
        return np.zeros_like(evidence, dtype=np.float32)
    return ((evidence - low) / (high - low)).astype(np.float32)


def heatmaps_for(model: LoadedModel, pixels: np.ndarray, labels: list[str], wanted: str | None = None,
                 rows: np.ndarray | None = None) -> list[Heatmap]:
    """One heatmap per image of the batch: of `wanted`, or of each image's top class (given
    its encoded patient metadata `rows`, for a model that takes it)."""
    if model.class_activation_maps is None:
        raise UserError(f"no heatmap for {model.source}: {model.no_maps_reason}")
    if wanted is not None and wanted not in labels:
        raise UserError(f"HeatmapRequest.label {wanted!r}: not one of the model's labels ({', '.join(labels)})")
    probabilities, maps = with_rows(model.class_activation_maps, pixels, rows)
    heatmaps = []
    for image_probabilities, image_maps in zip(probabilities, maps):
        index = labels.index(wanted) if wanted is not None else int(np.argmax(image_probabilities))
        heatmaps.append(Heatmap(labels[index], index, class_evidence(image_maps, index), image_probabilities))
    return heatmaps


def upsample(grid: np.ndarray, width: int, height: int) -> np.ndarray:
    """The grid stretched over a width x height image, bilinear, cell centres on cell centres."""
    return np.asarray(Image.fromarray(grid.astype(np.float32), mode="F").resize((width, height), Image.Resampling.BILINEAR))


def overlay(image: Image.Image, grid: np.ndarray) -> Image.Image:
    """The image with the grid in colour laid over it, at the image's own size."""
    from matplotlib import colormaps

    values = np.clip(upsample(grid, *image.size), 0.0, 1.0)
    colours = (colormaps[COLOUR_MAP](values)[..., :3] * 255).astype(np.float32)
    blended = (1 - OPACITY) * np.asarray(image, np.float32) + OPACITY * colours
    return Image.fromarray(np.clip(blended + 0.5, 0, 255).astype(np.uint8))


def heatmap_png(image_path: ImageSource, heatmap: Heatmap) -> bytes:
    """The overlay at the photo's own size and aspect (up to MAX_SIDE), with a colour bar and a title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import cm, colors

    picture = overlay(load_upright(image_path, MAX_SIDE), heatmap.grid)
    dpi, scale = 100, max(1.0, 320 / max(picture.size))  # small images are drawn larger, so the text fits
    image_width, image_height = (side * scale / dpi for side in picture.size)  # inches
    margin, bar_room, title_room = 0.1, 1.1, 0.35
    figure_width, figure_height = image_width + margin + bar_room, image_height + margin + title_room
    figure = plt.figure(figsize=(figure_width, figure_height), dpi=dpi)
    axes = figure.add_axes((margin / figure_width, margin / figure_height,
                            image_width / figure_width, image_height / figure_height))
    bar_axes = figure.add_axes(((image_width + margin + 0.1) / figure_width, margin / figure_height,
                                0.15 / figure_width, image_height / figure_height))
    axes.imshow(picture)
    axes.set_axis_off()
    score = heatmap.probabilities[heatmap.class_index]
    axes.set_title(f"{heatmap.label} ({score:.3f}): where the evidence lies", fontsize=9)
    bar = figure.colorbar(cm.ScalarMappable(colors.Normalize(0, 1), COLOUR_MAP), cax=bar_axes)
    bar.set_label(f"evidence for {heatmap.label} (relative)", fontsize=8)
    bar.ax.tick_params(labelsize=7)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    plt.close(figure)
    return buffer.getvalue()


def write_heatmap(path: Path, image_path: Path, heatmap: Heatmap) -> None:
    path = Path(path).expanduser()
    if not path.parent.is_dir():
        raise UserError(f"HeatmapRequest.file {path}: the folder {path.parent} does not exist")
    try:
        write_atomically(path, heatmap_png(image_path, heatmap))
    except OSError as e:
        raise UserError(f"HeatmapRequest.file {path}: cannot write ({e.strerror or e})") from e
