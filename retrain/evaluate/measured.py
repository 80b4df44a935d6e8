"""What evaluate measured: each model's predictions on the images, its metrics when the images
have class folders, and its stored decisions measured, with the lines the evaluate command prints."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from retrain.data.training_copies import TrainingCopies
from retrain.evaluate.decisions import Decisions, measure_decisions
from retrain.evaluate.evaluation import Predictions, evaluate_model
from retrain.metrics import format_report
from retrain.predict.loaded_model import LoadedModel


@dataclass(frozen=True)
class GraphEvaluation:
    """One model's predictions on the images, and its metrics when the images have class folders."""

    graph: Path  # as given
    model: LoadedModel
    predictions: Predictions
    metrics: dict | None  # retrain.metrics.evaluate_probabilities; None for a folder of unlabelled images
    decisions: Decisions | None = None  # the stored operating points, calibration, ood flags and subgroups, measured

    def as_json(self) -> dict | None:
        """The metrics and the decisions' figures, as the JSON has them; None without metrics."""
        if self.metrics is None:
            return None
        return {**self.metrics, **(self.decisions.as_dict() if self.decisions is not None else {})}


@dataclass(frozen=True)
class Evaluation:
    graphs: tuple[GraphEvaluation, ...]  # in the order given
    training_copies: TrainingCopies | None = None  # with training_dir: the images measured that copy its images

    @property
    def metrics(self) -> dict[str, dict]:
        """The metrics of each model measured, by its graph path as given."""
        return {str(g.graph): g.metrics for g in self.graphs if g.metrics is not None}

    def as_json(self) -> dict:
        """What the JSON holds: one model's metrics and decisions' figures (GraphEvaluation.as_json), or
        several by graph path (NaN is written as null); with training_dir, each has `training_copies`."""
        copies = {} if self.training_copies is None else {"training_copies": self.training_copies.as_dict()}
        measured = {str(g.graph): {**g.as_json(), **copies} for g in self.graphs if g.metrics is not None}
        return next(iter(measured.values())) if len(measured) == 1 else measured


def measure_graph(graph: Path, model: LoadedModel, labels: list[str], image_dir: Path, tta: bool, table, log, warn,
                  progress) -> GraphEvaluation:
    """`model` (with `labels`, in its output order) on every image of `image_dir`, each line said
    as soon as it is known; `table`: patient metadata, for the model and the subgroups."""
    if table is not None and model.patient_encoding is None:
        log(f"evaluate.patient_metadata: {graph} takes no patient metadata; its rows serve the subgroups only")
    predicted, metrics = evaluate_model(model, labels, image_dir, progress, table, log, warn)
    for failure in predicted.failures:
        warn(f"skipped {failure.path}: {failure.reason}")
    log(f"== {graph}")
    if metrics is None:
        log(f"{len(predicted.paths)} unlabelled images classified (no metrics without class folders)")
    else:
        log(format_report(metrics, labels))
    decisions = measure_decisions(model.model_card, predicted)
    for line in decisions.lines(str(graph)):
        log(line)
    if tta and decisions.points:
        log("evaluate.tta: the thresholds were chosen on single-view scores; the averaged scores may sit a little "
            "differently around them")
    return GraphEvaluation(graph, model, predicted, metrics, decisions)
