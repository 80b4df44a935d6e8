"""`python -m benchmarks.top_layer_speed --old /work/old --new /work/main`: top-layer training
time of two checkouts, measured in one run.

Each checkout trains the same top layer (tensorflow-for-poets' defaults: 4000 SGD steps at
learning rate 0.01, batches of 100, an evaluation every 10 steps on 100 validation rows) on
the same synthetic cached bottlenecks, in a fresh process whose PYTHONPATH is that checkout.
The machine is shared and its load drifts, so the two checkouts alternate round by round
(old first, then new first, ...) and the median of each counts; only the training call is
timed, not start-up or imports.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

# Runs in the child. Before the move into layer folders the top layer was
# retrain.training.train_head; after it, retrain.train.top_layer.train_top_layer.
_TIMING_SNIPPET = """
import sys, time
from pathlib import Path
import numpy as np
import retrain

checkout = Path(sys.argv[1]).resolve()
if not Path(retrain.__file__).resolve().is_relative_to(checkout):
    sys.exit(f"imported {retrain.__file__}, not the checkout {checkout}")
try:
    from retrain.train import top_layer
    train, TrainingConfig = top_layer.train_top_layer, top_layer.TrainingConfig
except ImportError:
    from retrain.training import TrainingConfig, train_head as train

rng = np.random.default_rng(0)
centres = rng.uniform(0, 1, (3, 1280)).astype(np.float32)

def rows(count):
    labels = rng.integers(0, 3, count)
    return np.abs(centres[labels] + rng.normal(0, 0.5, (count, 1280))).astype(np.float32), labels

train_x, train_y = rows(2000)
val_x, val_y = rows(200)
config = TrainingConfig(steps=4000, learning_rate=0.01, train_batch_size=100, eval_step_interval=10,
                        validation_batch_size=100, optimizer="sgd", random_seed=0)
seconds = []
for _ in range(3):  # the fastest of three in one process: the least disturbed by the machine's other load
    start = time.perf_counter()
    train(train_x, train_y, val_x, val_y, 3, config)
    seconds.append(time.perf_counter() - start)
print(min(seconds))
"""


def time_once(checkout: Path) -> float:
    """Seconds one top-layer training took in a fresh process importing `checkout`."""
    env = dict(os.environ, PYTHONPATH=str(checkout), TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run([sys.executable, "-c", _TIMING_SNIPPET, str(checkout)], cwd=checkout, env=env,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{checkout}: the timing run failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return float(done.stdout.split()[-1])


def cpu_model() -> str:
    try:
        listing = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    except OSError:
        return "unknown (no lscpu)"
    return next((line.split(":", 1)[1].strip() for line in listing.splitlines() if line.startswith("Model name:")),
                "unknown")


def measure(checkouts: dict[str, Path], rounds: int) -> dict[str, list[float]]:
    """Every checkout once per round, the order reversed every other round."""
    times: dict[str, list[float]] = {name: [] for name in checkouts}
    order = list(checkouts)
    for round_ in range(rounds):
        for name in order if round_ % 2 == 0 else order[::-1]:
            times[name].append(time_once(checkouts[name]))
            print(f"  round {round_ + 1}, {name}: {times[name][-1]:.2f} s", flush=True)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.top_layer_speed", description=__doc__.splitlines()[0])
    parser.add_argument("--old", type=Path, required=True, help="checkout before the change")
    parser.add_argument("--new", type=Path, required=True, help="checkout after the change")
    parser.add_argument("--rounds", type=int, default=3, help="timed runs of each checkout, alternating")
    options = parser.parse_args(argv)
    checkouts = {"old": options.old.resolve(), "new": options.new.resolve()}
    print(f"top-layer training, 4000 steps, batch 100, 2000 x 1280 synthetic bottlenecks, 3 classes, "
          f"200 validation rows; CPU: {cpu_model()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    times = measure(checkouts, options.rounds)
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, checkout in checkouts.items():
        print(f"{name} ({checkout}): median {medians[name]:.2f} s of {options.rounds}")
    paired = [new / old for new, old in zip(times["new"], times["old"])]
    print(f"new / old: {medians['new'] / medians['old']:.3f} (medians); {statistics.median(paired):.3f} "
          f"(median of each round's ratio; rounds {min(paired):.3f} to {max(paired):.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
