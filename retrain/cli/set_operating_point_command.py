"""`set_operating_point`: store (or move) the thresholds of an exported model, chosen on a
labelled tree, in a copy of it, and with --recalibrate its temperature too; no retraining."""

from __future__ import annotations

import click

from retrain.cli.console import log, progress, reports_user_errors, warn
from retrain.cli.fields import Field, register
from retrain.cli.options import PATH, option
from retrain.reporter import Reporter


# Each flag and the parameter of retrain.api.set_operating_point it sets.
FIELDS = register(*(Field(flag, "set_operating_point", name) for flag, name in (
    ("graph", "graph"), ("image_dir", "image_dir"), ("operating_point", "operating_points"), ("output", "output"),
    ("allow_training_images", "allow_training_images"), ("recalibrate", "recalibrate"))))


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@option(FIELDS["graph"], type=PATH, required=True,
         help="The model exported by retrain: frozen .pb, SavedModel folder or .tflite (with its .tflite.json).")
@option(FIELDS["image_dir"], type=PATH, required=True,
         help="Class-per-folder tree, folders named like the model's labels, of images the model did not train on: "
              "the thresholds are chosen on it.")
@option(FIELDS["operating_point"], multiple=True, required=True,
         help="CLASS:sensitivity=S, CLASS:specificity=S or CLASS:threshold=T, S in (0, 1], T in (0, 1) (the class "
              "may be omitted for two classes when the other is called 'other'); repeatable. Replaces every operating point the model stored. E.g. melanoma:sensitivity=0.9.")
@option(FIELDS["output"], type=PATH, required=True,
         help="Where to write the copy, in --graph's format (with its sidecar and model card); never an existing path.")
@option(FIELDS["allow_training_images"], is_flag=True,
        help="Choose on --image_dir even when it is, is inside or holds the model's training tree (refused "
             "otherwise: such thresholds promise more than new images give).")
@option(FIELDS["recalibrate"], is_flag=True,
        help="Also refit the temperature on --image_dir (on top of the model's own), choose the operating points on "
             "the recalibrated probabilities, and write a copy that gives them in its format, with no app code; the "
             "model card keeps the training-time calibration as well. Needs images of at least two classes.")
@reports_user_errors
def set_operating_point(graph, image_dir, operating_point, output, allow_training_images, recalibrate):
    """Choose operating points on a labelled tree and write a copy of the model that stores them."""
    from retrain.api.operating_point import set_operating_point as choose_and_write

    choose_and_write(graph, image_dir, operating_point, output, reporter=Reporter(log=log, warn=warn, progress=progress),
                     allow_training_images=allow_training_images, recalibrate=recalibrate)
