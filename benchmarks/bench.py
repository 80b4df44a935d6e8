"""`python -m benchmarks.bench`: one table of retrain's speed and memory, every figure from this run.

The machine is shared and its load changes from minute to minute, so absolute numbers
drift between runs: ratios are taken between figures of one run, each extraction figure
is the best of interleaved rounds, and each row also gives the CPU time per image, which
load changes far less. It uses the ISIC 2017 training set in ../shared/data/isic2017
when it is there (linked, never copied, into class folders in a temporary folder) and
generated images otherwise.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageChops

from retrain.data.augmentation import EpochAugmentation
from retrain.data.batches import epoch_order

REPO_ROOT = Path(__file__).resolve().parents[1]
ISIC_DIR = REPO_ROOT.parent / "shared" / "data" / "isic2017"
BIN = Path(sys.executable).parent
TARGETS = (
    ("cold extraction / forward only (ISIC-size images)", 0.9, ">="),
    ("cold extraction / one image per call", 2.0, ">="),
    ("large JPEGs: cold extraction / forward only", 0.7, ">="),
    ("warm retrain / cold retrain (wall)", 0.25, "<="),
    ("fine-tuning: augmented pipeline / bare step on pre-decoded batches", 0.9, ">="),
)
RSS_FLAT_TOLERANCE = 0.10  # peak RSS for 4N images may exceed N's by this fraction and still be "flat"


@dataclass
class Row:
    name: str
    value: float
    unit: str
    cpu_ms_per_image: float | None = None
    detail: str = ""
    cpu_seconds: float | None = None  # for whole-process rows


@dataclass
class Timing:
    seconds: float
    cpu_seconds: float


class Stopwatch:
    """Wall and process CPU time (all threads) of a block."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.timing = Timing(time.perf_counter() - self.wall, time.process_time() - self.cpu)


def rate_row(name: str, count: int, timing: Timing, detail: str = "") -> Row:
    return Row(name, count / timing.seconds, "images/s", 1000 * timing.cpu_seconds / count, detail)


# ---------------------------------------------------------------- data


def isic_tree(root: Path) -> Path | None:
    """Class folders of symlinks to the ISIC 2017 training images, or None when absent."""
    truth = ISIC_DIR / "ISIC-2017_Training_Part3_GroundTruth.csv"
    images = ISIC_DIR / "ISIC-2017_Training_Data"
    if not truth.is_file() or not images.is_dir():
        return None
    tree = root / "isic"
    with open(truth, newline="") as f:
        for row in csv.DictReader(f):
            label = "melanoma" if float(row["melanoma"]) else "seborrheic keratosis" if float(row["seborrheic_keratosis"]) else "nevus"
            source = images / f"{row['image_id']}.jpg"
            if source.is_file():
                (tree / label).mkdir(parents=True, exist_ok=True)
                (tree / label / source.name).symlink_to(source)
    return tree


def textured_image(width: int, height: int, seed: int) -> Image.Image:
    """A smooth random colour field with grain, so JPEG sizes and decode costs are photo-like."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(40, 220, (max(2, height // 64), max(2, width // 64), 3), dtype=np.uint8)
    image = Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC)
    grain = Image.effect_noise((width, height), 6).convert("RGB")
    return ImageChops.add(image, grain, scale=1.0, offset=-128)


def generated_tree(root: Path, per_class: int, size: tuple[int, int], name: str) -> Path:
    tree = root / name
    for c, label in enumerate(("class a", "class b", "class c")):
        (tree / label).mkdir(parents=True)
        for i in range(per_class):
            textured_image(*size, seed=1000 * c + i).save(tree / label / f"{label[-1]}_{i}.jpg", quality=90)
    return tree


def image_paths(tree: Path) -> list[Path]:
    return sorted(p for p in tree.rglob("*.jpg"))


def sample(paths: list[Path], count: int) -> list[Path]:
    return sorted(random.Random(7).sample(paths, min(count, len(paths))))


# ---------------------------------------------------------------- in-process extraction


def forward_only(engine, pixels: np.ndarray, batch_size: int = 32) -> Timing:
    """The network alone, used as extraction uses it: a per-image engine on one thread
    per CPU, one image per call; TensorFlow on batches."""
    workers = (os.cpu_count() or 2) if engine.per_image else 1
    chunk = 1 if engine.per_image else batch_size
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda i: engine.run(pixels[i : i + 1]), range(workers)))  # warm every thread's interpreter
        with Stopwatch() as watch:
            list(pool.map(lambda start: engine.run(pixels[start : start + chunk]), range(0, len(pixels), chunk)))
    return watch.timing


def decoded(paths: list[Path], size: int) -> np.ndarray:
    from retrain.data.images import load_image

    return np.stack([load_image(p, size) for p in paths])


def cold_extraction(paths: list[Path], backbone, engine, scratch: Path) -> Timing:
    from retrain.features.cache import open_cache
    from retrain.features.extraction import compute_bottlenecks

    folder = Path(tempfile.mkdtemp(dir=scratch))
    with Stopwatch() as watch:
        result = compute_bottlenecks(paths, backbone, open_cache(folder, backbone), engine=engine)
    shutil.rmtree(folder)
    if result.computed != len(paths):
        raise RuntimeError(f"cold extraction computed {result.computed} of {len(paths)} images")
    return watch.timing


def one_image_per_call(paths: list[Path], backbone, tf_engine, scratch: Path) -> Timing:
    """retrain.py's way: for each image in turn, read, hash, decode, one TF call, write."""
    from retrain.data.images import load_image
    from retrain.features.cache import content_key, open_cache

    cache = open_cache(Path(tempfile.mkdtemp(dir=scratch)), backbone)
    tf_engine.run(np.zeros((1, backbone.input_size, backbone.input_size, 3), np.float32))
    with Stopwatch() as watch:
        for path in paths:
            data = path.read_bytes()
            pixels = load_image(path, backbone.input_size, data)
            cache.write(content_key(data), tf_engine.run(pixels[None])[0])
    shutil.rmtree(cache.root.parent)
    return watch.timing


def extraction_rows(
    tag: str, paths: list[Path], backbone, engines: dict, scratch: Path, per_call: int, rounds: int,
    steps: dict | None = None,
) -> dict[str, Row]:
    """Every measurement runs once per round, the rounds interleaved, and the fastest round
    counts: other load on the machine only ever slows a run down, so the best of a few
    interleaved runs is the steadiest estimate, and a ratio compares like with like.
    `steps` are intermediate engine set-ups, each timed as a cold extraction too."""
    pixels = decoded(paths, backbone.input_size)
    main, tf_engine = engines["main"], engines["tensorflow"]
    subset = paths[:per_call]
    plan = {
        "forward": (f"forward only, {main.name} (pre-decoded)", len(paths), lambda: forward_only(main, pixels)),
        "cold": (f"cold extraction, compute_bottlenecks ({main.name})", len(paths),
                 lambda: cold_extraction(paths, backbone, main, scratch)),
        "per_call": ("one image per call (retrain.py style, tensorflow)", len(subset),
                     lambda: one_image_per_call(subset, backbone, tf_engine, scratch)),
    }
    if main.name != "tensorflow":
        plan["forward_tf"] = ("forward only, tensorflow batch 32", len(paths), lambda: forward_only(tf_engine, pixels))
        plan["cold_tf"] = ("cold extraction, compute_bottlenecks (tensorflow, as before)", len(paths),
                           lambda: cold_extraction(paths, backbone, tf_engine, scratch))
    for name, engine in (steps or {}).items():
        plan[name] = (f"cold extraction, compute_bottlenecks ({name})", len(paths),
                      lambda engine=engine: cold_extraction(paths, backbone, engine, scratch))
    timings: dict[str, list[Timing]] = {key: [] for key in plan}
    for _ in range(rounds):
        for key, (_, _, measure) in plan.items():
            timings[key].append(measure())
    rows = {}
    for key, (name, count, _) in plan.items():
        best = min(timings[key], key=lambda t: t.seconds)
        spread = ", ".join(f"{count / t.seconds:.1f}" for t in timings[key])
        rows[key] = rate_row(f"{tag}: {name}", count, best, f"best of {rounds}: {spread}")
    return rows


# ---------------------------------------------------------------- subprocesses


# Runs one command as its only child, so RUSAGE_CHILDREN is that command's own peak RSS
# and CPU time, not the largest of every process this benchmark started.
_MEASURE = (
    "import resource, subprocess, sys\n"
    "code = subprocess.call(sys.argv[2:])\n"
    "usage = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
    "open(sys.argv[1], 'w').write(f'{usage.ru_maxrss} {usage.ru_utime + usage.ru_stime}')\n"
    "sys.exit(code)\n"
)


@dataclass
class Measured:
    lines: list[tuple[float, str]]  # (seconds since start, line) of stdout and stderr, interleaved
    timing: Timing
    peak_rss_mib: int

    def first(self, prefix: str) -> tuple[float, str] | None:
        return next(((t, line) for t, line in self.lines if line.startswith(prefix)), None)


def run_measured(args: list, env: dict, scratch: Path) -> Measured:
    """Run to completion, timestamping each output line: wall and CPU time, peak RSS."""
    report = Path(tempfile.mkstemp(dir=scratch)[1])
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-c", _MEASURE, report, *map(str, args)], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = [(time.perf_counter() - start, line.rstrip("\n")) for line in process.stdout]
    process.wait()
    wall = time.perf_counter() - start
    if process.returncode != 0:
        tail = "\n".join(line for _, line in lines[-30:])
        raise RuntimeError(f"{Path(str(args[0])).name} {' '.join(map(str, args[1:3]))} failed ({process.returncode}):\n{tail}")
    max_rss_kib, cpu = report.read_text().split()
    return Measured(lines, Timing(wall, float(cpu)), int(max_rss_kib) // 1024)


def child_env(scratch: Path) -> dict:
    return dict(os.environ, RETRAIN_CACHE_DIR=str(scratch / "user-cache"), TF_CPP_MIN_LOG_LEVEL="2")


def retrain_phases(run: Measured) -> str:
    """Where a retrain process spent its wall time, from when its lines appeared."""
    summary = next(((t, line) for t, line in run.lines if re.match(r"Bottlenecks: \d+ reused", line)), None)
    final = run.first("Final test accuracy")
    found = re.search(r"Bottlenecks: (\d+) reused, (\d+) computed", summary[1]) if summary else None
    counts = f"{found.group(1)} reused, {found.group(2)} computed" if found else "counts not printed"
    if not summary or not final:
        return f"{counts}; CPU {run.timing.cpu_seconds:.1f} s"
    return (f"{counts}; start-up + bottlenecks {summary[0]:.1f} s, training {final[0] - summary[0]:.1f} s, "
            f"export + exit {run.timing.seconds - final[0]:.1f} s; CPU {run.timing.cpu_seconds:.1f} s")


def retrain_rows(tree: Path, model_dir: Path, scratch: Path) -> tuple[dict[str, Row], dict[str, Path], list[str]]:
    """Cold and warm runs with retrain's default outputs (frozen graph + labels), then one
    more warm run that also writes a SavedModel and a .tflite for the label_image rows."""
    notes = []
    out = scratch / "retrain-out"
    env = child_env(scratch)
    args = [
        BIN / "retrain", f"--image_dir={tree}", f"--bottleneck_dir={scratch / 'bn-retrain'}", f"--model_dir={model_dir}",
        f"--output_graph={out / 'graph.pb'}", f"--output_labels={out / 'labels.txt'}",
        "--how_many_training_steps=4000", "--random_seed=1",
    ]
    rows = {}
    for run in ("cold", "warm"):
        measured = run_measured(args, env, scratch)
        rows[run] = Row(f"retrain process, {run} bottleneck cache, 4000 steps, frozen graph export", measured.timing.seconds,
                        "s wall", detail=retrain_phases(measured), cpu_seconds=measured.timing.cpu_seconds)
    help_text = subprocess.run([BIN / "retrain", "--help"], env=env, capture_output=True, text=True).stdout
    extra = [f"--saved_model_dir={out / 'saved_model'}"]
    if "--tflite_output" in help_text:
        extra.append(f"--tflite_output={out / 'model.tflite'}")
    else:
        notes.append("retrain has no --tflite_output in this checkout: no .tflite export, no .tflite label_image row")
    measured = run_measured(args + extra, env, scratch)
    rows["exports"] = Row("retrain process, warm, + SavedModel" + (" + .tflite" if len(extra) > 1 else "") + " export",
                          measured.timing.seconds, "s wall", detail=retrain_phases(measured))
    models = {".pb": out / "graph.pb", "SavedModel": out / "saved_model"}
    if len(extra) > 1:
        models[".tflite"] = out / "model.tflite"
    return rows, models, notes


def label_image_rows(models: dict[str, Path], image: Path, scratch: Path) -> dict[str, Row]:
    rows = {}
    for kind, model in models.items():
        measured = run_measured([BIN / "label_image", f"--graph={model}", f"--image={image}"], child_env(scratch), scratch)
        top = next((line for _, line in measured.lines if "(score=" in line), "no prediction printed")
        rows[kind] = Row(f"label_image process, {kind}", measured.timing.seconds, "s wall",
                         detail=f"CPU {measured.timing.cpu_seconds:.1f} s, peak RSS {measured.peak_rss_mib} MiB; top: {top}")
    return rows


_RSS_CHILD = """
import sys
from pathlib import Path
from retrain.backbones import create_backbone
from retrain.features.cache import open_cache
from retrain.features.extraction import compute_bottlenecks
paths = [Path(line) for line in Path(sys.argv[1]).read_text().splitlines()]
backbone = create_backbone("efficientnet_lite0", Path(sys.argv[2]))
result = compute_bottlenecks(paths, backbone, open_cache(Path(sys.argv[3]), backbone))
assert result.computed == len(paths), result.computed
"""


def rss_rows(paths: list[Path], count: int, model_dir: Path, scratch: Path) -> dict[str, Row]:
    rows = {}
    for n in (count, 4 * count):
        chosen = paths[:n]
        listing = scratch / f"rss-{n}.txt"
        listing.write_text("\n".join(map(str, chosen)))
        measured = run_measured(
            [sys.executable, "-c", _RSS_CHILD, listing, model_dir, scratch / f"bn-rss-{n}"], child_env(scratch), scratch
        )
        rows[n] = Row(f"peak RSS, process extracting {len(chosen)} images (cold)", measured.peak_rss_mib, "MiB",
                      detail=f"{measured.timing.seconds:.1f} s wall")
    return rows


# ---------------------------------------------------------------- report


def fine_tune_rows(paths: list[Path], model_dir: Path, scratch: Path, rounds: int) -> dict[str, Row]:
    """Fine-tuning's training rate, bare (batches decoded beforehand, in memory) and through the
    real pipeline (worker threads decoding and augmenting as --recipe finetune does), both with
    the same loop, strategy and step; the second epoch counts (the first traces the step), and
    the two alternate in order over `rounds`, the best of each counting, as for extraction."""
    from retrain.backbones import create_backbone
    from retrain.data.batches import Batch, TrainingImages
    from retrain.reporter import Reporter
    from retrain.train.fine_tuning import (
        FineTuneConfig,
        RunFolder,
        TuningData,
        fine_tune,
    )
    from retrain.api.config import DataConfig, RetrainConfig, recipe
    from retrain.train.top_layer import TopLayer, TrainingConfig

    tuned = recipe("finetune")(RetrainConfig(DataConfig(Path("."))))
    augmentation = tuned.fine_tuning.augmentation

    class PreDecoded(TrainingImages):
        """Every image decoded once, up front, without augmentation: the step alone is timed."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.pixels = np.stack([self.load(i, 0) for i in range(len(self.paths))]).astype(np.float32)

        def epoch(self, epoch, limit=None, on_unreadable=None):
            for rows in epoch_order(len(self.paths), self.batch_size, self.seed, epoch)[:limit]:
                yield Batch(self.pixels[rows], self.labels[rows], rows)

    def build():
        return create_backbone("efficientnet_lite0", model_dir, image_size=tuned.backbone.image_size)

    backbone = build()
    labels = [i % 3 for i in range(len(paths))]
    runs = (("bare", f"fine-tuning step alone, pre-decoded batches (forward + backward, batch 32, "
                     f"{tuned.backbone.image_size} px)", PreDecoded, EpochAugmentation()),
            ("pipeline", "fine-tuning through the pipeline (decode + fresh augmentation in worker threads)",
             TrainingImages, augmentation))
    rates: dict[str, list] = {key: [] for key, *_ in runs}
    for round_ in range(rounds):
        for key, _, factory, aug in runs if round_ % 2 == 0 else runs[::-1]:
            config = FineTuneConfig(layers="all", epochs=2, learning_rate=tuned.fine_tuning.learning_rate,
                                    batch_size=tuned.fine_tuning.batch_size, augmentation=aug)
            head = TopLayer(np.zeros((backbone.feature_size, 3), np.float32), np.zeros(3, np.float32))
            _, result = fine_tune(backbone, build, head, TuningData(list(zip(paths, labels)), [], 3, backbone.input_size),
                                  config, TrainingConfig(random_seed=0, dropout=tuned.top_layer.dropout),
                                  RunFolder(scratch / f"ft-{key}-{round_}", key), Reporter(log=lambda _: None),
                                  images_factory=factory)
            rates[key].append(result.history[-1])
    rows = {}
    for key, name, *_ in runs:
        best = max(rates[key], key=lambda r: r.images_per_second)
        rows[key] = Row(name, best.images_per_second, "images/s",
                        detail=f"second epoch, {best.images} images; best of {rounds} in alternating order: "
                               + ", ".join(f"{r.images_per_second:.1f}" for r in rates[key]))
    return rows


def print_table(title: str, rows: list[Row]) -> None:
    print(f"\n{title}")
    width = max(len(r.name) for r in rows)
    print(f"  {'measurement'.ljust(width)}  {'value':>9}  {'unit':<9}  {'CPU ms/img':>10}  detail")
    for r in rows:
        cpu = f"{r.cpu_ms_per_image:10.1f}" if r.cpu_ms_per_image is not None else " " * 10
        print(f"  {r.name.ljust(width)}  {r.value:9.1f}  {r.unit:<9}  {cpu}  {r.detail}")


def check(name: str, numerator: Row, denominator: Row) -> tuple[str, float, str]:
    target, op = next((t, o) for n, t, o in TARGETS if n == name)
    ratio = numerator.value / denominator.value
    passed = ratio >= target if op == ">=" else ratio <= target
    figures = f"{numerator.value:.1f} {numerator.unit} / {denominator.value:.1f} {denominator.unit}"
    if numerator.cpu_ms_per_image and denominator.cpu_ms_per_image:
        figures += f"; in CPU time per image {denominator.cpu_ms_per_image / numerator.cpu_ms_per_image:.2f}"
    elif numerator.cpu_seconds and denominator.cpu_seconds:
        figures += f"; in CPU time {numerator.cpu_seconds / denominator.cpu_seconds:.2f}"
    return f"{name}: {ratio:.2f} (target {op} {target}; {figures})", ratio, "PASS" if passed else "MISS"


def parse_options(argv: list[str] | None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="interleaved repeats of each extraction row; the best counts")
    parser.add_argument("--images", type=int, default=160, help="images for the in-process extraction rows")
    parser.add_argument("--large", type=int, default=18, help="large JPEGs (4000x3000) to generate")
    parser.add_argument("--per-call", type=int, default=48, help="images for the one-image-per-call rows")
    parser.add_argument("--rss-images", type=int, default=100, help="N for the peak-RSS rows (N and 4N)")
    parser.add_argument("--skip-retrain", action="store_true", help="leave out the whole-process rows")
    parser.add_argument("--fine-tune-images", type=int, default=640, help="training images for the fine-tuning rows")
    parser.add_argument("--skip-fine-tune", action="store_true", help="leave out the fine-tuning rows")
    return parser.parse_args(argv)


def benchmark_images(scratch: Path) -> tuple[Path, str]:
    """The ISIC training set when it is there, else generated images; and a line saying which."""
    tree = isic_tree(scratch)
    if tree is not None:
        return tree, f"ISIC 2017 training set, {ISIC_DIR} (symlinked class folders)"
    return generated_tree(scratch, 200, (256, 256), "generated"), "generated 256x256 JPEGs (../shared/data/isic2017 not found)"


def extraction_engines(backbone) -> tuple[dict, list[str]]:
    """The engine extraction would choose (its build timed) and TensorFlow's, and notes on them."""
    from retrain.features.engines import create_engine, tensorflow_engine

    with Stopwatch() as build:
        main_engine = create_engine(backbone)
    notes = [f"extraction engine: {main_engine.name}, built in {build.timing.seconds:.1f} s once per run that computes "
             "anything (not in the extraction rows; in the retrain process rows)"]
    if main_engine.note:
        notes.append(main_engine.note)
    return {"main": main_engine, "tensorflow": tensorflow_engine(backbone)}, notes


def large_jpeg_rows(options, backbone, engines: dict, scratch: Path) -> dict[str, Row]:
    """Extraction of 4000x3000 JPEGs, and decoding them alone, with and without DCT scaling."""
    large_paths = image_paths(generated_tree(scratch, -(-options.large // 3), (4000, 3000), "large"))
    large = extraction_rows("4000x3000 JPEG", large_paths, backbone, engines, scratch, min(options.per_call, 12),
                            options.rounds)
    decode_timing = Stopwatch()
    with decode_timing:
        decoded(large_paths, backbone.input_size)
    large["decode"] = rate_row("4000x3000 JPEG: decode alone (load_image, DCT-scaled, one thread)", len(large_paths),
                               decode_timing.timing,
                               f"{np.mean([p.stat().st_size for p in large_paths]) / 1e6:.1f} MB per file")
    with Stopwatch() as full_decode:
        for path in large_paths:
            with Image.open(path) as image:
                image.convert("RGB").resize((backbone.input_size,) * 2, Image.Resampling.BILINEAR)
    large["full_decode"] = rate_row("4000x3000 JPEG: decode alone without DCT scaling (full size, then resize)",
                                    len(large_paths), full_decode.timing)
    return large


def extraction_section(options, paths: list[Path], tag: str, backbone, engines: dict, scratch: Path) -> tuple[list, list[str]]:
    """The in-process extraction table; its checks and a note on how decode-bound large JPEGs are."""
    from retrain.features.engines import litert_engine

    steps = {"litert, one 2-thread interpreter on the main thread": dataclasses.replace(
        litert_engine(backbone, threads_per_interpreter=os.cpu_count() or 2), per_image=False)}
    small = extraction_rows(tag, sample(paths, options.images), backbone, engines, scratch, options.per_call,
                            options.rounds, steps)
    large = large_jpeg_rows(options, backbone, engines, scratch)
    print_table("Extraction (in one process; ratios below use these rows)", [*small.values(), *large.values()])
    bound = large["forward"].cpu_ms_per_image / (large["forward"].cpu_ms_per_image + large["decode"].cpu_ms_per_image)
    note = (f"large JPEGs are decode-bound: even with DCT scaling a 4000x3000 JPEG costs "
            f"{large['decode'].cpu_ms_per_image:.0f} ms of CPU to decode against "
            f"{large['forward'].cpu_ms_per_image:.0f} ms for the network, so with every core busy "
            f"extraction / forward only cannot exceed {bound:.2f} here")
    checks = [
        check(TARGETS[0][0], small["cold"], small["forward"]),
        check(TARGETS[1][0], small["cold"], small["per_call"]),
        check(TARGETS[2][0], large["cold"], large["forward"]),
    ]
    return checks, [note]


def process_section(options, tree: Path, paths: list[Path], model_dir: Path, scratch: Path) -> tuple[list, list[str]]:
    """The whole-process table (retrain cold and warm, label_image, peak RSS) and its two checks."""
    process_rows, models, notes = retrain_rows(tree, model_dir, scratch)
    label_rows = label_image_rows(models, paths[0], scratch)
    rss = rss_rows(sample(paths, 4 * options.rss_images), options.rss_images, model_dir, scratch)
    print_table("Whole processes (console scripts, own temp caches)",
                [*process_rows.values(), *label_rows.values(), *rss.values()])
    low, high = rss.values()
    growth = high.value / low.value - 1
    checks = [
        check(TARGETS[3][0], process_rows["warm"], process_rows["cold"]),
        (f"peak RSS flat in image count: 4N/N - 1 = {growth:+.1%} (target <= +{RSS_FLAT_TOLERANCE:.0%}; "
         f"{high.value:.0f} / {low.value:.0f} MiB)", growth, "PASS" if growth <= RSS_FLAT_TOLERANCE else "MISS"),
    ]
    return checks, notes


def fine_tune_section(options, paths: list[Path], model_dir: Path, scratch: Path) -> list:
    tuning = fine_tune_rows(sample(paths, options.fine_tune_images), model_dir, scratch, options.rounds)
    print_table("Fine-tuning (in one process, one loop; wall rate)", list(tuning.values()))
    return [check(TARGETS[4][0], tuning["pipeline"], tuning["bare"])]


def print_summary(checks: list, notes: list[str], started: float) -> None:
    print("\nTargets")
    for text, _, verdict in checks:
        print(f"  {verdict}  {text}")
    print("\nNotes")
    for note in notes:
        print(f"  - {note}")
    print(f"  - load average {os.getloadavg()[0]:.2f} at end; whole benchmark {time.perf_counter() - started:.0f} s")


def main(argv: list[str] | None = None) -> int:
    options = parse_options(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    from retrain.backbones import create_backbone

    started = time.perf_counter()
    scratch = Path(tempfile.mkdtemp(prefix="retrain-bench-"))
    try:
        tree, source = benchmark_images(scratch)
        paths = image_paths(tree)
        print(f"retrain benchmark, {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, {os.cpu_count()} CPUs, "
              f"load average {os.getloadavg()[0]:.2f} at start")
        print(f"images: {source}; {len(paths)} images")
        model_dir = scratch / "models"
        backbone = create_backbone("efficientnet_lite0", model_dir)
        engines, notes = extraction_engines(backbone)
        tag = "ISIC-size" if "ISIC" in source else "256px"
        checks, extraction_notes = extraction_section(options, paths, tag, backbone, engines, scratch)
        notes += extraction_notes
        if not options.skip_retrain:
            process_checks, process_notes = process_section(options, tree, paths, model_dir, scratch)
            checks, notes = checks + process_checks, notes + process_notes
        else:
            notes.append("--skip-retrain: no whole-process rows, no warm/cold or RSS check")
        if not options.skip_fine_tune:
            checks += fine_tune_section(options, paths, model_dir, scratch)
        print_summary(checks, notes, started)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
