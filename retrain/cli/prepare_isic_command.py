"""`prepare_isic`: the ISIC 2017 challenge layout into class-per-folder trees."""

from __future__ import annotations

from pathlib import Path

import click

from retrain.cli.console import reports_user_errors
from retrain.cli.fields import Field, register
from retrain.cli.options import PATH, option


# Each flag and the parameter of retrain.data.isic.prepare_isic it sets.
FIELDS = register(*(Field(name, "prepare_isic", name) for name in ("images", "ground_truth", "metadata", "output")))


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@option(FIELDS["images"], type=PATH, required=True, help="Folder of ISIC_<id>.jpg images (the challenge's *_Data folder).")
@option(FIELDS["ground_truth"], type=PATH, required=True, help="CSV image_id,melanoma,seborrheic_keratosis.")
@option(FIELDS["metadata"], type=PATH, default=None,
         help="Optional CSV image_id,age_approximate,sex: checked, and the retrain flag that uses it is printed.")
@option(FIELDS["output"], type=PATH, required=True, help="Where to write the class-per-folder trees.")
@reports_user_errors
def prepare_isic(images, ground_truth, metadata, output):
    """Arrange ISIC 2017 Part 3 images into class folders for both binary tasks and the three-class task."""
    from retrain.data.isic import MANIFEST, prepare_isic as prepare

    result = prepare(images, ground_truth, output, metadata)
    for task, counts in result.counts.items():
        summary = ", ".join(f"{label} {count}" for label, count in sorted(counts.items()))
        click.echo(f"{Path(output) / task}: {summary}")
    click.echo(f"Each folder's {MANIFEST} lists the same images and labels, for retrain --image_list")
    click.echo("Images placed as " + ", ".join(f"{how} ({n})" for how, n in result.methods.items()) + "; originals untouched")
    if result.sexes is not None:
        click.echo("Metadata checked: " + ", ".join(f"{sex} {n}" for sex, n in sorted(result.sexes.items())))
        click.echo(f"To use age and sex in the model, pass --metadata {metadata} to retrain (and to evaluate), "
                   "and --metadata \"age_approximate=..,sex=..\" to label_image")
