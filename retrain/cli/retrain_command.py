"""`retrain`: flags to configs, once; then the library's train()."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click

from retrain.api.config import (
    RECIPES,
    BackboneChoice,
    DataConfig,
    DecisionConfig,
    ExportConfig,
    FeatureConfig,
    MonitorConfig,
    PatientConfig,
    RetrainConfig,
    TestConfig,
    TFLiteConfig,
    with_recipe,
)
from retrain.cli.console import log, progress, reports_user_errors, warn
from retrain.cli.fields import Field, in_flags, register
from retrain.cli.options import PATH, option, switch, with_flags
from retrain.data.augmentation import CopyAugmentation, EpochAugmentation
from retrain.data.manifest import splits_given
from retrain.errors import UserError
from retrain.export.tflite_format import QUANTIZATIONS
from retrain.native_logs import import_tensorflow
from retrain.reporter import Reporter
from retrain.train.distribution import DISTRIBUTE
from retrain.patient.fusion import FUSIONS
from retrain.decisions.operating_points import parse_operating_point
from retrain.train.top_layer import (
    EARLY_STOPPING_METRICS,
    OPTIMIZERS,
    SCHEDULES,
    ClassWeights,
    TrainingConfig,
)
from retrain.train.fine_tuning import FineTuneConfig, parse_layers

# The distortions: fields of both the cached copies' and the per-epoch augmentation.
_DISTORTIONS = ("flip_left_right", "flip_up_down", "rotate90", "random_crop", "random_scale", "random_brightness")

# Each flag and the config field it sets.
_TABLE = (
    Field("image_dir", DataConfig, "image_dir"),
    Field("image_list", DataConfig, "image_list"),
    Field("output_graph", ExportConfig, "output_graph"),
    Field("output_labels", ExportConfig, "output_labels"),
    Field("saved_model_dir", ExportConfig, "saved_model_dir"),
    Field("bottleneck_dir", FeatureConfig, "bottleneck_dir"),
    Field("model_dir", BackboneChoice, "model_dir"),
    Field("architecture", BackboneChoice, "architecture"),
    Field("tfhub_module", BackboneChoice, "tfhub_module"),
    Field("image_size", BackboneChoice, "image_size"),
    Field("colour_constancy", BackboneChoice, "colour_constancy"),
    Field("list_architectures", "retrain", "list_architectures"),  # an action of the command, no library setting
    Field("how_many_training_steps", TrainingConfig, "steps"),
    Field("learning_rate", TrainingConfig, "learning_rate"),
    Field("train_batch_size", TrainingConfig, "train_batch_size"),
    Field("eval_step_interval", TrainingConfig, "eval_step_interval"),
    Field("validation_batch_size", TrainingConfig, "validation_batch_size"),
    Field("test_batch_size", TestConfig, "batch_size"),
    Field("testing_percentage", DataConfig, "testing_percentage"),
    Field("validation_percentage", DataConfig, "validation_percentage"),
    Field("validation_dir", DataConfig, "validation_dir"),
    Field("test_dir", DataConfig, "test_dir"),
    Field("keep_duplicates", DataConfig, "keep_duplicates"),
    Field("final_tensor_name", ExportConfig, "final_tensor_name"),
    Field("print_misclassified_test_images", TestConfig, "print_misclassified"),
    Field("random_seed", TrainingConfig, "random_seed"),
    Field("summaries_dir", MonitorConfig, "summaries_dir"),
    Field("tflite_output", TFLiteConfig, "output"),
    Field("tflite_quantization", TFLiteConfig, "quantization"),
    Field("tflite_representative_images", TFLiteConfig, "representative_images"),
    Field("class_weights", RetrainConfig, "class_weights"),
    Field("recipe", ExportConfig, "recipe"),
    Field("optimizer", TrainingConfig, "optimizer"),
    Field("learning_rate_schedule", TrainingConfig, "learning_rate_schedule"),
    Field("weight_decay", TrainingConfig, "weight_decay"),
    Field("dropout", TrainingConfig, "dropout"),
    Field("label_smoothing", TrainingConfig, "label_smoothing"),
    Field("early_stopping_patience", TrainingConfig, "early_stopping_patience"),
    Field("early_stopping_metric", TrainingConfig, "early_stopping_metric"),
    *(Field(name, CopyAugmentation, name) for name in _DISTORTIONS),
    *(Field(name, EpochAugmentation, name) for name in _DISTORTIONS),
    Field("distorted_copies", FeatureConfig, "distorted_copies"),
    Field("intermediate_output_graphs_dir", MonitorConfig, "intermediate_graphs_dir"),
    Field("intermediate_store_frequency", MonitorConfig, "intermediate_store_frequency"),
    Field("fine_tune_layers", FineTuneConfig, "layers"),
    Field("fine_tune_epochs", FineTuneConfig, "epochs"),
    Field("fine_tune_steps", FineTuneConfig, "steps"),
    Field("fine_tune_learning_rate", FineTuneConfig, "learning_rate"),
    Field("fine_tune_batch_size", FineTuneConfig, "batch_size"),
    Field("fine_tune_weight_decay", FineTuneConfig, "weight_decay"),
    Field("fine_tune_ema_decay", FineTuneConfig, "ema_decay"),
    Field("distribute", FineTuneConfig, "distribute"),
    Field("crop_area", EpochAugmentation, "crop_area"),
    Field("crop_aspect", EpochAugmentation, "crop_aspect"),
    Field("random_contrast", EpochAugmentation, "random_contrast"),
    Field("random_saturation", EpochAugmentation, "random_saturation"),
    Field("random_hue", EpochAugmentation, "random_hue"),
    Field("metadata", PatientConfig, "files"),
    Field("metadata_columns", PatientConfig, "columns"),
    Field("metadata_categorical", PatientConfig, "categorical"),
    Field("metadata_numeric", PatientConfig, "numeric"),
    Field("metadata_fusion", PatientConfig, "fusion"),
    Field("operating_point", DecisionConfig, "operating_points"),
)
FIELDS = register(*_TABLE)
# Flags that only fine-tuning reads.
_EPOCH_ONLY = tuple(f.flag for f in _TABLE if f.owner is EpochAugmentation and f.flag not in _DISTORTIONS)
_FINE_TUNE_ONLY = tuple(f.flag for f in _TABLE if f.owner is FineTuneConfig and f.name != "layers")

# Trees in, files out, the backbone.
_INPUT_AND_OUTPUT_FLAGS = (
    option(FIELDS["image_dir"], type=PATH,
        help="Folder with one subfolder of images per class.  [required, or --image_list]"),
    option(FIELDS["image_list"], type=PATH,
        help="Instead of --image_dir: a CSV with columns image (a path, from the CSV's folder unless absolute), "
             "label, and optionally split (train, validation or test; blank rows are split by the percentages, "
             "which then default to 0 for a set the column names)."),
    option(FIELDS["output_graph"], type=PATH, show_default=True, help="Frozen graph to write."),
    option(FIELDS["output_labels"], type=PATH, show_default=True, help="Labels file to write."),
    option(FIELDS["saved_model_dir"], type=PATH, help="Also export a SavedModel to this folder."),
    option(FIELDS["bottleneck_dir"], type=PATH, help="Bottleneck cache [default: user cache dir/bottlenecks]."),
    option(FIELDS["model_dir"], type=PATH, help="Converted/downloaded backbones [default: user cache dir/models]."),
    option(FIELDS["architecture"], show_default=True, help="Backbone name (any case); see --list_architectures."),
    option(FIELDS["tfhub_module"], help="TF Hub image feature-vector module: URL or local SavedModel folder (instead of --architecture)."),
    option(FIELDS["image_size"], type=int,
        help="Input size: for a --tfhub_module that accepts any size, or to run an EfficientNet-Lite backbone "
             "at another size than its own [default: the backbone's]."),
    option(FIELDS["colour_constancy"], is_flag=True,
        help="Shades of Gray colour constancy (Minkowski p = 6) inside the model, before the backbone's normalisation: "
             "each image's illuminant is divided out in training, caching, label_image, evaluate and every export."),
    option(FIELDS["list_architectures"], is_flag=True, help="Print the backbones, with whether each is available offline now, and exit."),
)

# tensorflow-for-poets' training flags.
_TOP_LAYER_FLAGS = (
    option(FIELDS["how_many_training_steps"], type=int, show_default=True),
    option(FIELDS["learning_rate"], type=float, show_default=True),
    option(FIELDS["train_batch_size"], type=int, show_default=True),
    option(FIELDS["eval_step_interval"], type=int, show_default=True),
    option(FIELDS["validation_batch_size"], type=int, show_default=True, help="-1 = whole validation set."),
)

# The validation and test sets, what is printed and exported.
_SET_AND_EXPORT_FLAGS = (
    option(FIELDS["test_batch_size"], type=int, show_default=True, help="-1 = whole test set."),
    option(FIELDS["testing_percentage"], type=float, show_default=True),
    option(FIELDS["validation_percentage"], type=float, show_default=True),
    option(FIELDS["validation_dir"], type=PATH,
        help="Class-per-folder tree (folders named like --image_dir's) used as the validation set; all of --image_dir "
             "then trains, unless --validation_percentage is also given: that share of --image_dir is added to it."),
    option(FIELDS["test_dir"], type=PATH,
        help="Class-per-folder tree (folders named like --image_dir's) used as the test set; all of --image_dir "
             "then trains, unless --testing_percentage is also given: that share of --image_dir is added to it."),
    option(FIELDS["keep_duplicates"], is_flag=True,
        help="Keep validation/test images that are copies of training images (same bytes, or the same picture "
             "resized or re-encoded), and test images that are validation images too; by default they are warned "
             "of and removed."),
    option(FIELDS["final_tensor_name"], show_default=True),
    option(FIELDS["print_misclassified_test_images"], is_flag=True),
    option(FIELDS["random_seed"], type=int, help="Make the run repeatable."),
    option(FIELDS["summaries_dir"], type=PATH, help="Write TensorBoard scalars under this folder."),
    option(FIELDS["tflite_output"], type=PATH, help="Also export a .tflite model (and FILE.json beside it) for phones."),
    option(FIELDS["tflite_quantization"], type=click.Choice(QUANTIZATIONS), show_default=True,
        help="none = float32; dynamic = int8 weights; float16 weights; int8 = full integer, uint8 in/out."),
    option(FIELDS["tflite_representative_images"], type=int, show_default=True,
        help="Training images that calibrate int8 and round EfficientNet-Lite weights for dynamic and int8 (0: no rounding for dynamic)."),
)

# The recipe and the top layer's optimisation.
_RECIPE_FLAGS = (
    option(FIELDS["class_weights"], help="Weight the loss: 'balanced', or 'label=weight,...' (for imbalanced classes)."),
    option(FIELDS["recipe"], type=click.Choice(sorted(RECIPES)), show_default=True,
        help="Preset options: poets = tensorflow-for-poets' recipe; strong = our best top layer on frozen features; "
             "finetune = train the whole backbone too, the best model (slow: ~20 min for 2000 images on 2 cores). "
             "Flags given explicitly win."),
    option(FIELDS["optimizer"], type=click.Choice(OPTIMIZERS), show_default=True),
    option(FIELDS["learning_rate_schedule"], type=click.Choice(SCHEDULES), show_default=True),
    option(FIELDS["weight_decay"], type=float, show_default=True, help="L2 penalty on the top layer's weights."),
    option(FIELDS["dropout"], type=float, show_default=True, help="Dropout rate on the bottleneck while training."),
    option(FIELDS["label_smoothing"], type=float, show_default=True),
    option(FIELDS["early_stopping_patience"], type=int, show_default=True,
        help="Stop after this many evaluations without improvement and keep the best step (0 = off)."),
    option(FIELDS["early_stopping_metric"], type=click.Choice(EARLY_STOPPING_METRICS), show_default=True,
        help="Whole-validation-set figure early stopping watches."),
)

# Random versions of training images (cached copies, or per epoch when fine-tuning).
_AUGMENTATION_FLAGS = (
    switch(FIELDS["flip_left_right"], "Randomly mirror training images left-right (cached copies, or every epoch when fine-tuning)."),
    switch(FIELDS["flip_up_down"], "Randomly mirror training images top-bottom."),
    switch(FIELDS["rotate90"], "Turn training images a random number of quarter turns."),
    option(FIELDS["random_crop"], type=int, show_default=True, help="% margin a random crop removes around the image."),
    option(FIELDS["random_scale"], type=int, show_default=True, help="Up to this % random zoom-in."),
    option(FIELDS["random_brightness"], type=int, show_default=True, help="Pixels multiplied by a random factor within +/- this %."),
    option(FIELDS["distorted_copies"], type=int,
        help="Distorted copies cached per training image [default: 5 when a distortion flag is given; none when fine-tuning]."),
)

# Intermediate graphs, then fine-tuning the backbone.
_FINE_TUNE_FLAGS = (
    option(FIELDS["intermediate_output_graphs_dir"], type=PATH, help="Save a frozen graph here every --intermediate_store_frequency steps."),
    option(FIELDS["intermediate_store_frequency"], type=int, show_default=True),
    option(FIELDS["fine_tune_layers"], type=str, show_default=True,
        help="Also train the backbone: 'all', or its last N blocks (EfficientNet-Lite: 1 = the head 1x1 conv, "
             "2 = it and the last MBConv block, ...; Keras backbones: N layers with weights; 0 = off)."),
    option(FIELDS["fine_tune_epochs"], type=int, show_default=True, help="Passes over the training images while fine-tuning."),
    option(FIELDS["fine_tune_steps"], type=int, help="Stop fine-tuning after this many batches in all [default: every epoch whole]."),
    option(FIELDS["fine_tune_learning_rate"], type=float, show_default=True, help="AdamW step size while fine-tuning (cosine decay to 0)."),
    option(FIELDS["fine_tune_batch_size"], type=int, show_default=True, help="Images per fine-tuning step (all replicas together)."),
    option(FIELDS["fine_tune_weight_decay"], type=float, show_default=True, help="AdamW's decoupled weight decay."),
    option(FIELDS["fine_tune_ema_decay"], type=float, show_default=True,
           help="Validate, keep and export a moving average of the weights with this decay per step (e.g. 0.99); 0 = off."),
    option(FIELDS["distribute"], type=click.Choice(DISTRIBUTE), show_default=True,
        help="Fine-tuning devices: auto = a GPU if TensorFlow sees one, else the CPU; mirrored = all local GPUs; "
             "multi_worker = several machines, from TF_CONFIG."),
    option(FIELDS["crop_area"], type=float, show_default=True,
        help="Fine-tuning: a random crop keeps this fraction to all of the image's area (1 = no crop)."),
    option(FIELDS["crop_aspect"], type=float, show_default=True,
        help="Fine-tuning: the crop's aspect ratio changes by up to this factor either way (1 = kept)."),
    option(FIELDS["random_contrast"], type=int, show_default=True, help="Fine-tuning: contrast times a random factor within +/- this %."),
    option(FIELDS["random_saturation"], type=int, show_default=True, help="Fine-tuning: saturation times a random factor within +/- this %."),
    option(FIELDS["random_hue"], type=float, show_default=True, help="Fine-tuning: hue turned by up to +/- this % of the colour wheel."),
)

# Patient metadata as a second model input.
_PATIENT_FLAGS = (
    option(FIELDS["metadata"], type=PATH, multiple=True,
        help="Patient metadata CSV: an image_id column (the image file name without extension) and any others "
             "(e.g. age_approximate, sex); the model then takes them as a second input. Repeat for several files "
             "(e.g. the training and the validation set's)."),
    option(FIELDS["metadata_columns"], default=None, help="Comma-separated columns of --metadata to use [default: all but image_id]."),
    option(FIELDS["metadata_categorical"], default=None, help="Columns to treat as categories even if they look numeric."),
    option(FIELDS["metadata_numeric"], default=None, help="Columns that must be numbers (a value that is not is an error)."),
    option(FIELDS["metadata_fusion"], type=click.Choice(FUSIONS), show_default=True,
        help="shift = a second stage lets the metadata move the image model's logits; concat = the top layer "
             "trained on image features and metadata side by side."),
)

# From scores to decisions.
_DECISION_FLAGS = (
    option(FIELDS["operating_point"], multiple=True,
        help="CLASS:sensitivity=S, CLASS:specificity=S or CLASS:threshold=T, S in (0, 1], T in (0, 1) (the class "
             "may be omitted for two classes when the other is called 'other'): the threshold above which CLASS is "
             "called, chosen on the validation set (or set by hand) and stored with the model. Repeatable. "
             "E.g. melanoma:sensitivity=0.95."),
)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@with_flags(_INPUT_AND_OUTPUT_FLAGS, _TOP_LAYER_FLAGS, _SET_AND_EXPORT_FLAGS, _RECIPE_FLAGS, _AUGMENTATION_FLAGS,
            _FINE_TUNE_FLAGS, _PATIENT_FLAGS, _DECISION_FLAGS)
@reports_user_errors
def retrain(**flags):
    """Retrain a new top layer on a pretrained backbone and export a frozen graph."""
    from retrain.api.training import train

    if flags.pop("list_architectures"):
        import_tensorflow()
        _print_architectures(flags["model_dir"])
        return
    if flags["image_dir"] is None and flags["image_list"] is None:
        raise click.UsageError("Missing option '--image_dir' (or '--image_list').", click.get_current_context())
    import_tensorflow()
    context = click.get_current_context()
    explicit = {name for name in flags if context.get_parameter_source(name) != click.core.ParameterSource.DEFAULT}
    train(retrain_config(flags, explicit), Reporter(log=log, warn=warn, progress=progress))


def retrain_config(flags: dict, explicit: set[str]) -> RetrainConfig:
    """The flags, once, as the configs of the stages, with the recipe's setting for each flag not
    given (checked in the order the flags were always checked)."""
    if not flags["metadata"]:
        given = [name for name in ("metadata_columns", "metadata_categorical", "metadata_numeric", "metadata_fusion")
                 if name in explicit]
        if given:
            raise UserError(f"--{given[0]} applies to patient metadata; add --metadata FILE.csv")
    fine_tuning = FineTuneConfig(layers=parse_layers(flags["fine_tune_layers"]),
                                 augmentation=EpochAugmentation(**_values(flags, EpochAugmentation)),
                                 **{name: value for name, value in _values(flags, FineTuneConfig).items() if name != "layers"})
    listed = splits_given(flags["image_list"]) if flags["image_list"] is not None else set()
    percentages = {name: 0.0 if (flags[directory] is not None or set_name in listed) and name not in explicit
                   else flags[name] for directory, set_name, name in (("validation_dir", "validation", "validation_percentage"),
                                                                      ("test_dir", "test", "testing_percentage"))}
    tflite = None if flags["tflite_output"] is None else TFLiteConfig(
        flags["tflite_output"], flags["tflite_quantization"], flags["tflite_representative_images"])
    config = RetrainConfig(
        data=DataConfig(flags["image_dir"], flags["validation_dir"], flags["test_dir"], **percentages,
                        keep_duplicates=flags["keep_duplicates"], image_list=flags["image_list"]),
        backbone=BackboneChoice(flags["architecture"], flags["tfhub_module"], flags["image_size"], flags["model_dir"],
                                flags["colour_constancy"]),
        features=FeatureConfig(flags["bottleneck_dir"], CopyAugmentation(**_values(flags, CopyAugmentation)),
                               flags["distorted_copies"]),
        top_layer=TrainingConfig(**_values(flags, TrainingConfig)),
        fine_tuning=fine_tuning,
        export=ExportConfig(flags["output_graph"], flags["output_labels"], flags["saved_model_dir"],
                            flags["final_tensor_name"], tflite),
    )
    given = {f.token for f in _TABLE if f.flag in explicit}  # a flag given on the command line wins over the recipe
    config = _augmentation_settled(with_recipe(config, flags["recipe"], keep=given), explicit)
    return dataclasses.replace(
        config,
        class_weights=_class_weights(flags["class_weights"]) if flags["class_weights"] else None,
        patient=_patient_config(flags) if flags["metadata"] else None,
        test=TestConfig(flags["test_batch_size"], flags["print_misclassified_test_images"]),
        monitor=MonitorConfig(flags["summaries_dir"], flags["intermediate_output_graphs_dir"],
                              flags["intermediate_store_frequency"]),
        decisions=DecisionConfig(tuple(parse_operating_point(text) for text in flags["operating_point"])),
    )


def _class_weights(spec: str) -> ClassWeights:
    """--class_weights: `balanced` or `label=weight,...`."""
    from retrain.data.dataset import label_for_folder

    if spec.strip().lower() == "balanced":
        return ClassWeights(balanced=True)
    given = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        label, sep, value = part.rpartition("=")
        label, weight = label_for_folder(label.strip()), None
        if sep:
            try:
                weight = float(value)
            except ValueError:
                raise UserError(f"--class_weights: {value!r} is not a number") from None
            if not weight > 0:
                raise UserError(f"--class_weights: weight of {label!r} must be positive")
        given.append((part, label, weight))
    return ClassWeights(given=tuple(given))


def _patient_config(flags: dict) -> PatientConfig:
    def names(text: str | None):
        return None if text is None else tuple(name.strip() for name in text.split(",") if name.strip())

    return PatientConfig(tuple(flags["metadata"]), names(flags["metadata_columns"]),
                         names(flags["metadata_categorical"]) or (), names(flags["metadata_numeric"]) or (),
                         flags["metadata_fusion"])


def _values(flags: dict, owner: type) -> dict:
    """The flags' values of the fields of `owner`, by field name."""
    return {f.name: flags[f.flag] for f in _TABLE if f.owner is owner}


def _augmentation_settled(config: RetrainConfig, explicit: set[str]) -> RetrainConfig:
    """After the recipe: the distortion flags drive fresh per-epoch augmentation when fine-tuning
    (cached copies only with an explicit --distorted_copies), else cached copies as in retrain.py."""
    epochs = config.fine_tuning.augmentation
    distortion = CopyAugmentation(**{name: getattr(epochs, name) for name in _DISTORTIONS})
    if not config.fine_tuning.active:
        given = [name for name in (*_EPOCH_ONLY, *_FINE_TUNE_ONLY) if name in explicit]
        if given:
            raise UserError(f"--{given[0]} applies to fine-tuning; add --fine_tune_layers all or --recipe finetune")
        return dataclasses.replace(config, features=dataclasses.replace(config.features, augmentation=distortion),
                                   fine_tuning=FineTuneConfig())
    cached = distortion if "distorted_copies" in explicit else CopyAugmentation()
    return dataclasses.replace(config, features=dataclasses.replace(config.features, augmentation=cached))


def _print_architectures(model_dir: Path | None) -> None:
    """The registry as a table; 'offline' means its weights are on this machine now."""
    from retrain import paths
    from retrain.backbones import architecture_table

    model_dir = Path(model_dir or paths.default_model_dir()).expanduser()
    header = ("name", "input", "features", "offline", "weights")
    rows = [
        (row.config.name, f"{row.config.input_size}", f"{row.config.feature_size}",
         "yes" if row.available_offline else "no", in_flags(row.config.weights))
        for row in architecture_table(model_dir)
    ]
    widths = [max(len(cells[i]) for cells in [header, *rows]) for i in range(len(header) - 1)]
    for cells in [header, *rows]:
        click.echo("  ".join([*(cell.ljust(width) for cell, width in zip(cells, widths)), cells[-1]]))
    click.echo(f"(--model_dir {model_dir}; --tfhub_module URL|DIR takes any TF Hub image feature-vector module)")
