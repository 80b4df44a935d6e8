"""`ensemble`: several models trained by retrain, exported as one that averages them, with its
decisions fitted on a labelled tree (retrain.api.ensemble)."""

from __future__ import annotations

import click

from retrain.api.config import DataConfig, DecisionConfig, ExportConfig, FeatureConfig, TFLiteConfig
from retrain.api.ensembling import EnsembleConfig
from retrain.cli.console import log, progress, reports_user_errors, warn
from retrain.cli.fields import Field, register
from retrain.cli.options import PATH, option
from retrain.cli.retrain_command import FIELDS as RETRAIN_FIELDS
from retrain.decisions.operating_points import parse_operating_point
from retrain.export.tflite_format import QUANTIZATIONS
from retrain.reporter import Reporter

# Its own fields; every other flag is retrain's, with retrain's default.
FIELDS = {**RETRAIN_FIELDS, **register(Field("graph", EnsembleConfig, "members"),
                                       Field("random_seed", EnsembleConfig, "random_seed"))}


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@option(FIELDS["graph"], type=PATH, multiple=True, required=True,
        help="A member: the SavedModel folder retrain wrote with --saved_model_dir (EfficientNet-Lite backbones, "
             "any input size, the same labels). Repeat for each member, at least two.")
@option(FIELDS["image_dir"], type=PATH, required=True,
        help="Class-per-folder tree, folders named like the members' labels: the ensemble's temperature, operating "
             "points and out-of-distribution check are fitted on its validation split and it is tested on its test "
             "split.")
@option(FIELDS["validation_dir"], type=PATH,
        help="Class-per-folder tree used as the validation set; all of --image_dir then fits the out-of-distribution "
             "check, unless --validation_percentage is also given.")
@option(FIELDS["validation_percentage"], type=float, show_default=True)
@option(FIELDS["testing_percentage"], type=float, show_default=True)
@option(FIELDS["operating_point"], multiple=True,
        help="CLASS:sensitivity=S, CLASS:specificity=S or CLASS:threshold=T, as retrain's: chosen for the ensemble "
             "on the validation set and stored with it. Repeatable.")
@option(FIELDS["bottleneck_dir"], type=PATH, help="Feature cache [default: user cache dir/bottlenecks].")
@option(FIELDS["output_graph"], type=PATH, show_default=True, help="Frozen graph to write.")
@option(FIELDS["output_labels"], type=PATH, show_default=True, help="Labels file to write.")
@option(FIELDS["saved_model_dir"], type=PATH, help="Also export a SavedModel to this folder.")
@option(FIELDS["tflite_output"], type=PATH, help="Also export a .tflite model (and FILE.json beside it) for phones.")
@option(FIELDS["tflite_quantization"], type=click.Choice(QUANTIZATIONS), show_default=True,
        help="none = float32; dynamic = int8 weights; float16 weights; int8 = full integer, uint8 in/out.")
@option(FIELDS["tflite_representative_images"], type=int, show_default=True,
        help="Training images that calibrate int8.")
@option(FIELDS["random_seed"], type=int, help="Make the run repeatable.")
@reports_user_errors
def ensemble(graph, image_dir, validation_dir, validation_percentage, testing_percentage, operating_point,
             bottleneck_dir, output_graph, output_labels, saved_model_dir, tflite_output, tflite_quantization,
             tflite_representative_images, random_seed):
    """Average several retrain models into one model, exported in every format retrain exports.

    Its logits are the mean of the members' calibrated logits; a temperature, operating points and the
    out-of-distribution check are fitted for it on --image_dir, as retrain fits them."""
    from retrain.api.ensembling import ensemble as write_ensemble

    context = click.get_current_context()
    if validation_dir is not None and context.get_parameter_source("validation_percentage") == \
            click.core.ParameterSource.DEFAULT:
        validation_percentage = 0.0  # as retrain: the held-out tree is the validation set
    tflite = None if tflite_output is None else TFLiteConfig(tflite_output, tflite_quantization,
                                                             tflite_representative_images)
    config = EnsembleConfig(
        tuple(graph), DataConfig(image_dir, validation_dir, None, validation_percentage, testing_percentage),
        FeatureConfig(bottleneck_dir), DecisionConfig(tuple(parse_operating_point(text) for text in operating_point)),
        ExportConfig(output_graph, output_labels, saved_model_dir, tflite=tflite), random_seed)
    write_ensemble(config, Reporter(log=log, warn=warn, progress=progress))
