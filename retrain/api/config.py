"""What a `retrain` run is asked to do, one small frozen config per stage. The command line
builds them once from its flags; from Python, build them directly:

    RetrainConfig(DataConfig(Path("~/lesions")), top_layer=TrainingConfig(steps=500))
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from retrain.backbones import DEFAULT_ARCHITECTURE
from retrain.data.augmentation import CopyAugmentation
from retrain.train.fine_tuning import FineTuneConfig
from retrain.decisions.operating_points import OperatingPointSpec
from retrain.train.top_layer import ClassWeights, TrainingConfig


@dataclass(frozen=True)
class DataConfig:
    """Which images, and how they divide into training, validation and test sets."""

    image_dir: Path
    validation_dir: Path | None = None  # a class-per-folder tree added to the validation set
    test_dir: Path | None = None  # ... to the test set
    validation_percentage: float = 10.0  # of image_dir, by retrain.py's stable hash
    testing_percentage: float = 10.0
    keep_duplicates: bool = False  # keep held-out copies of training images, test copies of validation ones (warned)


@dataclass(frozen=True)
class BackboneChoice:
    architecture: str = DEFAULT_ARCHITECTURE
    tfhub_module: str | None = None  # TF Hub URL or SavedModel folder; replaces architecture
    image_size: int | None = None  # None: the backbone's own input size
    model_dir: Path | None = None  # converted weights [default: the user cache]


@dataclass(frozen=True)
class FeatureConfig:
    bottleneck_dir: Path | None = None  # [default: the user cache]
    augmentation: CopyAugmentation = field(default_factory=CopyAugmentation)  # of the cached distorted copies
    distorted_copies: int | None = None  # None: the default count when augmentation is active


@dataclass(frozen=True)
class PatientConfig:
    """Patient metadata as a second model input (--metadata and its companions)."""

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
    recipe: str = "poets"  # recorded in the model card


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
