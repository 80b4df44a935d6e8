"""`python -m benchmarks.scale --sizes 1000 10000 40000`: how retrain's cold and warm runs
grow with the number of images, per phase, with peak memory and cache size.

For each size N it writes N unique 256-px JPEGs in three class folders (generated, the same
bytes on every run; kept in --work between runs), then runs retrain twice on them with a
fresh bottleneck cache: cold (every feature computed) and warm (all cached). Each run is a
fresh process whose PYTHONPATH is the checkout measured (`--checkout`, default this one), so
an older checkout can be measured the same way; the child times retrain's stages by wrapping
the functions retrain.api.training calls, and reports its peak resident memory
(getrusage maxrss). `--isic` adds a cold and a warm run on the ISIC 2017 training set in
../shared/data/isic2017 (2,000 images, linked into class folders). The machine is shared:
compare checkouts one after the other in one sitting, and read ratios, not seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks.bench import isic_tree, textured_image

REPO_ROOT = Path(__file__).resolve().parents[1]
PHASES = ("imports", "backbone", "scan", "features", "split", "top_layer", "decisions", "test", "export")
_STAGES = {"import_tensorflow": "imports", "_backbone": "backbone", "scan_trees": "scan", "scan_held_out": "scan",
           "extract_features": "features", "split_sets": "split",
           "set_arrays": "split", "_fit_top_layer": "top_layer", "fit_decisions": "decisions",
           "final_test": "test", "_export": "export"}

# Runs in the child, with the checkout measured first on sys.path.
_CHILD = """
import json, resource, sys, time
from pathlib import Path
import retrain
checkout = Path(sys.argv[1]).resolve()
if not Path(retrain.__file__).resolve().is_relative_to(checkout):
    sys.exit(f"imported {retrain.__file__}, not the checkout {checkout}")
from retrain.api import training
stages, seconds, cpu_seconds = json.loads(sys.argv[2]), {}, {}
def timed(name, function):
    def run(*args, **kwargs):
        start, cpu = time.perf_counter(), time.process_time()
        try:
            return function(*args, **kwargs)
        finally:
            seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - start
            cpu_seconds[name] = cpu_seconds.get(name, 0.0) + time.process_time() - cpu
    return run
for function, phase in stages.items():
    if hasattr(training, function):
        setattr(training, function, timed(phase, getattr(training, function)))
from retrain.cli import retrain as command
start, cpu = time.perf_counter(), time.process_time()
try:
    command.main(sys.argv[3:], standalone_mode=False)
finally:
    total = time.perf_counter() - start
    print("SCALE-RESULT " + json.dumps({"seconds": seconds, "cpu_seconds": cpu_seconds, "total": total,
          "cpu": time.process_time() - cpu,
          "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}), flush=True)
"""


def generated_tree(root: Path, count: int) -> Path:
    """`count` unique 256-px JPEGs in three class folders; written once, reused by later runs."""
    tree = root / f"scale-{count}"
    done = tree / ".complete"
    if done.exists():
        return tree
    labels = ("class a", "class b", "class c")
    for label in labels:
        (tree / label).mkdir(parents=True, exist_ok=True)

    def write(index: int) -> None:
        path = tree / labels[index % 3] / f"{index}.jpg"
        if not path.exists():
            textured_image(256, 256, seed=index).save(path, quality=90)

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        list(pool.map(write, range(count)))
    done.touch()
    return tree


def run_retrain(checkout: Path, tree: Path, cache: Path, out: Path, steps: int, extra: list[str]) -> dict:
    """One retrain run in a fresh process: seconds per phase, total, CPU, peak memory."""
    args = ["--image_dir", str(tree), "--bottleneck_dir", str(cache), "--how_many_training_steps", str(steps),
            "--output_graph", str(out / "graph.pb"), "--output_labels", str(out / "labels.txt"), *extra]
    env = dict(os.environ, PYTHONPATH=str(checkout), TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run([sys.executable, "-c", _CHILD, str(checkout), json.dumps(_STAGES), *args], env=env,
                          capture_output=True, text=True, cwd=checkout)
    lines = [line for line in done.stdout.splitlines() if line.startswith("SCALE-RESULT ")]
    if done.returncode != 0 or not lines:
        sys.exit(f"retrain failed on {tree} ({checkout}):\n{done.stderr[-3000:]}")
    return json.loads(lines[-1].split(" ", 1)[1])


def folder_size(folder: Path) -> tuple[int, int]:
    """(bytes, files) under `folder`."""
    files = [p for p in folder.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files), len(files)


def measure(checkout: Path, tree: Path, scratch: Path, steps: int, extra: list[str], cache: Path | None = None) -> dict:
    """A cold then a warm run on `tree`, with a fresh cache; or, with `cache` (kept, not
    emptied: e.g. an older checkout's, to time its move into this one), a first and a second run."""
    out = scratch / "out"
    if cache is None:
        cache = scratch / "bn"
        shutil.rmtree(cache, ignore_errors=True)
    cold = run_retrain(checkout, tree, cache, out, steps, extra)
    warm = run_retrain(checkout, tree, cache, out, steps, extra)
    size, files = folder_size(cache)
    return {"cold": cold, "warm": warm, "cache_bytes": size, "cache_files": files}


def print_result(name: str, result: dict) -> None:
    cold, warm = result["cold"], result["warm"]
    print(f"\n{name}: cache {result['cache_bytes'] / 2**20:.0f} MiB in {result['cache_files']} files")
    print(f"  {'phase':<10} {'cold s':>8} {'warm s':>8} {'cold CPU':>9} {'warm CPU':>9}")
    for phase in PHASES:
        print(f"  {phase:<10} {cold['seconds'].get(phase, 0):8.1f} {warm['seconds'].get(phase, 0):8.1f} "
              f"{cold.get('cpu_seconds', {}).get(phase, 0):9.1f} {warm.get('cpu_seconds', {}).get(phase, 0):9.1f}")
    other = [run["total"] - sum(run["seconds"].values()) for run in (cold, warm)]
    other_cpu = [run["cpu"] - sum(run.get("cpu_seconds", {}).values()) for run in (cold, warm)]
    print(f"  {'other':<10} {other[0]:8.1f} {other[1]:8.1f} {other_cpu[0]:9.1f} {other_cpu[1]:9.1f}")
    print(f"  {'total':<10} {cold['total']:8.1f} {warm['total']:8.1f} {cold['cpu']:9.1f} {warm['cpu']:9.1f}")
    print(f"  peak memory: cold {cold['maxrss_kib'] / 2**20:.2f} GiB, warm {warm['maxrss_kib'] / 2**20:.2f} GiB; "
          f"warm/cold {warm['total'] / cold['total']:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[1000, 10000, 40000], help="tree sizes (images)")
    parser.add_argument("--checkout", type=Path, default=REPO_ROOT, help="the retrain checkout measured")
    parser.add_argument("--steps", type=int, default=200, help="--how_many_training_steps")
    parser.add_argument("--isic", action="store_true", help="also cold and warm on the ISIC 2017 training set")
    parser.add_argument("--isic_steps", type=int, default=10, help="--how_many_training_steps on ISIC 2017")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "retrain-scale",
                        help="where the generated trees are kept between runs")
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    parser.add_argument("--bottleneck_dir", type=Path,
                        help="run on this cache as it is (kept): 'cold' is then the first run on it")
    args = parser.parse_args()
    checkout = args.checkout.resolve()
    print(f"checkout {checkout}; {args.steps} steps; {os.cpu_count()} CPUs (shared: read ratios)")
    results = {}
    for count in args.sizes:
        tree = generated_tree(args.work, count)
        with tempfile.TemporaryDirectory(dir=args.work) as scratch:
            results[str(count)] = measure(checkout, tree, Path(scratch), args.steps, [], args.bottleneck_dir)
        print_result(f"{count} images", results[str(count)])
    if args.isic:
        with tempfile.TemporaryDirectory(dir=args.work) as scratch:
            tree = isic_tree(Path(scratch))
            if tree is None:
                print("ISIC 2017 not in ../shared/data/isic2017: skipped")
            else:
                results["isic2017"] = measure(checkout, tree, Path(scratch), args.isic_steps, [])
                print_result("ISIC 2017 training set (2000 images)", results["isic2017"])
    print(f"\n{'images':>8} {'cold s':>8} {'warm s':>8} {'cold CPU':>9} {'warm CPU':>9} {'peak GiB':>9} "
          f"{'cache MiB':>10} {'files':>7}")
    for name, result in results.items():
        print(f"{name:>8} {result['cold']['total']:8.1f} {result['warm']['total']:8.1f} "
              f"{result['cold']['cpu']:9.1f} {result['warm']['cpu']:9.1f} "
              f"{max(result['cold']['maxrss_kib'], result['warm']['maxrss_kib']) / 2**20:9.2f} "
              f"{result['cache_bytes'] / 2**20:10.0f} {result['cache_files']:7d}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
