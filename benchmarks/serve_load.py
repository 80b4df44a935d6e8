"""`python -m benchmarks.serve_load`: what `serve` answers per second, and how fast, with 1, 4
and 16 clients at once, for the .pb and the .tflite of the default backbone (EfficientNet-Lite0).

It trains a small top layer on a generated tree (the backbone's cost is what is measured, not
the top layer's), starts the server as a user does (`serve`, or `uvicorn --factory --workers N`
with --workers), and sends photo-sized JPEGs (1024x768, as a phone's upload resized by its
browser would be, or --side) to POST /api/classify from client threads on the same machine.
Each row gives requests/s, the median and 95th-percentile latency, and the server's CPU time
per request (all its processes), which the machine's other load changes far less than the wall
times. The load average before and after each row is printed with it: on a shared machine, read
the figures with it.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from benchmarks.bench import generated_tree, textured_image

CONCURRENCY = (1, 4, 16)


def train(root: Path, steps: int) -> dict[str, Path]:
    tree = generated_tree(root, per_class=20, size=(256, 256), name="tree")
    command = [sys.executable, "-c", "from retrain.cli import retrain; retrain()", "--image_dir", tree,
               "--how_many_training_steps", steps, "--output_graph", root / "model.pb",
               "--output_labels", root / "model.txt", "--tflite_output", root / "model.tflite",
               "--bottleneck_dir", root / "bottlenecks"]
    with (root / "retrain.log").open("wb") as log:
        subprocess.run([str(arg) for arg in command], check=True, stdout=log, stderr=log)
    return {".pb": root / "model.pb", ".tflite": root / "model.tflite"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start(graph: Path, workers: int, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    if workers == 1:
        command = [sys.executable, "-c", "from retrain.cli import serve; serve()", "--graph", str(graph), "--port", str(port)]
    else:
        command = [sys.executable, "-m", "uvicorn", "--factory", "retrain.cli.serve_command:app_from_environment",
                   "--workers", str(workers), "--port", str(port), "--no-access-log", "--log-level", "warning"]
    env = {**os.environ, "RETRAIN_SERVE_GRAPHS": str(graph)}
    with log.open("ab") as stderr:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.5)
    process.kill()
    raise SystemExit("the server did not answer in 180 s")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of the process and its children (uvicorn's workers), from /proc."""
    total = 0.0
    for task in [pid, *_children(pid)]:
        try:
            fields = Path(f"/proc/{task}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _children(pid: int) -> list[int]:
    try:
        found = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []
    return found + [grandchild for child in found for grandchild in _children(child)]


def measure(url: str, pid: int, images: list[bytes], clients: int, requests: int) -> dict:
    """`requests` answers from `clients` threads, each sending one image after another."""
    latencies: list[float] = []
    failures: list[str] = []
    counter = iter(range(requests))

    def client(_):
        with httpx.Client(base_url=url, timeout=300) as session:
            for index in counter:
                started = time.perf_counter()
                answer = session.post("/api/classify", files={"image": ("photo.jpg", images[index % len(images)],
                                                                         "image/jpeg")})
                latencies.append(time.perf_counter() - started)
                if answer.status_code != 200:
                    failures.append(answer.text[:200])

    load_before = os.getloadavg()[0]
    cpu_before, started = cpu_seconds(pid), time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    wall, cpu = time.perf_counter() - started, cpu_seconds(pid) - cpu_before
    cuts = statistics.quantiles(latencies, n=20, method="inclusive")
    return {"rate": requests / wall, "p50": statistics.median(latencies), "p95": cuts[18], "cpu": cpu / requests,
            "failures": len(failures), "load": (load_before, os.getloadavg()[0])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.serve_load", description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=48, help="requests per row (after 4 of warm-up)")
    parser.add_argument("--steps", type=int, default=50, help="training steps of the top layer")
    parser.add_argument("--side", type=int, default=1024, help="the uploaded JPEGs' long side")
    parser.add_argument("--workers", type=int, nargs="+", default=[1],
                        help="server processes per row: 1 runs `serve`; more run uvicorn --factory --workers N")
    parser.add_argument("--formats", nargs="+", default=[".pb", ".tflite"], choices=[".pb", ".tflite"])
    options = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="serve_load_") as scratch:
        root = Path(scratch)
        print(f"CPU: {os.cpu_count()} cores; load average {os.getloadavg()[0]:.2f} at the start", flush=True)
        models = train(root, options.steps)
        images = []
        for seed in range(8):
            path = root / f"upload_{seed}.jpg"
            textured_image(options.side, options.side * 3 // 4, seed).save(path, quality=90)
            images.append(path.read_bytes())
        print(f"uploads: {len(images)} JPEGs of {options.side}x{options.side * 3 // 4}, "
              f"{sum(map(len, images)) / len(images) / 1024:.0f} KB on average; {options.requests} requests per row")
        print(f"\n  {'model':<8} {'workers':>7} {'clients':>7} {'req/s':>7} {'p50 ms':>8} {'p95 ms':>8} "
              f"{'CPU ms/req':>10} {'errors':>6}  load average before-after")
        for workers in options.workers:
            for name in options.formats:
                process, url = start(models[name], workers, root / "server.log")
                try:
                    measure(url, process.pid, images, 1, 4)  # warm-up: the first calls trace and allocate
                    for clients in CONCURRENCY:
                        row = measure(url, process.pid, images, clients, options.requests)
                        print(f"  {name:<8} {workers:>7} {clients:>7} {row['rate']:>7.2f} {1000 * row['p50']:>8.0f} "
                              f"{1000 * row['p95']:>8.0f} {1000 * row['cpu']:>10.0f} {row['failures']:>6}  "
                              f"{row['load'][0]:.2f}-{row['load'][1]:.2f}", flush=True)
                finally:
                    os.killpg(process.pid, 2)
                    process.wait(timeout=60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
