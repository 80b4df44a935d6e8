"""`export_tflite`: a SavedModel from retrain to .tflite, with parity measured."""

from __future__ import annotations

import click

from retrain.api.config import DataConfig, TFLiteConfig
from retrain.cli.console import log, reports_user_errors, warn
from retrain.cli.fields import Field, register
from retrain.cli.options import PATH, option
from retrain.errors import UserError
from retrain.export.tflite_format import QUANTIZATIONS
from retrain.native_logs import import_tensorflow


# Each flag and the parameter of the export it sets (the command's own: it has no config; its
# defaults are retrain's, taken from retrain's configs).
FIELDS = register(*(Field(flag, "export_tflite", flag) for flag in (
    "saved_model_dir", "output", "quantization", "image_dir", "representative_images", "validation_percentage",
    "testing_percentage", "reference_graph", "random_seed")))


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@option(FIELDS["saved_model_dir"], type=PATH, required=True, help="SavedModel written by retrain --saved_model_dir.")
@option(FIELDS["output"], type=PATH, required=True, help="The .tflite file to write (and OUTPUT.json beside it).")
@option(FIELDS["quantization"], type=click.Choice(QUANTIZATIONS), default=TFLiteConfig.quantization, show_default=True,
         help="none = float32; dynamic = int8 weights; float16 weights; int8 = full integer, uint8 in/out.")
@option(FIELDS["image_dir"], type=PATH, default=None,
         help="The training tree: its training split calibrates int8 and rounds int8 weights, its held-back split measures parity.")
@option(FIELDS["representative_images"], type=int, default=TFLiteConfig.representative_images, show_default=True,
         help="Training images that calibrate int8 and round EfficientNet-Lite weights for dynamic and int8 (0: no rounding for dynamic).")
@option(FIELDS["validation_percentage"], type=float, default=DataConfig.validation_percentage, show_default=True,
        help="As given to retrain.")
@option(FIELDS["testing_percentage"], type=float, default=DataConfig.testing_percentage, show_default=True,
        help="As given to retrain.")
@option(FIELDS["reference_graph"], type=PATH, default=None, help="Model to measure parity against [default: the SavedModel].")
@option(FIELDS["random_seed"], type=int, default=None, help="Seed of the calibration sample, as given to retrain.")
@reports_user_errors
def export_tflite(saved_model_dir, output, quantization, image_dir, representative_images, validation_percentage,
                  testing_percentage, reference_graph, random_seed):
    """Convert a SavedModel written by retrain to .tflite and print its parity with the original."""
    if quantization == "int8" and image_dir is None:
        raise UserError("--quantization int8 needs --image_dir: its training images calibrate the model")
    _check_outputs(saved_model_dir, output, image_dir, reference_graph)
    import_tensorflow()
    from retrain.export.tflite import training_and_held_back, write_tflite
    from retrain.predict.parity import report_parity

    training, held_back = None, []
    if image_dir is not None:
        training, held_back = training_and_held_back(image_dir, validation_percentage, testing_percentage)
    export = write_tflite(output, quantization, training, representative_images, random_seed, log, warn,
                          saved_model_dir)
    if image_dir is None:
        warn("no --image_dir, so parity with the SavedModel was not measured")
    else:
        report_parity(export, reference_graph or saved_model_dir, held_back, log, warn)


def _check_outputs(saved_model_dir, output, image_dir, reference_graph) -> None:
    """Before TensorFlow loads: the .tflite and its sidecar must not land on an input."""
    from pathlib import Path

    from retrain.card.markdown import model_card_markdown_path
    from retrain.card.formats import is_tflite_file, sidecar_path
    from retrain.outputs import check_outputs

    reference = Path(reference_graph).expanduser() if reference_graph is not None else None
    output = Path(output).expanduser()
    check_outputs({"--saved_model_dir": saved_model_dir, "--image_dir": image_dir, "--reference_graph": reference,
                   "--reference_graph's sidecar": sidecar_path(reference)
                   if reference is not None and is_tflite_file(reference) else None},
                  {"--output": output, "--output's sidecar": sidecar_path(output),
                   "--output's model card": model_card_markdown_path(output)})
