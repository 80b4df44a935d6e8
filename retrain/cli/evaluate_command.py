"""`evaluate`: measure exported models on a labelled tree."""

from __future__ import annotations

from pathlib import Path

import click

from retrain.cli.console import log, progress, reports_user_errors, warn
from retrain.cli.options import PATH, option
from retrain.errors import UserError
from retrain.native_logs import import_tensorflow


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@option("graph", type=PATH, required=True, multiple=True,
         help="Frozen .pb or SavedModel folder; repeat for several models (e.g. the two ISIC task models).")
@option("labels", type=PATH, multiple=True, help="Labels file per --graph [default: the labels stored in the model].")
@option("image_dir", type=PATH, required=True, help="Class-per-folder tree (or a folder of unlabelled images).")
@click.option("--json", "json_path", type=PATH, default=None, help="Write the metrics as JSON.")
@option("plot", type=PATH, default=None, help="Draw ROC curves to this PNG.")
@option("report", type=PATH, default=None,
         help="Write one self-contained HTML page (opens offline): the figures, ROC curves, confusion matrix, "
              "calibration, operating points, and the mistakes with their heatmaps.")
@option("predictions", type=PATH, default=None, help="Write per-image probabilities as CSV.")
@option("isic_submission", is_flag=True, help="Write --predictions in the ISIC 2017 submission format.")
@option("tta", is_flag=True, help="Test-time augmentation: average the probabilities over the four flips.")
@option("metadata", type=PATH, multiple=True,
         help="Patient metadata CSV (image_id + columns), for models trained with --metadata; rows matched by image "
              "id. Repeat for several files.")
@reports_user_errors
def evaluate(graph, labels, image_dir, json_path, plot, report, predictions, isic_submission, tta, metadata):
    """Measure exported models on a labelled image tree: accuracy, AUC, confusion matrix and more."""
    from retrain.evaluate import evaluation
    from retrain.evaluate import report as html_report
    from retrain.metrics import format_report
    from retrain.predict import prediction
    from retrain.predict.tflite_model import is_tflite_file

    if report is not None:
        report = html_report.check_report_path(report)
    table = None
    if metadata:
        from retrain.data.patient_metadata import merge_tables, read_metadata_csv

        table = merge_tables([read_metadata_csv(path) for path in metadata])
    if not all(is_tflite_file(Path(g).expanduser()) for g in graph):
        import_tensorflow()

    if labels and len(labels) != len(graph):
        raise UserError("give one --labels per --graph, or none to use the labels stored in the models")
    if isic_submission and not predictions:
        raise UserError("--isic_submission needs --predictions FILE to write the submission to")
    results, runs, reported = {}, [], []
    for index, graph_path in enumerate(graph):
        model = prediction.load_model(graph_path)
        if tta:
            model = prediction.with_flip_tta(model)
        label_list = prediction.read_labels(labels[index]) if labels else model.labels
        if label_list is None:
            raise UserError(f"--graph {graph_path}: carries no labels; pass --labels")
        if table is not None and model.metadata_encoding is None:
            warn(f"--metadata ignored for {graph_path}: the model takes no patient metadata")
        predicted, result = evaluation.evaluate_model(model, label_list, image_dir, progress, table, log, warn)
        for failure in predicted.failures:
            warn(f"skipped {failure.path}: {failure.reason}")
        runs.append(predicted)
        click.echo(f"== {graph_path}")
        if result is None:
            click.echo(f"{len(predicted.paths)} unlabelled images classified (no metrics without class folders)")
            continue
        click.echo(format_report(result, label_list))
        results[str(graph_path)] = result
        reported.append(html_report.EvaluatedModel(model, predicted, result))
        if plot:
            curves = [(label, predicted.probabilities[:, i], predicted.true == i, result["auc"][label])
                      for i, label in enumerate(label_list) if not (len(label_list) == 2 and i == 0)]
            target = plot if len(graph) == 1 else Path(plot).with_name(f"{Path(plot).stem}_{index + 1}{Path(plot).suffix}")
            evaluation.plot_roc(target, curves, title=Path(graph_path).name)
            click.echo(f"Wrote ROC curves to {target}")
    if json_path:
        evaluation.write_json(json_path, next(iter(results.values())) if len(results) == 1 else results)
        click.echo(f"Wrote {json_path}")
    if report is not None and reported:
        html_report.write_report(report, reported, image_dir, tta)
        click.echo(f"Wrote {report}")
    elif report is not None:
        warn(f"--report {report}: not written: the images have no class folders, so there is nothing to measure")
    if predictions and isic_submission:
        melanoma = next((s for r in runs if (s := evaluation.isic_scores(r.probabilities, r.labels, "melanoma")) is not None), None)
        keratosis = next((s for r in runs if (s := evaluation.isic_scores(r.probabilities, r.labels, "seborrheic keratosis")) is not None), None)
        if melanoma is None or keratosis is None or any(r.paths != runs[0].paths for r in runs):
            raise UserError("--isic_submission needs models with 'melanoma' and 'seborrheic keratosis' labels "
                            "(the two task models, or the three-class model) that read the same images")
        evaluation.write_isic_submission(predictions, runs[0].paths, melanoma, keratosis)
        click.echo(f"Wrote ISIC submission {predictions}")
    elif predictions:
        for index, run in enumerate(runs):
            target = predictions if len(runs) == 1 else Path(predictions).with_name(
                f"{Path(predictions).stem}_{index + 1}{Path(predictions).suffix}")
            evaluation.write_predictions(target, run.paths, run.probabilities, run.labels, run.true)
            click.echo(f"Wrote {target}")
    if not results and not predictions:
        warn("no class folders, so nothing to measure; pass --predictions to save the predictions")
