"""Command-line entry points. Thin: parse flags, call the library, print.

Flags keep tensorflow-for-poets' underscore spellings (`--image_dir=...`), and the
dashed spellings work too.
"""

from __future__ import annotations

import functools
import sys
import time
from pathlib import Path

import click

from retrain.backbones import DEFAULT_ARCHITECTURE
from retrain.errors import UserError
from retrain.native_logs import import_tensorflow
from retrain.train.distribution import DISTRIBUTE
from retrain.train.fusion import FUSIONS
from retrain.train.recipes import RECIPES, apply_recipe
from retrain.predict.tflite_model import QUANTIZATIONS
from retrain.train.top_layer import EARLY_STOPPING_METRICS, OPTIMIZERS, SCHEDULES, TrainingConfig

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
            click.echo("interrupted; everything already computed is kept (cached bottlenecks, finished fine-tuning "
                       "epochs): run the same command again to go on", err=True)
            sys.exit(130)

    return wrapper


def _switch(name: str, help: str):
    """An on/off flag, --name or --no_name (dashed spellings too), so a recipe's setting can be turned off."""
    dashed = name.replace("_", "-")
    spellings = [f"--{name}/--no_{name}"] + ([f"--{dashed}/--no-{dashed}"] if dashed != name else [])
    return click.option(*spellings, name, default=False, help=help)


def _echo(message: str, err: bool = False) -> None:
    """A line on stdout (or stderr); on a terminal through tqdm, which lifts a live progress
    bar out of its way."""
    if sys.stderr.isatty():
        from tqdm import tqdm

        tqdm.write(message, file=sys.stderr if err else sys.stdout)
    else:
        click.echo(message, err=err)


def _warn(message: str) -> None:
    _echo(f"warning: {message}", err=True)


def _log(message: str) -> None:
    _echo(message)


def _progress(total: int, label: str, unit: str = "images"):
    """Progress on stderr: a live tqdm bar (count, rate, ETA) on a terminal; otherwise a plain
    line at most every ten seconds and at the end, so logs stay readable. The returned function
    takes how many more are done; the bar closes when the total is reached."""
    if sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=total, desc=label, unit=unit[:-1] if unit.endswith("s") else unit, file=sys.stderr,
                   dynamic_ncols=True)

        def update_bar(count: int) -> None:
            bar.update(count)
            if bar.n >= total:
                bar.close()

        return update_bar

    start = time.monotonic()
    state = {"done": 0, "shown": start}

    def update(count: int) -> None:
        state["done"] += count
        now = time.monotonic()
        if now - state["shown"] >= 10 or state["done"] >= total:
            state["shown"] = now
            rate = state["done"] / max(now - start, 1e-9)
            left = (total - state["done"]) / max(rate, 1e-9)
            eta = f", {left // 60:.0f} min {left % 60:02.0f} s left" if state["done"] < total else ""
            click.echo(f"{label}: {state['done']}/{total} ({rate:.1f} {unit}/s{eta})", err=True)

    return update


_PATH = click.Path(path_type=Path)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@_option("image_dir", type=_PATH, default=None, help="Folder with one subfolder of images per class.  [required]")
@_option("output_graph", type=_PATH, default=Path("/tmp/output_graph.pb"), show_default=True, help="Frozen graph to write.")
@_option("output_labels", type=_PATH, default=Path("/tmp/output_labels.txt"), show_default=True, help="Labels file to write.")
@_option("saved_model_dir", type=_PATH, default=None, help="Also export a SavedModel to this folder.")
@_option("bottleneck_dir", type=_PATH, default=None, help="Bottleneck cache [default: user cache dir/bottlenecks].")
@_option("model_dir", type=_PATH, default=None, help="Converted/downloaded backbones [default: user cache dir/models].")
@_option("architecture", default=DEFAULT_ARCHITECTURE, show_default=True, help="Backbone name (any case); see --list_architectures.")
@_option("tfhub_module", default=None, help="TF Hub image feature-vector module: URL or local SavedModel folder (instead of --architecture).")
@_option("image_size", type=int, default=None,
         help="Input size: for a --tfhub_module that accepts any size, or to run an EfficientNet-Lite backbone "
              "at another size than its own [default: the backbone's].")
@_option("list_architectures", is_flag=True, help="Print the backbones, with whether each is available offline now, and exit.")
@_option("how_many_training_steps", type=int, default=4000, show_default=True)
@_option("learning_rate", type=float, default=0.01, show_default=True)
@_option("train_batch_size", type=int, default=100, show_default=True)
@_option("eval_step_interval", type=int, default=10, show_default=True)
@_option("validation_batch_size", type=int, default=100, show_default=True, help="-1 = whole validation set.")
@_option("test_batch_size", type=int, default=-1, show_default=True, help="-1 = whole test set.")
@_option("testing_percentage", type=float, default=10.0, show_default=True)
@_option("validation_percentage", type=float, default=10.0, show_default=True)
@_option("validation_dir", type=_PATH, default=None,
         help="Class-per-folder tree (folders named like --image_dir's) used as the validation set; all of --image_dir "
              "then trains, unless --validation_percentage is also given: that share of --image_dir is added to it.")
@_option("test_dir", type=_PATH, default=None,
         help="Class-per-folder tree (folders named like --image_dir's) used as the test set; all of --image_dir "
              "then trains, unless --testing_percentage is also given: that share of --image_dir is added to it.")
@_option("final_tensor_name", default="final_result", show_default=True)
@_option("print_misclassified_test_images", is_flag=True)
@_option("random_seed", type=int, default=None, help="Make the run repeatable.")
@_option("summaries_dir", type=_PATH, default=None, help="Write TensorBoard scalars under this folder.")
@_option("tflite_output", type=_PATH, default=None, help="Also export a .tflite model (and FILE.json beside it) for phones.")
@_option("tflite_quantization", type=click.Choice(QUANTIZATIONS), default="none", show_default=True,
         help="none = float32; dynamic = int8 weights; float16 weights; int8 = full integer, uint8 in/out.")
@_option("tflite_representative_images", type=int, default=100, show_default=True,
         help="Training images that calibrate int8 and round EfficientNet-Lite weights for dynamic and int8 (0: no rounding for dynamic).")
@_option("class_weights", default=None, help="Weight the loss: 'balanced', or 'label=weight,...' (for imbalanced classes).")
@_option("recipe", type=click.Choice(sorted(RECIPES)), default="poets", show_default=True,
         help="Preset options: poets = tensorflow-for-poets' recipe; strong = our best top layer on frozen features; "
              "finetune = train the whole backbone too, the best model (slow: ~20 min for 2000 images on 2 cores). "
              "Flags given explicitly win.")
@_option("optimizer", type=click.Choice(OPTIMIZERS), default="sgd", show_default=True)
@_option("learning_rate_schedule", type=click.Choice(SCHEDULES), default="constant", show_default=True)
@_option("weight_decay", type=float, default=0.0, show_default=True, help="L2 penalty on the top layer's weights.")
@_option("dropout", type=float, default=0.0, show_default=True, help="Dropout rate on the bottleneck while training.")
@_option("label_smoothing", type=float, default=0.0, show_default=True)
@_option("early_stopping_patience", type=int, default=0, show_default=True,
         help="Stop after this many evaluations without improvement and keep the best step (0 = off).")
@_option("early_stopping_metric", type=click.Choice(EARLY_STOPPING_METRICS), default="auc", show_default=True,
         help="Whole-validation-set figure early stopping watches.")
@_switch("flip_left_right", "Randomly mirror training images left-right (cached copies, or every epoch when fine-tuning).")
@_switch("flip_up_down", "Randomly mirror training images top-bottom.")
@_switch("rotate90", "Turn training images a random number of quarter turns.")
@_option("random_crop", type=int, default=0, show_default=True, help="% margin a random crop removes around the image.")
@_option("random_scale", type=int, default=0, show_default=True, help="Up to this % random zoom-in.")
@_option("random_brightness", type=int, default=0, show_default=True, help="Pixels multiplied by a random factor within +/- this %.")
@_option("distorted_copies", type=int, default=None,
         help="Distorted copies cached per training image [default: 5 when a distortion flag is given; none when fine-tuning].")
@_option("intermediate_output_graphs_dir", type=_PATH, default=None, help="Save a frozen graph here every --intermediate_store_frequency steps.")
@_option("intermediate_store_frequency", type=int, default=0, show_default=True)
@_option("fine_tune_layers", default="0", show_default=True,
         help="Also train the backbone: 'all', or its last N blocks (EfficientNet-Lite: 1 = the head 1x1 conv, "
              "2 = it and the last MBConv block, ...; Keras backbones: N layers with weights; 0 = off).")
@_option("fine_tune_epochs", type=int, default=12, show_default=True, help="Passes over the training images while fine-tuning.")
@_option("fine_tune_steps", type=int, default=None, help="Stop fine-tuning after this many batches in all [default: every epoch whole].")
@_option("fine_tune_learning_rate", type=float, default=5e-5, show_default=True, help="AdamW step size while fine-tuning (cosine decay to 0).")
@_option("fine_tune_batch_size", type=int, default=32, show_default=True, help="Images per fine-tuning step (all replicas together).")
@_option("fine_tune_weight_decay", type=float, default=1e-4, show_default=True, help="AdamW's decoupled weight decay.")
@_option("distribute", type=click.Choice(DISTRIBUTE), default="auto", show_default=True,
         help="Fine-tuning devices: auto = a GPU if TensorFlow sees one, else the CPU; mirrored = all local GPUs; "
              "multi_worker = several machines, from TF_CONFIG.")
@_option("crop_area", type=float, default=1.0, show_default=True,
         help="Fine-tuning: a random crop keeps this fraction to all of the image's area (1 = no crop).")
@_option("crop_aspect", type=float, default=1.0, show_default=True,
         help="Fine-tuning: the crop's aspect ratio changes by up to this factor either way (1 = kept).")
@_option("random_contrast", type=int, default=0, show_default=True, help="Fine-tuning: contrast times a random factor within +/- this %.")
@_option("random_saturation", type=int, default=0, show_default=True, help="Fine-tuning: saturation times a random factor within +/- this %.")
@_option("random_hue", type=float, default=0.0, show_default=True, help="Fine-tuning: hue turned by up to +/- this % of the colour wheel.")
@_option("metadata", type=_PATH, multiple=True,
         help="Patient metadata CSV: an image_id column (the image file name without extension) and any others "
              "(e.g. age_approximate, sex); the model then takes them as a second input. Repeat for several files "
              "(e.g. the training and the validation set's).")
@_option("metadata_columns", default=None, help="Comma-separated columns of --metadata to use [default: all but image_id].")
@_option("metadata_categorical", default=None, help="Columns to treat as categories even if they look numeric.")
@_option("metadata_numeric", default=None, help="Columns that must be numbers (a value that is not is an error).")
@_option("metadata_fusion", type=click.Choice(FUSIONS), default="shift", show_default=True,
         help="shift = a second stage lets the metadata move the image model's logits; concat = the top layer "
              "trained on image features and metadata side by side.")
@_reports_user_errors
def retrain(**flags):
    """Retrain a new top layer on a pretrained backbone and export a frozen graph."""
    from retrain.api.train import RetrainOptions, run_retrain

    if flags.pop("list_architectures"):
        import_tensorflow()
        _print_architectures(flags["model_dir"])
        return
    if flags["image_dir"] is None:
        raise click.UsageError("Missing option '--image_dir'.", click.get_current_context())
    import_tensorflow()
    context = click.get_current_context()
    explicit = {name for name in flags if context.get_parameter_source(name) != click.core.ParameterSource.DEFAULT}
    flags = apply_recipe(flags["recipe"], flags, explicit)
    if not flags["metadata"]:
        given = [name for name in ("metadata_columns", "metadata_categorical", "metadata_numeric", "metadata_fusion")
                 if name in explicit]
        if given:
            raise UserError(f"--{given[0]} applies to patient metadata; add --metadata FILE.csv")
    flags["training"] = TrainingConfig(**{field: flags.pop(flag) for flag, field in _TRAINING_FLAGS.items()})
    flags["distortion"], flags["fine_tuning"] = _augmentation_and_fine_tuning(flags, explicit)
    for directory, percentage in (("validation_dir", "validation_percentage"), ("test_dir", "testing_percentage")):
        if flags[directory] is not None and context.get_parameter_source(percentage) == click.core.ParameterSource.DEFAULT:
            flags[percentage] = 0.0  # the held-out tree replaces the hash split of --image_dir
    run_retrain(RetrainOptions(**flags), log=_log, warn=_warn, progress_factory=_progress)


_DISTORTION_FLAGS = ("flip_left_right", "flip_up_down", "rotate90", "random_crop", "random_scale", "random_brightness")
_EPOCH_ONLY_FLAGS = ("crop_area", "crop_aspect", "random_contrast", "random_saturation", "random_hue")
# retrain flag -> FineTuneConfig field
_FINE_TUNE_FLAGS = {
    "fine_tune_epochs": "epochs",
    "fine_tune_steps": "steps",
    "fine_tune_learning_rate": "learning_rate",
    "fine_tune_batch_size": "batch_size",
    "fine_tune_weight_decay": "weight_decay",
    "distribute": "distribute",
}


def _augmentation_and_fine_tuning(flags: dict, explicit: set[str]):
    """The distortion flags drive fresh per-epoch augmentation when fine-tuning (cached copies
    only with an explicit --distorted_copies), else cached copies as in retrain.py."""
    from retrain.data.augmentation import Distortion, EpochAugmentation
    from retrain.train.fine_tuning import FineTuneConfig, parse_layers

    layers = parse_layers(flags.pop("fine_tune_layers"))
    distortion = {name: flags.pop(name) for name in _DISTORTION_FLAGS}
    epoch_only = {name: flags.pop(name) for name in _EPOCH_ONLY_FLAGS}
    fine_tuning = {field: flags.pop(flag) for flag, field in _FINE_TUNE_FLAGS.items()}
    if not layers:
        given = [name for name in (*_EPOCH_ONLY_FLAGS, *_FINE_TUNE_FLAGS) if name in explicit]
        if given:
            raise UserError(f"--{given[0]} applies to fine-tuning; add --fine_tune_layers all or --recipe finetune")
        return Distortion(**distortion), FineTuneConfig()
    augmentation = EpochAugmentation(**distortion, **epoch_only)
    cached = Distortion(**distortion) if "distorted_copies" in explicit else Distortion()
    return cached, FineTuneConfig(layers=layers, augmentation=augmentation, **fine_tuning)

# retrain flag -> TrainingConfig field
_TRAINING_FLAGS = {
    "how_many_training_steps": "steps",
    "learning_rate": "learning_rate",
    "train_batch_size": "train_batch_size",
    "eval_step_interval": "eval_step_interval",
    "validation_batch_size": "validation_batch_size",
    "random_seed": "random_seed",
    "optimizer": "optimizer",
    "learning_rate_schedule": "learning_rate_schedule",
    "weight_decay": "weight_decay",
    "dropout": "dropout",
    "label_smoothing": "label_smoothing",
    "early_stopping_patience": "early_stopping_patience",
    "early_stopping_metric": "early_stopping_metric",
}


def _print_architectures(model_dir: Path | None) -> None:
    """The registry as a table; 'offline' means its weights are on this machine now."""
    from retrain import paths
    from retrain.backbones import architecture_table

    model_dir = Path(model_dir or paths.default_model_dir()).expanduser()
    header = ("name", "input", "features", "offline", "weights")
    rows = [
        (row.config.name, f"{row.config.input_size}", f"{row.config.feature_size}",
         "yes" if row.available_offline else "no", row.config.weights)
        for row in architecture_table(model_dir)
    ]
    widths = [max(len(cells[i]) for cells in [header, *rows]) for i in range(len(header) - 1)]
    for cells in [header, *rows]:
        click.echo("  ".join([*(cell.ljust(width) for cell, width in zip(cells, widths)), cells[-1]]))
    click.echo(f"(--model_dir {model_dir}; --tfhub_module URL|DIR takes any TF Hub image feature-vector module)")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@_option("image", type=_PATH, required=True, help="Image to classify (.jpg, .jpeg, .png).")
@_option("graph", type=_PATH, default=None,
         help="Frozen .pb, SavedModel folder or .tflite (run without TensorFlow); omit for the stock ImageNet model.")
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
@_option("tta", is_flag=True, help="Test-time augmentation: average the probabilities over the four flips.")
@_option("heatmap", type=_PATH, default=None,
         help="Write the image as PNG with a heatmap over it: where the evidence for the top class (or "
              "--heatmap_class) lies. Needs a .pb or SavedModel from retrain, or the stock model.")
@_option("heatmap_class", default=None, help="Label whose heatmap --heatmap draws [default: the top class].")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object: labels with scores best first, model, input size; with --heatmap, "
                   "the map as a grid of numbers in [0, 1] at the network's own resolution.")
@_option("metadata", default=None,
         help="The patient's metadata, for a model trained with --metadata: \"age_approximate=55,sex=female\" "
              "(columns left out count as missing).")
@_reports_user_errors
def label_image(image, graph, labels, architecture, model_dir, top_k, tta, heatmap, heatmap_class, as_json, metadata,
                **feed):
    """Print the top predictions for one image, best first."""
    import json

    from retrain.predict import heatmaps

    from retrain import paths

    from retrain.predict import prediction
    from retrain.predict.tflite_model import is_tflite_file

    if heatmap_class is not None and heatmap is None:
        raise UserError("--heatmap_class needs --heatmap FILE.png to draw it to")
    if not Path(image).expanduser().is_file():
        raise UserError(f"--image {image}: no such file")
    if graph is None or not is_tflite_file(Path(graph).expanduser()):
        import_tensorflow()
    if graph is None:
        model = prediction.stock_imagenet_model(architecture, model_dir or paths.default_model_dir())
    else:
        notes: list[str] = []
        model = prediction.load_model(graph, prediction.FeedOverrides(**feed), notes)
        for note in notes:
            _warn(note)
    if tta:
        model = prediction.with_flip_tta(model)
    label_list = prediction.model_labels(model, prediction.read_labels(labels) if labels else None)
    row = prediction.image_metadata(model, metadata, _warn)
    pixels = prediction.load_image_for(model, image)
    results = prediction.classify_pixels(model, pixels, label_list, top_k, row)
    drawn, heatmap_error = None, None
    if heatmap is not None:
        try:
            drawn = heatmaps.heatmaps_for(model, pixels[None], label_list, heatmap_class,
                                          None if row is None else row[None])[0]
            heatmaps.write_heatmap(heatmap, image, drawn)
        except UserError as e:
            drawn, heatmap_error = None, str(e)
    if as_json:
        click.echo(json.dumps(prediction.prediction_json(model, image, results, drawn, heatmap, heatmap_error)))
    else:
        for result in results:
            click.echo(f"{result.label} (score={result.score:.5f})")
    if heatmap_error is not None:
        raise UserError(f"{heatmap_error} (the prediction above is complete; only the heatmap failed)")
    if drawn is not None:
        click.echo(f"Wrote the heatmap of {drawn.label} to {heatmap}", err=as_json)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@_option("images", type=_PATH, required=True, help="Folder of ISIC_<id>.jpg images (the challenge's *_Data folder).")
@_option("ground_truth", type=_PATH, required=True, help="CSV image_id,melanoma,seborrheic_keratosis.")
@_option("metadata", type=_PATH, default=None,
         help="Optional CSV image_id,age_approximate,sex: checked, and the retrain flag that uses it is printed.")
@_option("output", type=_PATH, required=True, help="Where to write the class-per-folder trees.")
@_reports_user_errors
def prepare_isic(images, ground_truth, metadata, output):
    """Arrange ISIC 2017 Part 3 images into class folders for both binary tasks and the three-class task."""
    from retrain.data.isic import prepare_isic as prepare

    result = prepare(images, ground_truth, output, metadata)
    for task, counts in result.counts.items():
        summary = ", ".join(f"{label} {count}" for label, count in sorted(counts.items()))
        click.echo(f"{Path(output) / task}: {summary}")
    click.echo("Images placed as " + ", ".join(f"{how} ({n})" for how, n in result.methods.items()) + "; originals untouched")
    if result.sexes is not None:
        click.echo("Metadata checked: " + ", ".join(f"{sex} {n}" for sex, n in sorted(result.sexes.items())))
        click.echo(f"To use age and sex in the model, pass --metadata {metadata} to retrain (and to evaluate), "
                   "and --metadata \"age_approximate=..,sex=..\" to label_image")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@_option("graph", type=_PATH, required=True, multiple=True,
         help="Frozen .pb or SavedModel folder; repeat for several models (e.g. the two ISIC task models).")
@_option("labels", type=_PATH, multiple=True, help="Labels file per --graph [default: the labels stored in the model].")
@_option("image_dir", type=_PATH, required=True, help="Class-per-folder tree (or a folder of unlabelled images).")
@click.option("--json", "json_path", type=_PATH, default=None, help="Write the metrics as JSON.")
@_option("plot", type=_PATH, default=None, help="Draw ROC curves to this PNG.")
@_option("report", type=_PATH, default=None,
         help="Write one self-contained HTML page (opens offline): the figures, ROC curves, confusion matrix, "
              "calibration, operating points, and the mistakes with their heatmaps.")
@_option("predictions", type=_PATH, default=None, help="Write per-image probabilities as CSV.")
@_option("isic_submission", is_flag=True, help="Write --predictions in the ISIC 2017 submission format.")
@_option("tta", is_flag=True, help="Test-time augmentation: average the probabilities over the four flips.")
@_option("metadata", type=_PATH, multiple=True,
         help="Patient metadata CSV (image_id + columns), for models trained with --metadata; rows matched by image "
              "id. Repeat for several files.")
@_reports_user_errors
def evaluate(graph, labels, image_dir, json_path, plot, report, predictions, isic_submission, tta, metadata):
    """Measure exported models on a labelled image tree: accuracy, AUC, confusion matrix and more."""
    from retrain.evaluate import evaluation
    from retrain.predict import prediction
    from retrain.evaluate import report as html_report
    from retrain.metrics import format_report
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
            _warn(f"--metadata ignored for {graph_path}: the model takes no patient metadata")
        predicted, result = evaluation.evaluate_model(model, label_list, image_dir, _progress, table, _log, _warn)
        for failure in predicted.failures:
            _warn(f"skipped {failure.path}: {failure.reason}")
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
        _warn(f"--report {report}: not written: the images have no class folders, so there is nothing to measure")
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
        _warn("no class folders, so nothing to measure; pass --predictions to save the predictions")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@_option("saved_model_dir", type=_PATH, required=True, help="SavedModel written by retrain --saved_model_dir.")
@_option("output", type=_PATH, required=True, help="The .tflite file to write (and OUTPUT.json beside it).")
@_option("quantization", type=click.Choice(QUANTIZATIONS), default="none", show_default=True,
         help="none = float32; dynamic = int8 weights; float16 weights; int8 = full integer, uint8 in/out.")
@_option("image_dir", type=_PATH, default=None,
         help="The training tree: its training split calibrates int8 and rounds int8 weights, its held-back split measures parity.")
@_option("representative_images", type=int, default=100, show_default=True,
         help="Training images that calibrate int8 and round EfficientNet-Lite weights for dynamic and int8 (0: no rounding for dynamic).")
@_option("validation_percentage", type=float, default=10.0, show_default=True, help="As given to retrain.")
@_option("testing_percentage", type=float, default=10.0, show_default=True, help="As given to retrain.")
@_option("reference_graph", type=_PATH, default=None, help="Model to measure parity against [default: the SavedModel].")
@_option("random_seed", type=int, default=None, help="Seed of the calibration sample, as given to retrain.")
@_reports_user_errors
def export_tflite(saved_model_dir, output, quantization, image_dir, representative_images, validation_percentage,
                  testing_percentage, reference_graph, random_seed):
    """Convert a SavedModel written by retrain to .tflite and print its parity with the original."""
    import_tensorflow()
    from retrain.export.graph import tflite as tflite_export

    if quantization == "int8" and image_dir is None:
        raise UserError("--quantization int8 needs --image_dir: its training images calibrate the model")
    training, held_back = [], []
    if image_dir is not None:
        training, held_back = tflite_export.training_and_held_back(image_dir, validation_percentage, testing_percentage)
    representative = []
    if quantization == "int8" or (quantization == "dynamic" and image_dir is not None and representative_images > 0):
        representative = tflite_export.representative_sample(training, representative_images, random_seed or 0)
    export = tflite_export.export_tflite(saved_model_dir, output, quantization, representative, log=click.echo, warn=_warn)
    click.echo(f"Wrote {export.path} ({tflite_export.describe_export(export)}) and {export.sidecar}")
    if image_dir is None:
        _warn("no --image_dir, so parity with the SavedModel was not measured")
    else:
        tflite_export.report_parity(export, reference_graph or saved_model_dir, held_back, click.echo, _warn)
