"""retrain from Python: one call per command, the same the command line makes.

    from pathlib import Path
    from retrain.api import DataConfig, RetrainConfig, train

    result = train(RetrainConfig(DataConfig(Path("~/lesions").expanduser())))
    print(result.labels, result.test_accuracy, result.files.graph)
    print(classify(Path("mole.jpg"), graph=result.files.graph).predictions[0])
    print(evaluate([result.files.graph], Path("~/held_out").expanduser()).metrics)

A user's mistake raises `UserError`, whose message is the line the command prints.
"""

from retrain.api.classification import Classification, classify
from retrain.api.config import (
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
)
from retrain.api.evaluation import Evaluation, evaluate
from retrain.api.operating_point import OperatingPointUpdate, set_operating_point
from retrain.api.training import RetrainResult, train
from retrain.data.augmentation import CopyAugmentation, EpochAugmentation
from retrain.errors import UserError
from retrain.reporter import Reporter
from retrain.train.fine_tuning import FineTuneConfig
from retrain.train.top_layer import ClassWeights, TrainingConfig

__all__ = [
    "BackboneChoice", "ClassWeights", "CopyAugmentation", "DataConfig", "DecisionConfig", "EpochAugmentation", "ExportConfig",
    "FeatureConfig", "FineTuneConfig", "MonitorConfig", "PatientConfig", "Reporter", "RetrainConfig", "RetrainResult",
    "TFLiteConfig", "TestConfig", "TrainingConfig", "UserError", "train", "Classification", "classify", "Evaluation",
    "evaluate", "OperatingPointUpdate", "set_operating_point",
]
