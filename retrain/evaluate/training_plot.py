"""The training plot written beside the graph: the top layer's training curves and its
validation ROC."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from retrain.evaluate.evaluation import draw_roc
from retrain.metrics import auc_classes
from retrain.reporter import Reporter


def plot_training(output_graph: Path, history: list, val_probabilities: np.ndarray | None, val_y: np.ndarray,
                  labels: list[str], reporter: Reporter) -> Path:
    """Training curves (and the validation ROC) as a PNG beside the graph."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    target = Path(output_graph).expanduser().with_suffix(".training.png")
    figure, (curves, roc) = plt.subplots(1, 2, figsize=(11, 4.5))
    steps = [r.step for r in history]
    curves.plot(steps, [r.train_accuracy for r in history], label="train accuracy (batch)")
    curves.plot(steps, [r.cross_entropy for r in history], label="train cross entropy (batch)")
    validated = [r for r in history if r.validation_auc is not None]
    if validated:
        sample = f" (N={validated[-1].figures_count})" if 0 < validated[-1].figures_count < len(val_y) else ""
        curves.plot([r.step for r in validated], [r.validation_auc for r in validated], label=f"validation AUC{sample}")
        curves.plot([r.step for r in validated], [r.validation_loss for r in validated],
                    label=f"validation cross entropy{sample}")
    curves.set(xlabel="step", title="Training")
    curves.legend()
    if val_probabilities is not None:
        draw_roc(roc, [(labels[c], val_probabilities[:, c], val_y == c, None) for c in auc_classes(labels)])
    roc.set(xlabel="1 - specificity", ylabel="sensitivity", title="Validation ROC")
    figure.tight_layout()
    figure.savefig(target, dpi=100)
    plt.close(figure)
    reporter.log(f"Wrote training curves {target}")
    return target
