"""`ensemble`: several models trained by retrain combined into one model of every export format,
its decisions fitted on a labelled tree (retrain.api.ensemble)."""

from __future__ import annotations

import click

from retrain.api.config import DataConfig, DecisionConfig, ExportConfig, FeatureConfig, TFLiteConfig
from retrain.api.ensemble import EnsembleConfig
from retrain.cli.console import log, progress, reports_user_errors, warn
from retrain.cli.fields import Field, register
from retrain.cli.options import PATH, option
from retrain.cli.retrain_command import FIELDS as RETRAIN_FIELDS
from retrain.decisions.operating_points import parse_operating_point
from retrain.export.tflite_format import QUANTIZATIONS
from retrain.native_logs import import_tensorflow
from retrain.reporter import Reporter

FIELDS = {**RETRAIN_FIELDS, **register(Field("graph", EnsembleConfig, "members"),
                                       Field("random_seed", EnsembleConfig, "random_seed"))}


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@option(FIELDS["graph"], type=PATH, multiple=True, required=True,
        help="A member's SavedModel folder, as retrain --saved_model_dir wrote it (EfficientNet-Lite backbones, any "
             "input size); repeat for each member, at least two, all trained on the same classes.")
@option(FIELDS["image_dir"], type=PATH, required=True,
        help="Class-per-folder tree, as for retrain: the ensemble's temperature, operating points and "
             "out-of-distribution check are fitted on it (split as retrain splits it).")
@option(FIELDS["validation_dir"], type=PATH, help="Class-per-folder tree used as the validation set, as for retrain.")
@option(FIELDS["validation_percentage"], type=float, show_default=True)
@option(FIELDS["testing_percentage"], type=float, show_default=True)
@option(FIELDS["operating_point"], multiple=True,
        help="CLASS:sensitivity=S, CLASS:specificity=S or CLASS:threshold=T, as for retrain; chosen for the ensemble "
             "on the validation set. Repeatable.")
@option(FIELDS["bottleneck_dir"], type=PATH, help="Feature cache [default: user cache dir/bottlenecks].")
@option(FIELDS["output_graph"], type=PATH, show_default=True, help="Frozen graph to write.")
@option(FIELDS["output_labels"], type=PATH, show_default=True, help="Labels file to write.")
@option(FIELDS["saved_model_dir"], type=PATH, help="Also export a SavedModel to this folder.")
@option(FIELDS["tflite_output"], type=PATH, help="Also export a .tflite model (and FILE.json beside it).")
@option(FIELDS["tflite_quantization"], type=click.Choice(QUANTIZATIONS), show_default=True)
@option(FIELDS["tflite_representative_images"], type=int, show_default=True,
        help="Training images that calibrate int8.")
@option(FIELDS["random_seed"], type=int, help="Make the run repeatable.")
@reports_user_errors
def ensemble(graph, image_dir, validation_dir, validation_percentage, testing_percentage, operating_point,
             bottleneck_dir, output_graph, output_labels, saved_model_dir, tflite_output, tflite_quantization,
             tflite_representative_images, random_seed):
    """Combine models trained by retrain into one: the mean of their calibrated logits, exported in every format."""
    from retrain.api.ensemble import ensemble as combine

    import_tensorflow()
    explicit = click.get_current_context().get_parameter_source("validation_percentage")
    if validation_dir is not None and explicit == click.core.ParameterSource.DEFAULT:
        validation_percentage = 0.0  # as retrain: a validation tree replaces the share of image_dir
    tflite = None if tflite_output is None else TFLiteConfig(tflite_output, tflite_quantization,
                                                             tflite_representative_images)
    config = EnsembleConfig(
        tuple(graph), DataConfig(image_dir, validation_dir, None, validation_percentage, testing_percentage),
        FeatureConfig(bottleneck_dir),
        ExportConfig(output_graph, output_labels, saved_model_dir, tflite=tflite, recipe="ensemble"),
        DecisionConfig(tuple(parse_operating_point(text) for text in operating_point)), random_seed)
    combine(config, Reporter(log=log, warn=warn, progress=progress))
