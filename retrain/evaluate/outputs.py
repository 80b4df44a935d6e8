"""The files evaluate writes besides its lines: the metrics as JSON, ROC curves, the HTML report
and the per-image predictions (or the ISIC submission), each checked before any image is read."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from retrain.card.formats import is_tflite_file, sidecar_path
from retrain.errors import UserError
from retrain.evaluate import evaluation
from retrain.evaluate import report as html_report
from retrain.evaluate.evaluation import Predictions
from retrain.evaluate.measured import Evaluation, GraphEvaluation
from retrain.metrics import positive_class_index
from retrain.outputs import check_outputs


@dataclass(frozen=True)
class EvaluationOutputs:
    """What evaluate writes; None: not written. With several models, the plots (and the
    predictions, unless an ISIC submission) are numbered: plot_2.png for the second."""

    json: Path | None = None  # the metrics, with the operating points, calibration, ood flags and subgroups
    plot: Path | None = None  # ROC curves (.png, .pdf, .svg, .jpg by suffix; none: .png added)
    report: Path | None = None  # one self-contained HTML page
    predictions: Path | None = None  # per-image probabilities as CSV
    isic_submission: bool = False  # `predictions` in the ISIC 2017 submission format

    def checked(self, graphs: Sequence[Path], inputs: dict) -> EvaluationOutputs:
        """These outputs with their final names (a plot without suffix gets .png), once none would
        land on an input (`inputs`, by parameter) or another output."""
        report = None if self.report is None else html_report.check_report_path(self.report)
        plot = None if self.plot is None else evaluation.plot_path(self.plot)
        numbered = ("EvaluationOutputs.plot",) + (() if self.isic_submission else ("EvaluationOutputs.predictions",))
        written = {"EvaluationOutputs.json": self.json, "EvaluationOutputs.plot": plot,
                   "EvaluationOutputs.report": report, "EvaluationOutputs.predictions": self.predictions}
        outputs = {}
        for name, path in written.items():
            several = path is not None and name in numbered and len(graphs) > 1
            outputs.update({f"{name} (model {i + 1})": numbered_path(path, i) for i in range(len(graphs))}
                           if several else {name: path})
        sidecars = [sidecar_path(Path(g).expanduser()) for g in graphs if is_tflite_file(Path(g).expanduser())]
        check_outputs({"evaluate.graphs": list(graphs), "evaluate.graphs's sidecar": sidecars, **inputs}, outputs)
        if plot is not None:
            evaluation.check_plot_suffix(plot)
        return EvaluationOutputs(self.json, plot, report, self.predictions, self.isic_submission)


def numbered_path(path: Path, index: int) -> Path:
    """plot.png -> plot_2.png for the second of several models."""
    return Path(path).with_name(f"{Path(path).stem}_{index + 1}{Path(path).suffix}")


def write_roc(evaluated: GraphEvaluation, target: Path, log) -> None:
    run, labels = evaluated.predictions, evaluated.predictions.labels
    curves = [(label, run.probabilities[:, i], run.true == i, evaluated.metrics["auc"][label])
              for i, label in enumerate(labels) if len(labels) != 2 or i == positive_class_index(labels)]
    evaluation.plot_roc(target, curves, title=Path(evaluated.graph).name)
    log(f"Wrote ROC curves to {target}")


def write_outputs(outputs: EvaluationOutputs, result: Evaluation, image_dir: Path, tta: bool, log, warn) -> None:
    """The JSON, the report and the predictions (the plots are drawn as each model is measured)."""
    if outputs.json:
        evaluation.write_json(outputs.json, result.as_json())
        log(f"Wrote {outputs.json}")
    if outputs.report is not None:
        write_report(outputs.report, result, image_dir, tta, log, warn)
    if outputs.predictions:
        write_predictions(outputs.predictions, outputs.isic_submission, result, log)
    elif not result.metrics:
        warn("no class folders, so nothing to measure; pass EvaluationOutputs.predictions to save the predictions")


def write_report(path: Path, result: Evaluation, image_dir: Path, tta: bool, log, warn) -> None:
    reported = [html_report.EvaluatedModel(g.model, g.predictions, g.metrics, g.decisions) for g in result.graphs
                if g.metrics is not None]
    if not reported:
        warn(f"EvaluationOutputs.report {path}: not written: the images have no class folders, so there is nothing "
             "to measure")
        return
    html_report.write_report(path, reported, image_dir, tta, warn, result.training_copies)
    log(f"Wrote {path}")


def write_predictions(path: Path, isic_submission: bool, result: Evaluation, log) -> None:
    runs = [g.predictions for g in result.graphs]
    if not isic_submission:
        for index, (graph, run) in enumerate(zip(result.graphs, runs)):
            target = path if len(runs) == 1 else numbered_path(path, index)
            evaluation.write_predictions(target, run, evaluation.ood_thresholds(graph.model.model_card))
            log(f"Wrote {target}")
        return
    melanoma = _first_scores(runs, "melanoma")
    keratosis = _first_scores(runs, "seborrheic keratosis")
    if melanoma is None or keratosis is None or any(r.paths != runs[0].paths for r in runs):
        raise UserError("EvaluationOutputs.isic_submission needs models with 'melanoma' and 'seborrheic keratosis' "
                        "labels (the two task models, or the three-class model) that read the same images")
    evaluation.write_isic_submission(path, runs[0].paths, melanoma, keratosis)
    log(f"Wrote ISIC submission {path}")


def _first_scores(runs: list[Predictions], wanted: str):
    """P(wanted) from the first model whose labels include it."""
    return next((s for r in runs if (s := evaluation.isic_scores(r.probabilities, r.labels, wanted)) is not None), None)
