"""What a `retrain` run is asked to do, one small frozen config per stage, and the recipes
that preset some of them. The command line builds them once from its flags; from Python,
build them directly, and apply a recipe by calling it:

    config = RetrainConfig(DataConfig(Path("~/lesions")), top_layer=TrainingConfig(steps=500))
    config = with_recipe(config, "strong", keep={"TrainingConfig.steps"})
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path

from retrain.backbones import DEFAULT_ARCHITECTURE
from retrain.data.augmentation import CopyAugmentation, EpochAugmentation
from retrain.errors import UserError
from retrain.train.fine_tuning import FineTuneConfig
from retrain.decisions.operating_points import OperatingPointSpec
from retrain.train.top_layer import ClassWeights, TrainingConfig


@dataclass(frozen=True)
class DataConfig:
    """Which images, and how they divide into training, validation and test sets: a class-per-folder
    tree (image_dir) or a CSV manifest of images and labels (image_list), exactly one."""

    image_dir: Path | None = None
    validation_dir: Path | None = None  # a class-per-folder tree added to the validation set
    test_dir: Path | None = None  # ... to the test set
    validation_percentage: float = 10.0  # of image_dir, by retrain.py's stable hash
    testing_percentage: float = 10.0
    keep_duplicates: bool = False  # keep held-out copies of training images, test copies of validation ones (warned)
    image_list: Path | None = None  # CSV: image, label, optional split (train/validation/test); see data.manifest


@dataclass(frozen=True)
class BackboneChoice:
    architecture: str = DEFAULT_ARCHITECTURE
    tfhub_module: str | None = None  # TF Hub URL or SavedModel folder; replaces architecture
    image_size: int | None = None  # None: the backbone's own input size
    model_dir: Path | None = None  # converted weights [default: the user cache]
    colour_constancy: bool = False  # Shades of Gray (p = 6) inside the model, before its normalisation


@dataclass(frozen=True)
class FeatureConfig:
    bottleneck_dir: Path | None = None  # [default: the user cache]
    augmentation: CopyAugmentation = field(default_factory=CopyAugmentation)  # of the cached distorted copies
    distorted_copies: int | None = None  # None: the default count when augmentation is active


@dataclass(frozen=True)
class PatientConfig:
    """Patient metadata as a second model input: the CSV files and how their columns are read."""

    files: tuple[Path, ...]
    columns: tuple[str, ...] | None = None  # None: every column but image_id
    categorical: tuple[str, ...] = ()
    numeric: tuple[str, ...] = ()
    fusion: str = "shift"  # see retrain.patient.fusion


@dataclass(frozen=True)
class TestConfig:
    batch_size: int = -1  # -1: the whole test set
    print_misclassified: bool = False


@dataclass(frozen=True)
class TFLiteConfig:
    output: Path
    quantization: str = "none"  # none, dynamic, float16 or int8
    representative_images: int = 100  # training images that calibrate int8 and prepare int8 weights


@dataclass(frozen=True)
class ExportConfig:
    output_graph: Path = Path("/tmp/output_graph.pb")
    output_labels: Path = Path("/tmp/output_labels.txt")
    saved_model_dir: Path | None = None
    final_tensor_name: str = "final_result"
    tflite: TFLiteConfig | None = None
    recipe: str = "poets"  # recorded in the model card; with_recipe sets it with the recipe's settings


@dataclass(frozen=True)
class MonitorConfig:
    """What the run writes while it trains."""

    summaries_dir: Path | None = None  # TensorBoard scalars
    intermediate_graphs_dir: Path | None = None
    intermediate_store_frequency: int = 0  # steps between intermediate graphs; 0: none


@dataclass(frozen=True)
class DecisionConfig:
    """What turns scores into decisions. A temperature and an out-of-distribution threshold are
    always fitted when there are validation images; operating points only when asked for."""

    operating_points: tuple[OperatingPointSpec, ...] = ()


@dataclass(frozen=True)
class RetrainConfig:
    data: DataConfig
    backbone: BackboneChoice = field(default_factory=BackboneChoice)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    top_layer: TrainingConfig = field(default_factory=TrainingConfig)
    class_weights: ClassWeights | None = None
    fine_tuning: FineTuneConfig = field(default_factory=FineTuneConfig)
    patient: PatientConfig | None = None
    test: TestConfig = field(default_factory=TestConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    decisions: DecisionConfig = field(default_factory=DecisionConfig)


# A recipe's settings: config class -> field -> value.
Settings = dict[type, dict[str, object]]

# `poets` is tensorflow-for-poets' recipe (the default, so old command lines behave as before);
# `strong` is the best top layer we measured on frozen features; `finetune` trains the whole
# backbone with fresh augmentation every epoch, our best model (docs/measurements.md has the
# figures and what each costs).
RECIPES: dict[str, Settings] = {
    "poets": {},
    "strong": {
        TrainingConfig: {"optimizer": "adam", "learning_rate": 0.001, "learning_rate_schedule": "cosine",
                         "weight_decay": 1e-3, "dropout": 0.5, "early_stopping_patience": 40,
                         "early_stopping_metric": "auc"},
    },
    "finetune": {
        # The top layer first, on cached bottlenecks ...
        TrainingConfig: {"optimizer": "adam", "learning_rate": 0.001, "steps": 300, "dropout": 0.3,
                         "label_smoothing": 0.1},
        # ... then every layer with it (at FineTuneConfig's epochs, step size, batch and weight decay),
        # on a fresh random version of each image every epoch.
        FineTuneConfig: {"layers": "all"},
        EpochAugmentation: {"crop_area": 0.5, "crop_aspect": 4 / 3, "flip_left_right": True, "flip_up_down": True,
                            "rotate90": True, "random_brightness": 15, "random_contrast": 20,
                            "random_saturation": 20, "random_hue": 3},
    },
}

# Settings of a recipe for one backbone only. EfficientNet-Lite0 fine-tunes at 256 px: on
# our held-out ISIC set that scored about 0.01 AUC above 224 px, for 1.3 times the time.
BACKBONE_SETTINGS: dict[tuple[str, str], Settings] = {
    ("finetune", "efficientnet_lite0"): {BackboneChoice: {"image_size": 256}},
}

# Where each config a recipe sets sits in a RetrainConfig.
_PLACES: dict[type, tuple[str, ...]] = {
    TrainingConfig: ("top_layer",),
    FineTuneConfig: ("fine_tuning",),
    EpochAugmentation: ("fine_tuning", "augmentation"),
    BackboneChoice: ("backbone",),
}


def recipe(name: str, keep: Collection[str] = ()) -> Callable[[RetrainConfig], RetrainConfig]:
    """The recipe `name` as a function of the config: it sets the recipe's fields, except
    those named in `keep` (as `TrainingConfig.steps`: the command line keeps the fields of
    the flags given), and records the recipe's name in the model card."""
    if name not in RECIPES:
        raise UserError(f"ExportConfig.recipe must be one of {', '.join(RECIPES)}, got {name!r}")

    def apply(config: RetrainConfig) -> RetrainConfig:
        settings = {owner: dict(values) for owner, values in RECIPES[name].items()}
        if not config.backbone.tfhub_module:
            architecture = str(config.backbone.architecture).strip().lower()
            for owner, values in BACKBONE_SETTINGS.get((name, architecture), {}).items():
                settings.setdefault(owner, {}).update(values)
        for owner, values in settings.items():
            kept = {key: value for key, value in values.items() if f"{owner.__name__}.{key}" not in keep}
            config = _replaced(config, _PLACES[owner], kept)
        return _replaced(config, ("export",), {"recipe": name})

    return apply


def with_recipe(config: RetrainConfig, name: str, keep: Collection[str] = ()) -> RetrainConfig:
    """`config` with the recipe `name` applied: `recipe(name, keep)(config)`."""
    return recipe(name, keep)(config)


def _replaced(config, place: tuple[str, ...], values: dict):
    """`config` with the fields of the config at `place` (a path of attributes) set to `values`."""
    if not place:
        return dataclasses.replace(config, **values)
    inner = getattr(config, place[0])
    return dataclasses.replace(config, **{place[0]: _replaced(inner, place[1:], values)})
