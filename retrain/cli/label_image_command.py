"""`label_image`: classify one image, print the top classes (and a heatmap)."""

from __future__ import annotations

import click

from retrain.backbones import DEFAULT_ARCHITECTURE
from retrain.cli.console import reports_user_errors, warn
from retrain.cli.fields import Field, in_flags, register
from retrain.cli.options import PATH, option
from retrain.errors import UserError
from retrain.predict.loaded_model import FeedOverrides


# Each flag and the parameter of retrain.api.classify (or the feed override) it sets.
FIELDS = register(
    *(Field(flag, "classify", name) for flag, name in (
        ("image", "image"), ("graph", "graph"), ("labels", "labels"), ("architecture", "architecture"),
        ("model_dir", "model_dir"), ("top_k", "top_k"), ("tta", "tta"), ("heatmap", "heatmap"),
        ("heatmap_class", "heatmap_class"), ("metadata", "patient_metadata"))),
    *(Field(name, FeedOverrides, name) for name in (
        "input_layer", "output_layer", "input_height", "input_width", "input_mean", "input_std")),
    Field("json", "label_image", "as_json"),  # how the command prints, no library setting
)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@option(FIELDS["image"], type=PATH, required=True, help="Image to classify (.jpg, .jpeg, .png).")
@option(FIELDS["graph"], type=PATH, default=None,
         help="Frozen .pb, SavedModel folder or .tflite (run without TensorFlow); omit for the stock ImageNet model.")
@option(FIELDS["labels"], type=PATH, default=None, help="Labels file [default: the labels stored in the model].")
@option(FIELDS["architecture"], default=DEFAULT_ARCHITECTURE, show_default=True, help="Backbone for the stock ImageNet model.")
@option(FIELDS["model_dir"], type=PATH, default=None, help="Converted backbones [default: user cache dir/models].")
@option(FIELDS["top_k"], type=int, default=5, show_default=True)
@option(FIELDS["input_layer"], default=None, help="Input tensor name [default: from the model].")
@option(FIELDS["output_layer"], default=None, help="Output tensor name [default: from the model].")
@option(FIELDS["input_height"], type=int, default=None)
@option(FIELDS["input_width"], type=int, default=None)
@option(FIELDS["input_mean"], type=float, default=None)
@option(FIELDS["input_std"], type=float, default=None)
@option(FIELDS["tta"], is_flag=True, help="Test-time augmentation: average the probabilities over the four flips.")
@option(FIELDS["heatmap"], type=PATH, default=None,
         help="Write the image as PNG with a heatmap over it: where the evidence for the top class (or "
              "--heatmap_class) lies. Needs a .pb or SavedModel from retrain, or the stock model.")
@option(FIELDS["heatmap_class"], default=None, help="Label whose heatmap --heatmap draws [default: the top class].")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object: labels with scores best first, model, input size, the decision of each "
                   "stored operating point, the out-of-distribution check; with --heatmap, the map as a grid of "
                   "numbers in [0, 1] at the network's own resolution.")
@option(FIELDS["metadata"], default=None,
         help="The patient's metadata, for a model trained with --metadata: \"age_approximate=55,sex=female\" "
              "(columns left out count as missing).")
@reports_user_errors
def label_image(image, graph, labels, architecture, model_dir, top_k, tta, heatmap, heatmap_class, as_json, metadata,
                **feed):
    """Print the top predictions for one image, best first, then the decision of each operating point
    stored with the model (a screening call at a threshold, not a diagnosis)."""
    from retrain.api.classification import classify
    from retrain.json_text import dumps
    from retrain.predict.loaded_model import FeedOverrides
    from retrain.reporter import Reporter

    result = classify(image, graph=graph, labels=labels, top_k=top_k, tta=tta, heatmap=heatmap,
                      heatmap_class=heatmap_class, patient_metadata=metadata, architecture=architecture,
                      model_dir=model_dir, feed=FeedOverrides(**feed), reporter=Reporter(warn=warn))
    if result.ood is not None and result.ood.flagged:
        click.echo(in_flags(result.ood.message()), err=True)
    if as_json:
        click.echo(dumps(result.as_json()))
    else:
        for predicted in result.predictions:
            click.echo(f"{predicted.label} (score={predicted.score:.5f})")
        for line in result.decision_lines():
            click.echo(in_flags(line))
        for note in result.notes:
            click.echo(f"note: {in_flags(note)}", err=True)
    if result.heatmap_error is not None:
        raise UserError(f"{result.heatmap_error} (the prediction above is complete; only the heatmap failed)")
    if result.heatmap is not None:
        click.echo(f"Wrote the heatmap of {result.heatmap.label} to {heatmap}", err=as_json)
