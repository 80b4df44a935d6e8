"""`evaluate`: measure exported models on a labelled tree."""

from __future__ import annotations

import click

from retrain.cli.console import log, progress, reports_user_errors, warn
from retrain.cli.fields import Field, register
from retrain.cli.options import PATH, option
from retrain.evaluate.outputs import EvaluationOutputs
from retrain.reporter import Reporter


# Each flag and the parameter of retrain.api.evaluate (or the output, or retrain.api.load) it sets.
FIELDS = register(
    *(Field(flag, "evaluate", name) for flag, name in (
        ("graph", "graphs"), ("labels", "labels"), ("image_dir", "image_dir"), ("tta", "tta"),
        ("metadata", "patient_metadata"), ("training_dir", "training_dir"))),
    *(Field(flag, EvaluationOutputs, name) for flag, name in (
        ("json", "json"), ("plot", "plot"), ("report", "report"), ("predictions", "predictions"),
        ("isic_submission", "isic_submission"))),
    *(Field(flag, "load", name) for flag, name in (("graph", "path"), ("labels", "labels"), ("tta", "tta"))),
)

@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@option(FIELDS["graph"], type=PATH, required=True, multiple=True,
         help="Frozen .pb, SavedModel folder or .tflite (with its .tflite.json); repeat for several models (e.g. the two "
              "ISIC task models).")
@option(FIELDS["labels"], type=PATH, multiple=True, help="Labels file per --graph [default: the labels stored in the model].")
@option(FIELDS["image_dir"], type=PATH, required=True, help="Class-per-folder tree (or a folder of unlabelled images).")
@click.option("--json", "json_path", type=PATH, default=None, help="Write the metrics as JSON, with the operating points, calibration, ood flags and subgroups.")
@option(FIELDS["plot"], type=PATH, default=None, help="Draw ROC curves to this PNG (.pdf, .svg, .jpg by suffix; no suffix: .png added).")
@option(FIELDS["report"], type=PATH, default=None,
         help="Write one self-contained HTML page (opens offline): the model card, the figures, ROC curves with the "
              "stored operating points, confusion matrix, calibration, out-of-distribution flags, subgroups (with "
              "--metadata), and the mistakes with their heatmaps.")
@option(FIELDS["predictions"], type=PATH, default=None,
        help="Write per-image probabilities as CSV (with the ood score and flag for a model that has them).")
@option(FIELDS["isic_submission"], is_flag=True, help="Write --predictions in the ISIC 2017 submission format.")
@option(FIELDS["tta"], is_flag=True, help="Test-time augmentation: average the probabilities over the four flips.")
@option(FIELDS["metadata"], type=PATH, multiple=True,
         help="Patient metadata CSV (image_id + columns), rows matched by image id: the second input of models "
              "trained with --metadata, and for any model the figures by subgroup (sex, age band, other categorical "
              "columns). Repeat for several files.")
@option(FIELDS["training_dir"], type=PATH, default=None,
        help="The images the models trained on: warn of, and list, images under --image_dir that copy one of them "
             "(same bytes, or the same picture resized or re-encoded).")
@reports_user_errors
def evaluate(graph, labels, image_dir, json_path, plot, report, predictions, isic_submission, tta, metadata,
             training_dir):
    """Measure exported models on a labelled image tree: accuracy, AUC, confusion matrix, the stored operating
    points, calibration, out-of-distribution flags, and subgroups."""
    from retrain.api.evaluation import evaluate as run_evaluation

    outputs = EvaluationOutputs(json_path, plot, report, predictions, isic_submission)
    run_evaluation(graph, image_dir, labels, tta, metadata, training_dir, outputs,
                   Reporter(log=log, warn=warn, progress=progress))
