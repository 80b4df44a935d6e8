"""Measuring exported models on a labelled image tree: what the evaluate command prints and
writes, as a value a script can use."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from retrain.errors import UserError
from retrain.evaluate import evaluation
from retrain.evaluate import report as html_report
from retrain.evaluate.decisions import Decisions, measure_decisions
from retrain.evaluate.evaluation import Predictions, TrainingCopies
from retrain.card.formats import is_tflite_file
from retrain.metrics import format_report, positive_class_index
from retrain.native_logs import import_tensorflow
from retrain.predict import prediction
from retrain.predict.loaded_model import LoadedModel
from retrain.reporter import Reporter

DEFAULT_REPORTER = Reporter()  # prints lines and warnings, shows no progress


@dataclass(frozen=True)
class GraphEvaluation:
    """One model's predictions on the images, and its metrics when the images have class folders."""

    graph: Path  # as given
    model: LoadedModel
    predictions: Predictions
    metrics: dict | None  # retrain.metrics.evaluate_probabilities; None for a folder of unlabelled images
    decisions: Decisions | None = None  # the stored operating points, calibration, ood flags and subgroups, measured

    def as_json(self) -> dict | None:
        """The metrics and the decisions' figures, as --json writes them; None without metrics."""
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
        """What --json writes: one model's metrics and decisions' figures (GraphEvaluation.as_json), or
        several by graph path (NaN is written as null); with training_dir, each has `training_copies`."""
        copies = {} if self.training_copies is None else {"training_copies": self.training_copies.as_dict()}
        measured = {str(g.graph): {**g.as_json(), **copies} for g in self.graphs if g.metrics is not None}
        return next(iter(measured.values())) if len(measured) == 1 else measured


def evaluate(
    graphs: Sequence[Path], image_dir: Path, labels: Sequence[Path] = (), tta: bool = False,
    patient_metadata: Sequence[Path] = (), json_path: Path | None = None, plot: Path | None = None,
    report: Path | None = None, predictions: Path | None = None, isic_submission: bool = False,
    reporter: Reporter = DEFAULT_REPORTER, training_dir: Path | None = None,
) -> Evaluation:
    """Classify every image under `image_dir` with each model and measure it. `labels`: one
    labels file per graph (default: the models' own); `patient_metadata`: CSV files of patient
    metadata, the input of models trained with it and, for any model, the subgroups;
    `training_dir`: the images the models trained on, to warn of copies of them among the
    images measured. Each line the evaluate command prints goes to `reporter.log`, as
    soon as it is known."""
    if isinstance(graphs, (str, os.PathLike)):
        raise TypeError(f"evaluate(graphs=...): got one path ({graphs!r}); graphs: a list of model paths, "
                        "e.g. [Path('model.pb')]")
    log, warn, progress = reporter.log, reporter.warn, reporter.progress
    if report is not None:
        report = html_report.check_report_path(report)
    if plot is not None:
        plot = evaluation.plot_path(plot)
    _check_outputs(graphs, labels, patient_metadata, (image_dir, training_dir),
                   {"--json": json_path, "--plot": plot, "--report": report, "--predictions": predictions},
                   numbered=("--plot",) if isic_submission else ("--plot", "--predictions"))
    if plot is not None:
        evaluation.check_plot_suffix(plot)
    table = _patient_table(patient_metadata, warn)
    if labels and len(labels) != len(graphs):
        raise UserError("give one --labels per --graph, or none to use the labels stored in the models")
    if isic_submission and not predictions:
        raise UserError("--isic_submission needs --predictions FILE to write the submission to")
    copies = None if training_dir is None else _warn_of_copies(image_dir, training_dir, log, warn)
    if not all(is_tflite_file(Path(g).expanduser()) for g in graphs):
        import_tensorflow()
    evaluated = []
    for index, graph in enumerate(graphs):
        evaluated.append(_evaluate_graph(graph, labels[index] if labels else None, image_dir, tta, table, log, warn,
                                         progress))
        if plot and evaluated[-1].metrics is not None:
            _plot_roc(evaluated[-1], plot if len(graphs) == 1 else _numbered(plot, index), log)
    result = Evaluation(tuple(evaluated), copies)
    if json_path:
        evaluation.write_json(json_path, result.as_json())
        log(f"Wrote {json_path}")
    if report is not None:
        _write_report(report, result, image_dir, tta, log, warn)
    if predictions:
        _write_predictions(predictions, isic_submission, result, log)
    elif not result.metrics:
        warn("no class folders, so nothing to measure; pass --predictions to save the predictions")
    return result


def _check_outputs(graphs: Sequence[Path], labels: Sequence[Path], metadata: Sequence[Path],
                   trees: tuple[Path, Path | None], written: dict[str, Path | None], numbered: tuple[str, ...]) -> None:
    """No output over a model, a labels or metadata file, an image, or another output; with
    several graphs, the numbered files (plot_2.png) are the ones checked."""
    from retrain.card.formats import sidecar_path
    from retrain.outputs import check_outputs

    sidecars = [sidecar_path(Path(g).expanduser()) for g in graphs if is_tflite_file(Path(g).expanduser())]
    outputs = {}
    for flag, path in written.items():
        several = path is not None and flag in numbered and len(graphs) > 1
        outputs.update({f"{flag} (model {i + 1})": _numbered(path, i) for i in range(len(graphs))}
                       if several else {flag: path})
    check_outputs({"--graph": list(graphs), "--graph's sidecar": sidecars, "--labels": list(labels),
                   "--metadata": list(metadata), "--image_dir": trees[0], "--training_dir": trees[1]}, outputs)


def _warn_of_copies(image_dir: Path, training_dir: Path, log, warn) -> TrainingCopies:
    """Images measured that copy a training image: warned of and listed, not removed (evaluate
    measures the tree it is given), since they make the figures overstate accuracy on new images."""
    from retrain.data.dataset import list_images
    from retrain.data.duplicates import count_line, find_copies, same_folder_groups

    training = Path(training_dir).expanduser()
    if not training.is_dir():
        raise UserError(f"--training_dir {training}: {'not a directory' if training.exists() else 'no such directory'}")
    if same_folder_groups({"--image_dir": image_dir, "--training_dir": training}):
        warn(f"--image_dir and --training_dir name one and the same folder ({training.resolve()}): every image "
             "measured is a training image, so the figures measure memory, not new images")
        return TrainingCopies(training, (), same_folder=True)
    measured, trained_on = list_images(Path(image_dir).expanduser()), list_images(training)
    copies = find_copies(trained_on, measured)
    if not copies:
        if measured:
            log(f"Copies: none of the {len(measured)} images copies one of the {len(trained_on)} --training_dir images")
        return TrainingCopies(training, ())
    warn(count_line(copies, "--image_dir", "--training_dir images",
                    "kept, so the figures overstate accuracy on new images"))
    for copy in copies:
        log(copy.describe())
    return TrainingCopies(training, tuple(copies))


def _patient_table(paths: Sequence[Path], warn):
    """The patient metadata CSVs as one table (patient_metadata.MetadataTable), None without any. An
    age outside 0..120, or a word among an age column's numbers, is missing (an unknown age), with
    one line to `warn` per file and column, as retrain treats them."""
    if not paths:
        return None
    from retrain.patient.table import (
        merge_tables,
        read_metadata_csv,
        without_impossible_ages,
        without_words_for_ages,
    )

    table, impossible = without_impossible_ages(merge_tables([read_metadata_csv(path) for path in paths]))
    table, words = without_words_for_ages(table)
    for line in impossible + words:
        warn(line)
    return table


def _evaluate_graph(graph: Path, labels_file: Path | None, image_dir: Path, tta: bool, table, log, warn,
                    progress) -> GraphEvaluation:
    model = prediction.load_model(graph)
    if tta:
        model = prediction.with_flip_tta(model)
    label_list = prediction.read_labels(labels_file) if labels_file else model.labels
    if label_list is None:
        raise UserError(f"--graph {graph}: carries no labels; pass --labels")
    if table is not None and model.patient_encoding is None:
        log(f"--metadata: {graph} takes no patient metadata; its rows serve the subgroups only")
    predicted, metrics = evaluation.evaluate_model(model, label_list, image_dir, progress, table, log, warn)
    for failure in predicted.failures:
        warn(f"skipped {failure.path}: {failure.reason}")
    log(f"== {graph}")
    if metrics is None:
        log(f"{len(predicted.paths)} unlabelled images classified (no metrics without class folders)")
    else:
        log(format_report(metrics, label_list))
    decisions = measure_decisions(model.model_card, predicted)
    for line in decisions.lines(str(graph)):
        log(line)
    if tta and decisions.points:
        log("--tta: the thresholds were chosen on single-view scores; the averaged scores may sit a little "
            "differently around them")
    return GraphEvaluation(graph, model, predicted, metrics, decisions)


def _numbered(path: Path, index: int) -> Path:
    """plot.png -> plot_2.png for the second of several models."""
    return Path(path).with_name(f"{Path(path).stem}_{index + 1}{Path(path).suffix}")


def _plot_roc(evaluated: GraphEvaluation, target: Path, log) -> None:
    run, labels = evaluated.predictions, evaluated.predictions.labels
    curves = [(label, run.probabilities[:, i], run.true == i, evaluated.metrics["auc"][label])
              for i, label in enumerate(labels) if len(labels) != 2 or i == positive_class_index(labels)]
    evaluation.plot_roc(target, curves, title=Path(evaluated.graph).name)
    log(f"Wrote ROC curves to {target}")


def _write_report(path: Path, result: Evaluation, image_dir: Path, tta: bool, log, warn) -> None:
    reported = [html_report.EvaluatedModel(g.model, g.predictions, g.metrics, g.decisions) for g in result.graphs
                if g.metrics is not None]
    if not reported:
        warn(f"--report {path}: not written: the images have no class folders, so there is nothing to measure")
        return
    html_report.write_report(path, reported, image_dir, tta, warn, result.training_copies)
    log(f"Wrote {path}")


def _write_predictions(path: Path, isic_submission: bool, result: Evaluation, log) -> None:
    runs = [g.predictions for g in result.graphs]
    if not isic_submission:
        for index, (graph, run) in enumerate(zip(result.graphs, runs)):
            target = path if len(runs) == 1 else _numbered(path, index)
            evaluation.write_predictions(target, run, evaluation.ood_thresholds(graph.model.model_card))
            log(f"Wrote {target}")
        return
    melanoma = _first_scores(runs, "melanoma")
    keratosis = _first_scores(runs, "seborrheic keratosis")
    if melanoma is None or keratosis is None or any(r.paths != runs[0].paths for r in runs):
        raise UserError("--isic_submission needs models with 'melanoma' and 'seborrheic keratosis' labels "
                        "(the two task models, or the three-class model) that read the same images")
    evaluation.write_isic_submission(path, runs[0].paths, melanoma, keratosis)
    log(f"Wrote ISIC submission {path}")


def _first_scores(runs: list[Predictions], wanted: str):
    """P(wanted) from the first model whose labels include it."""
    return next((s for r in runs if (s := evaluation.isic_scores(r.probabilities, r.labels, wanted)) is not None), None)
