"""Measuring exported models on a labelled image tree: what the evaluate command prints and
writes, as a value a script can use."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from retrain.api.classification import load
from retrain.data.training_copies import copies_of_training_images
from retrain.features.cache import cached_fingerprints
from retrain.errors import UserError
from retrain.evaluate.measured import Evaluation, GraphEvaluation, measure_graph
from retrain.evaluate.outputs import EvaluationOutputs, numbered_path, write_outputs, write_roc
from retrain.reporter import Reporter

DEFAULT_REPORTER = Reporter()  # prints lines and warnings, shows no progress

__all__ = ["Evaluation", "EvaluationOutputs", "GraphEvaluation", "evaluate"]


def evaluate(graphs: Sequence[Path], image_dir: Path, labels: Sequence[Path] = (), tta: bool = False,
             patient_metadata: Sequence[Path] = (), training_dir: Path | None = None,
             outputs: EvaluationOutputs = EvaluationOutputs(), reporter: Reporter = DEFAULT_REPORTER) -> Evaluation:
    """Classify every image under `image_dir` with each model and measure it. `labels`: one
    labels file per graph (default: the models' own); `patient_metadata`: CSV files of patient
    metadata, the input of models trained with it and, for any model, the subgroups;
    `training_dir`: the images the models trained on, to warn of copies of them among the
    images measured; `outputs`: the files to write. Each line the evaluate command prints goes
    to `reporter.log`, as soon as it is known."""
    if isinstance(graphs, (str, os.PathLike)):
        raise TypeError(f"evaluate(graphs=...): got one path ({graphs!r}); graphs: a list of model paths, "
                        "e.g. [Path('model.pb')]")
    log, warn = reporter.log, reporter.warn
    outputs = outputs.checked(graphs, {"evaluate.labels": list(labels), "evaluate.patient_metadata": list(patient_metadata),
                                       "evaluate.image_dir": image_dir, "evaluate.training_dir": training_dir})
    table = _patient_table(patient_metadata, warn)
    if labels and len(labels) != len(graphs):
        raise UserError("give one evaluate.labels per evaluate.graphs, or none to use the labels stored in the models")
    if outputs.isic_submission and not outputs.predictions:
        raise UserError("EvaluationOutputs.isic_submission needs EvaluationOutputs.predictions FILE to write the "
                        "submission to")
    copies = None if training_dir is None else copies_of_training_images(
        image_dir, training_dir, ("evaluate.image_dir", "evaluate.training_dir"), log, warn, cached_fingerprints)
    evaluated = []
    for index, graph in enumerate(graphs):
        classifier = load(graph, labels[index] if labels else None, tta, reporter=reporter)
        evaluated.append(measure_graph(graph, classifier.model, list(classifier.labels), image_dir, tta, table, log,
                                       warn, reporter.progress))
        if outputs.plot and evaluated[-1].metrics is not None:
            write_roc(evaluated[-1], outputs.plot if len(graphs) == 1 else numbered_path(outputs.plot, index), log)
    result = Evaluation(tuple(evaluated), copies)
    write_outputs(outputs, result, image_dir, tta, log, warn)
    return result


def _patient_table(paths: Sequence[Path], warn):
    """The patient metadata CSVs as one table, None without any. An age outside 0..120, or a word
    among an age column's numbers, is missing (an unknown age), with one line to `warn` per file
    and column, as retrain treats them."""
    if not paths:
        return None
    from retrain.patient.table import merge_tables, read_metadata_csv, without_impossible_ages, without_words_for_ages

    table, impossible = without_impossible_ages(merge_tables([read_metadata_csv(path) for path in paths]))
    table, words = without_words_for_ages(table)
    for line in impossible + words:
        warn(line)
    return table
