"""`python -m benchmarks.search_and_roc --old DIR --new DIR [--count 40000]`: the near-copy
search, the ROC curve and AUC, and top-layer training with a large validation set, in two
checkouts, one after the other on one machine.

Each checkout runs in a fresh process whose PYTHONPATH is that checkout, on the same
generated data: `count` random 64-bit hashes (80 % training images, 20 % held out, a quarter
of those planted copies 0 to 6 bits away), `count` random scores with ties, and a top layer
(1280 features, 2 classes, 4000 steps, 2000 training rows) validated on `count` rows. The
fingerprints are given, not read from images, so only the search is timed. CPU seconds; the
machine is shared, so compare the two columns of one run (the ratio), not runs.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

_SNIPPET = """
import sys, time
from pathlib import Path
import numpy as np
import retrain
from retrain.data import duplicates
from retrain.metrics import roc_auc, roc_curve
from retrain.train.top_layer import TrainingConfig, train_top_layer

checkout, count = Path(sys.argv[1]).resolve(), int(sys.argv[2])
if not Path(retrain.__file__).resolve().is_relative_to(checkout):
    sys.exit(f"imported {retrain.__file__}, not the checkout {checkout}")
rng = np.random.default_rng(0)
n_ref = count * 4 // 5
ref_hash = rng.integers(0, 2**64, n_ref, dtype=np.uint64)
source = rng.integers(0, n_ref, count - n_ref)
sus_hash = rng.integers(0, 2**64, count - n_ref, dtype=np.uint64)
planted = np.arange(count - n_ref) % 4 == 0
for index in np.flatnonzero(planted):
    flips = rng.choice(64, int(rng.integers(0, 7)), replace=False)
    sus_hash[index] = ref_hash[source[index]] ^ np.uint64(int(sum(1 << int(b) for b in flips)))
ref_colour = rng.uniform(0, 255, (n_ref, 3)).astype(np.float32)
sus_colour = np.where(planted[:, None], ref_colour[source], rng.uniform(0, 255, (count - n_ref, 3))).astype(np.float32)
given = {"ref": duplicates.Fingerprints([f"r{i}" for i in range(n_ref)], ref_hash, ref_colour, np.ones(n_ref, bool)),
         "sus": duplicates.Fingerprints([f"s{i}" for i in range(count - n_ref)], sus_hash, sus_colour,
                                        np.ones(count - n_ref, bool))}
duplicates.fingerprints = lambda paths: given["ref" if paths[0].startswith("r") else "sus"]
start = time.process_time()
copies = duplicates.find_copies([f"r{i}" for i in range(n_ref)], [f"s{i}" for i in range(count - n_ref)])
search = time.process_time() - start

scores = np.round(rng.uniform(size=count), 4)
positive = rng.uniform(size=count) < 0.2
start = time.process_time()
fpr, tpr, _ = roc_curve(scores, positive)
auc = roc_auc(scores, positive)
roc = time.process_time() - start

centres = rng.uniform(0, 1, (2, 1280)).astype(np.float32)
train_y, val_y = rng.integers(0, 2, 2000), rng.integers(0, 2, count)
train_x = (centres[train_y] + rng.normal(0, 1, (2000, 1280))).astype(np.float32)
val_x = (centres[val_y] + rng.normal(0, 1, (count, 1280))).astype(np.float32)
start = time.process_time()
train_top_layer(train_x, train_y, val_x, val_y, 2, TrainingConfig(steps=4000, random_seed=1))
training = time.process_time() - start
print(f"{search:.3f} {roc:.3f} {training:.3f} {len(copies)} {auc:.9f} {len(fpr)}")
"""


def _run(checkout: Path, count: int) -> list[str]:
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    done = subprocess.run([sys.executable, "-c", _SNIPPET, str(checkout), str(count)], env=env, check=True,
                          capture_output=True, text=True, cwd=checkout)
    return done.stdout.split()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", type=Path, required=True, help="checkout before the change")
    parser.add_argument("--new", type=Path, required=True, help="checkout after it")
    parser.add_argument("--count", type=int, default=40000)
    args = parser.parse_args(argv)
    old, new = _run(args.old, args.count), _run(args.new, args.count)
    print(f"{args.count} items; CPU seconds, old then new, one after the other")
    print("| phase | old | new | old / new |\n|---|---|---|---|")
    for index, name in enumerate(("near-copy search", "ROC curve + AUC", "top layer, 4000 steps")):
        print(f"| {name} | {float(old[index]):.2f} | {float(new[index]):.2f} | "
              f"{float(old[index]) / max(float(new[index]), 1e-9):.0f}x |")
    same = old[3:] == new[3:]
    print(f"copies found {old[3]} / {new[3]}, AUC {old[4]} / {new[4]}, ROC points {old[5]} / {new[5]}: "
          f"{'the same' if same else 'DIFFERENT'}")


if __name__ == "__main__":
    main()
