"""Fixtures of the web app's tests: a small lesion-like model (with an operating point and an
out-of-distribution check), one with patient metadata, and the app over them."""

from __future__ import annotations

import io
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from tests.conftest import run_cli

SKIN = (224, 178, 150)


def lesion_image(label: str, seed: int, size: int = 96) -> Image.Image:
    """Skin-coloured, lightly noisy, with one brown spot: small, round and light for `benign`,
    larger, darker and ragged for `malignant`."""
    rng = np.random.default_rng(seed)
    shade = np.linspace(-12, 12, size)[None, :, None] * rng.uniform(-1, 1)
    pixels = np.clip(np.array(SKIN) + shade + rng.normal(0, 8, (size, size, 3)), 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels)
    draw = ImageDraw.Draw(image)
    scale = size / 96
    centre = size / 2 + rng.uniform(-8, 8, 2) * scale
    if label == "benign":
        radius, colour, ragged = rng.uniform(12, 18) * scale, (165, 110, 80), 0.05
    else:
        radius, colour, ragged = rng.uniform(20, 30) * scale, (80, 45, 35), 0.35
    angles = np.linspace(0, 2 * np.pi, 24, endpoint=False)
    radii = radius * (1 + ragged * rng.uniform(-1, 1, len(angles)))
    draw.polygon([(centre[0] + r * np.cos(a), centre[1] + r * np.sin(a)) for r, a in zip(radii, angles)],
                 fill=tuple(int(c + rng.normal(0, 6)) for c in colour))
    return image


def photo_image() -> Image.Image:
    """A real photo of something else: the portrait matplotlib ships."""
    from matplotlib import cbook

    with cbook.get_sample_data("grace_hopper.jpg") as file:
        return Image.open(file).convert("RGB")


def image_bytes(image: Image.Image, format: str = "JPEG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def lesion_models(tmp_path_factory):
    """lesions.pb and lesions.tflite (an operating point for malignant at 0.5, an out-of-distribution
    check) and with_metadata.pb (age and sex besides the image; a point chosen for a sensitivity),
    trained on generated lesion-like images."""
    from retrain.cli import retrain

    root = tmp_path_factory.mktemp("lesions")
    rows = []
    for label in ("benign", "malignant"):
        (root / "images" / label).mkdir(parents=True)
        for i in range(24):
            lesion_image(label, seed=1000 * (label == "malignant") + i).save(root / "images" / label / f"{label}_{i}.jpg")
            rows.append(f"{label}_{i},{40 + i if label == 'benign' else 55 + i},{('female', 'male')[i % 2]}")
    (root / "meta.csv").write_text("image_id,age,sex\n" + "\n".join(rows) + "\n")
    common = ["--image_dir", root / "images", "--how_many_training_steps", 100, "--learning_rate", 0.05,
              "--random_seed", 1, "--bottleneck_dir", root / "bottlenecks", "--validation_percentage", 25,
              "--testing_percentage", 10]
    # A threshold by hand, far from both classes' scores, so the page's calls cannot flip on a
    # rounding difference; the other model's is chosen for a sensitivity.
    result = run_cli(retrain, [*common, "--output_graph", root / "lesions.pb", "--output_labels", root / "lesions.txt",
                               "--tflite_output", root / "lesions.tflite", "--operating_point", "malignant:threshold=0.5"])
    assert result.exit_code == 0, result.output
    result = run_cli(retrain, [*common, "--metadata", root / "meta.csv", "--output_graph", root / "with_metadata.pb",
                               "--output_labels", root / "with_metadata.txt", "--operating_point",
                               "malignant:sensitivity=0.9"])
    assert result.exit_code == 0, result.output
    return root


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass(frozen=True)
class Server:
    url: str
    process: subprocess.Popen
    log: Path  # the server's stderr


def start_server(graphs: list[Path], log: Path, *extra) -> Server:
    """`serve` run as a user runs it, in its own process on a free localhost port; returns once
    /healthz answers."""
    import httpx

    port = free_port()
    args = [arg for graph in graphs for arg in ("--graph", graph)] + ["--port", port, *extra]
    with log.open("wb") as stderr:
        process = subprocess.Popen([sys.executable, "-c", "from retrain.cli import serve; serve()", *map(str, args)],
                                   stdout=subprocess.DEVNULL, stderr=stderr)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"serve exited with {process.returncode}: {log.read_text()}")
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return Server(url, process, log)
        except httpx.HTTPError:
            time.sleep(0.5)
    process.kill()
    raise AssertionError(f"serve did not answer in 120 s: {log.read_text()}")


def stop_server(server: Server) -> int:
    """Ctrl-C, as a user stops it; its exit status."""
    server.process.send_signal(signal.SIGINT)
    try:
        return server.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.process.kill()
        raise


@pytest.fixture(scope="session")
def server(lesion_models, tmp_path_factory):
    """serve over lesions.pb, with_metadata.pb and lesions.tflite."""
    log = tmp_path_factory.mktemp("server") / "serve.log"
    running = start_server([lesion_models / "lesions.pb", lesion_models / "with_metadata.pb",
                            lesion_models / "lesions.tflite"], log)
    yield running
    if running.process.poll() is None:
        stop_server(running)
