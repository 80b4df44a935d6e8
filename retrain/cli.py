"""Command-line entry points. Thin: parse flags, call the library, print.

Flags keep tensorflow-for-poets' underscore spellings (`--image_dir=...`), and the
dashed spellings work too.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from pathlib import Path

import click

from retrain.backbones import DEFAULT_ARCHITECTURE
from retrain.errors import UserError

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _option(name: str, *args, **kwargs):
    """An option spelled --name_with_underscores, also accepted as --name-with-dashes."""
    spellings = [f"--{name}"] + ([f"--{name.replace('_', '-')}"] if "_" in name else [])
    return click.option(*spellings, name, *args, **kwargs)


def _reports_user_errors(command):
    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except UserError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("interrupted; everything already cached is kept", err=True)
            sys.exit(130)

    return wrapper


def _warn(message: str) -> None:
    click.echo(f"warning: {message}", err=True)


def _progress(total: int, label: str):
    """A progress line on stderr, at most every two seconds and at the end."""
    state = {"done": 0, "start": time.monotonic(), "shown": 0.0}

    def update(count: int) -> None:
        state["done"] += count
        now = time.monotonic()
        if now - state["shown"] >= 2 or state["done"] >= total:
            state["shown"] = now
            rate = state["done"] / max(now - state["start"], 1e-9)
            click.echo(f"{label}: {state['done']}/{total} ({rate:.0f} images/s)", err=True)

    return update


_PATH = click.Path(path_type=Path)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@_option("image_dir", type=_PATH, required=True, help="Folder with one subfolder of images per class.")
@_option("output_graph", type=_PATH, default=Path("/tmp/output_graph.pb"), show_default=True, help="Frozen graph to write.")
@_option("output_labels", type=_PATH, default=Path("/tmp/output_labels.txt"), show_default=True, help="Labels file to write.")
@_option("saved_model_dir", type=_PATH, default=None, help="Also export a SavedModel to this folder.")
@_option("bottleneck_dir", type=_PATH, default=None, help="Bottleneck cache [default: user cache dir/bottlenecks].")
@_option("model_dir", type=_PATH, default=None, help="Converted/downloaded backbones [default: user cache dir/models].")
@_option("architecture", default=DEFAULT_ARCHITECTURE, show_default=True, help="Backbone name.")
@_option("how_many_training_steps", type=int, default=4000, show_default=True)
@_option("learning_rate", type=float, default=0.01, show_default=True)
@_option("train_batch_size", type=int, default=100, show_default=True)
@_option("eval_step_interval", type=int, default=10, show_default=True)
@_option("validation_batch_size", type=int, default=100, show_default=True, help="-1 = whole validation set.")
@_option("test_batch_size", type=int, default=-1, show_default=True, help="-1 = whole test set.")
@_option("testing_percentage", type=float, default=10.0, show_default=True)
@_option("validation_percentage", type=float, default=10.0, show_default=True)
@_option("final_tensor_name", default="final_result", show_default=True)
@_option("print_misclassified_test_images", is_flag=True)
@_option("random_seed", type=int, default=None, help="Make the run repeatable.")
@_option("summaries_dir", type=_PATH, default=None, help="Write TensorBoard scalars under this folder.")
@_option("flip_left_right", is_flag=True, hidden=True)
@_option("random_crop", type=int, default=0, hidden=True)
@_option("random_scale", type=int, default=0, hidden=True)
@_option("random_brightness", type=int, default=0, hidden=True)
@_option("intermediate_output_graphs_dir", default="", hidden=True)
@_option("intermediate_store_frequency", type=int, default=0, hidden=True)
@_reports_user_errors
def retrain(**flags):
    """Retrain a new top layer on a pretrained backbone and export a frozen graph."""
    from retrain.pipeline import RetrainOptions, run_retrain
    from retrain.training import TrainingConfig

    unsupported = [
        f"--{name}" for name in ("flip_left_right", "random_crop", "random_scale", "random_brightness", "intermediate_store_frequency")
        if flags.pop(name)
    ]
    if flags.pop("intermediate_output_graphs_dir"):
        unsupported.append("--intermediate_output_graphs_dir")
    if unsupported:
        _warn(f"{', '.join(unsupported)} not supported yet; training on undistorted cached bottlenecks")
    training = TrainingConfig(
        steps=flags.pop("how_many_training_steps"),
        learning_rate=flags.pop("learning_rate"),
        train_batch_size=flags.pop("train_batch_size"),
        eval_step_interval=flags.pop("eval_step_interval"),
        validation_batch_size=flags.pop("validation_batch_size"),
        random_seed=flags.pop("random_seed"),
    )
    run_retrain(RetrainOptions(training=training, **flags), log=click.echo, warn=_warn, progress_factory=_progress)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@_option("image", type=_PATH, required=True, help="Image to classify (.jpg, .jpeg, .png).")
@_option("graph", type=_PATH, default=None, help="Frozen .pb or SavedModel folder; omit for the stock ImageNet model.")
@_option("labels", type=_PATH, default=None, help="Labels file [default: the labels stored in the model].")
@_option("architecture", default=DEFAULT_ARCHITECTURE, show_default=True, help="Backbone for the stock ImageNet model.")
@_option("model_dir", type=_PATH, default=None, help="Converted backbones [default: user cache dir/models].")
@_option("top_k", type=int, default=5, show_default=True)
@_option("input_layer", default=None, help="Input tensor name [default: from the model].")
@_option("output_layer", default=None, help="Output tensor name [default: from the model].")
@_option("input_height", type=int, default=None)
@_option("input_width", type=int, default=None)
@_option("input_mean", type=float, default=None)
@_option("input_std", type=float, default=None)
@_reports_user_errors
def label_image(image, graph, labels, architecture, model_dir, top_k, **feed):
    """Print the top predictions for one image, best first."""
    from retrain import paths, prediction

    if not Path(image).expanduser().is_file():
        raise UserError(f"--image {image}: no such file")
    if graph is None:
        model = prediction.stock_imagenet_model(architecture, model_dir or paths.default_model_dir())
    else:
        notes: list[str] = []
        model = prediction.load_model(graph, prediction.FeedOverrides(**feed), notes)
        for note in notes:
            _warn(note)
    label_list = prediction.read_labels(labels) if labels else None
    for result in prediction.classify(model, image, label_list, top_k):
        click.echo(f"{result.label} (score={result.score:.5f})")
